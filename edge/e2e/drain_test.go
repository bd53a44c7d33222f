package e2e

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/proctest"
)

// A drained origin whose only stream moves away (a forwarded publish)
// exits as soon as the move is done, even when players of that stream sit
// behind a cut link (an RTMP and an HTTP-FLV player whose connections
// stall: the origin's writes to them block) and idle connections are open
// (an RTMP connect that never publishes, bare TCP on each port): none of
// them has anything left to receive there. Before, the drain waited for
// those players until its drainTimeout (15 s here), since a write blocked
// on a dead peer ends only at its 30 s deadline.
func TestDrainLetsGoOfPlayersOfMovedStreams(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	o0 := c.startOrigin("origin-0")
	o1 := c.startOrigin("origin-1")
	origins := map[string]*node{o0.id: o0, o1.id: o1}
	ePub := c.startEdge("edge-pub")
	ePlay := c.startEdge("edge-play")
	// A 12 Mb/s stream, so that a cut player's buffers fill within seconds.
	flv := filepath.Join(c.dir, "noisy.flv")
	if out, err := exec.Command(c.ffmpeg, "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine", "-t", "6",
		"-vf", "noise=alls=40:allf=t+u", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "32", "-g", "30",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-f", "flv", flv).CombinedOutput(); err != nil {
		t.Fatalf("make the test stream: %v\n%s", err, out)
	}
	pub := proctest.Start(t, "ffmpeg-pub", c.ffmpeg, "-nostdin", "-v", "error", "-re", "-stream_loop", "-1",
		"-i", flv, "-c", "copy", "-f", "flv", "rtmp://"+ePub.rtmp+"/live/dr")
	resp := c.waitOwner("dr", "", 15*time.Second)
	owner := origins[resp.GetStream().GetOwnerNodeId()]
	other := o0
	if owner == o0 {
		other = o1
	}

	// Players straight on the owner, through links the test cuts.
	rtmpLink := startCutProxy(t, "127.0.0.1:0", owner.rtmp)
	httpLink := startCutProxy(t, "127.0.0.1:0", owner.http)
	var cut []*player
	for _, u := range []string{"rtmp://" + rtmpLink.addr() + "/live/dr", "http://" + httpLink.addr() + "/live/dr.flv"} {
		var p *player
		waitFor(t, "player "+u, 10*time.Second, func() bool {
			var err error
			p, err = startPlayer(u)
			return err == nil
		})
		t.Cleanup(p.stop)
		cut = append(cut, p)
	}
	// Players through an edge (its pull is a player of the owner).
	edgePlayer, err := startPlayer("rtmp://" + ePlay.rtmp + "/live/dr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(edgePlayer.stop)
	// Idle connections: an RTMP connect that never publishes, bare TCP.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	idle, err := rtmp.Dial(ctx, "rtmp://"+owner.rtmp+"/live/idle", rtmp.Config{})
	if err != nil {
		t.Fatalf("idle rtmp connect: %v", err)
	}
	t.Cleanup(func() { idle.Close() })
	for _, a := range []string{owner.rtmp, owner.http} {
		nc, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
	}
	flowsAfter(t, cut, counts(cut), 70, 5*time.Second)

	if n := rtmpLink.freeze() + httpLink.freeze(); n < 2 {
		t.Fatalf("froze %d connections, want at least 2", n)
	}
	// Let the owner's writes to the cut players fill the buffers and block.
	time.Sleep(3 * time.Second)

	t0 := time.Now()
	owner.Signal(syscall.SIGTERM)
	c.waitOwner("dr", other.id, 15*time.Second)
	moved := time.Since(t0)
	code := owner.Wait(30 * time.Second)
	took := time.Since(t0)
	t.Logf("stream moved %v after SIGTERM; drained origin exited %d after %v", moved, code, took)
	if code != 0 {
		t.Errorf("drained origin exited %d", code)
	}
	if l := logLines(owner.Proc, "drain timeout: closing the remaining clients"); len(l) > 0 {
		t.Errorf("the drain ran to its timeout; left: %v", l[0]["left"])
	}
	// startWait 300 ms, the move, a final hook: a few seconds at most,
	// far below the 15 s drainTimeout.
	if took > 5*time.Second {
		t.Errorf("drained origin took %v to exit, want < 5s (nothing was left to hand over)", took)
	}
	if pub.Exited() {
		t.Fatalf("publisher disconnected by the move:\n%s", pub.Output())
	}
	// The edge's players went on with the new owner.
	flowsAfter(t, []*player{edgePlayer}, counts([]*player{edgePlayer}), 140, 10*time.Second)
}
