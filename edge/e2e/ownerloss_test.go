package e2e

import (
	"syscall"
	"testing"
	"time"
)

// When the owner origin dies, the edge holds the players of its streams
// (RTMP and HTTP-FLV, silent and connected) for edge.ownerLossHold, so a
// publisher that comes back on another origin 8 s later is spliced under
// them; an edge whose hold is shorter than the outage closes its players
// at the hold.
func TestOwnerLossHold(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	o0 := c.startOrigin("origin-0")
	o1 := c.startOrigin("origin-1")
	held := c.startEdgeEnv("edge-held", []string{"LIVECLUSTER_EDGE_OWNER_LOSS_HOLD=15s"})
	const shortHold = 3 * time.Second
	short := c.startEdgeEnv("edge-short", []string{"LIVECLUSTER_EDGE_OWNER_LOSS_HOLD=" + shortHold.String()})
	c.publish("ffmpeg-0", "rtmp://"+o0.rtmp+"/live/ol")
	c.waitOwner("ol", "origin-0", 15*time.Second)

	play := func(e *node) []*player {
		var ps []*player
		for _, u := range []string{"rtmp://" + e.rtmp + "/live/ol", "http://" + e.http + "/live/ol.flv"} {
			for range 2 {
				p, err := startPlayer(u)
				if err != nil {
					t.Fatalf("player %s: %v", u, err)
				}
				t.Cleanup(p.stop)
				ps = append(ps, p)
			}
		}
		return ps
	}
	heldPlayers, shortPlayers := play(held), play(short)
	time.Sleep(time.Second)

	o0.Signal(syscall.SIGKILL)
	killed := time.Now()
	// The outage: nobody publishes for 8 s. The short-hold edge closes its
	// players at its hold; the other keeps them.
	closedAt := make([]time.Duration, len(shortPlayers))
	for time.Since(killed) < 8*time.Second {
		for i, p := range shortPlayers {
			if closedAt[i] == 0 && p.stats().err != nil {
				closedAt[i] = time.Since(killed)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, d := range closedAt {
		switch {
		case d == 0:
			t.Errorf("edge-short player %d still connected 8s after the owner died (hold %s)", i, shortHold)
		case d < shortHold-500*time.Millisecond || d > shortHold+3*time.Second:
			t.Errorf("edge-short player %d closed %s after the owner died, want about the %s hold", i, d, shortHold)
		}
	}
	t.Logf("edge-short players closed after %v (hold %s)", closedAt, shortHold)
	for i, p := range heldPlayers {
		if st := p.stats(); st.err != nil {
			t.Fatalf("edge-held player %d closed during the outage: %v", i, st.err)
		}
	}

	marks := counts(heldPlayers)
	republished := time.Now()
	c.publish("ffmpeg-1", "rtmp://"+o1.rtmp+"/live/ol")
	c.waitOwner("ol", "origin-1", 15*time.Second)
	// 2 s of media after the splice, within 10 s of the republish.
	flowsAfter(t, heldPlayers, marks, 140, 10*time.Second)
	t.Logf("edge-held players got media again %v after the republish (%v after the kill)", time.Since(republished), time.Since(killed))
	for i, p := range heldPlayers {
		st := p.stats()
		if st.err != nil {
			t.Errorf("edge-held player %d disconnected: %v", i, st.err)
		}
		if st.backwards > 0 {
			t.Errorf("edge-held player %d: timestamps went backwards %d times", i, st.backwards)
		}
	}
	if len(logLines(held.Proc, "upstream switched")) == 0 {
		t.Error("edge-held logged no upstream switch")
	}
}
