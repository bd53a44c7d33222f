package main

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/proctest"
)

// cutProxy forwards TCP to target until Cut: from then on it reads and
// drops everything in both directions and closes nothing, like a network
// that loses packets (no RST, no FIN); new connections are accepted and
// get nothing either.
type cutProxy struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) Addr() string { return p.ln.Addr().String() }

func (p *cutProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(in)
		if p.cut.Load() {
			p.wg.Add(1)
			go p.pipe(in, nil)
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.track(out)
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

// pipe copies src to dst (nil: nowhere) until src ends; while cut, what is
// read is dropped.
func (p *cutProxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && dst != nil && !p.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if dst != nil && !p.cut.Load() {
				dst.Close()
			}
			return
		}
	}
}

// An origin cut off from the OCM (packets dropped: nothing closes) while
// its publisher and players still reach it fences itself before its lease
// can expire at the OCM: it closes its publisher and players at its local
// lease deadline and refuses new publishes, and only later does the OCM
// let another origin claim the stream. A pull naming a stale epoch is
// refused. Figures are logged (docs/operations.md, "Fencing and epochs").
func TestPartitionedOriginFencesItself(t *testing.T) {
	slow(t)
	ff := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	ocm := startOCM(t)
	proxy := startCutProxy(t, ocm.addr)
	a := startOrigin(t, "origin-a", proxy.Addr(), "", true)
	b := startOrigin(t, "origin-b", ocm.addr, "", true)
	pub := publish(t, a.url("cut"))
	epoch := waitOwner(t, ocm, "cut", "origin-a", 10*time.Second).GetStream().GetEpoch()
	a.WaitOutput(`"msg":"publish started"`, 5*time.Second)

	// An edge's pull names the epoch; another epoch is refused.
	if err := playOnce(a.url("cut") + "?lc_epoch=" + strconv.FormatInt(epoch+1, 10)); err == nil ||
		!strings.Contains(err.Error(), "at epoch "+strconv.FormatInt(epoch, 10)) {
		t.Fatalf("pull at a wrong epoch: %v, want a refusal naming epoch %d", err, epoch)
	}
	// A player pulling at the right epoch, as an edge does, until the end.
	playerEnd := make(chan time.Time, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := rtmp.Dial(ctx, a.url("cut")+"?lc_epoch="+strconv.FormatInt(epoch, 10), rtmp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Play(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := c.ReadPacket(); err != nil {
				playerEnd <- time.Now()
				return
			}
		}
	}()
	time.Sleep(time.Second)

	cut := time.Now()
	proxy.cut.Store(true)

	// The publisher is closed by origin-a at its local lease deadline:
	// the last heartbeat sent before the cut + TTL (10 s) - margin (2 s),
	// so between 8 s - one heartbeat interval (3.3 s) and 8 s after it.
	select {
	case <-pub.Done():
	case <-time.After(12 * time.Second):
		t.Fatal("origin-a did not close its publisher 12 s after it was cut off from the OCM")
	}
	pubClosed := time.Since(cut)
	var ended time.Duration
	select {
	case at := <-playerEnd:
		ended = at.Sub(cut)
	case <-time.After(2 * time.Second):
		t.Fatal("origin-a's player not closed with its publisher")
	}
	t.Logf("cut → origin-a closed its publisher: %v, its player: %v", pubClosed.Round(time.Millisecond), ended.Round(time.Millisecond))
	// The player's end is the origin's own act (ffmpeg's exit adds its
	// reaction time): within [8 s - a heartbeat interval, 8 s] plus the
	// fence loop's wake-up.
	if ended < 4*time.Second || ended > 8600*time.Millisecond {
		t.Errorf("origin-a closed its player %v after the cut, want within [8s - heartbeat interval, 8s]", ended)
	}
	a.WaitOutput("not renewed in time", time.Second)

	// The encoder reconnects (here: to origin-b, every 500 ms, as through
	// the origins' Service); origin-b is refused until the lease expires
	// at the OCM, TTL after the last renewal.
	attempts := 0
	for {
		if time.Since(cut) > 20*time.Second {
			t.Fatalf("origin-b still refused %v after the cut (%d attempts)", time.Since(cut), attempts)
		}
		attempts++
		tried := time.Now()
		p := proctest.Start(t, "ffmpeg-publish-b", ff, "-nostdin", "-v", "error", "-re", "-stream_loop", "-1",
			"-i", flvFile(t), "-c", "copy", "-f", "flv", b.url("cut"))
		if accepted(ocm, p, "cut", "origin-b", 3*time.Second) {
			break
		}
		time.Sleep(time.Until(tried.Add(500 * time.Millisecond)))
	}
	rec := waitOwner(t, ocm, "cut", "origin-b", time.Second).GetStream()
	granted := rec.GetClaimedAt().AsTime().Sub(cut)
	t.Logf("cut → new owner origin-b granted (OCM claimed_at): %v (epoch %d → %d, %d attempts); origin-a stopped serving %v before",
		granted.Round(time.Millisecond), epoch, rec.GetEpoch(), attempts, (granted - ended).Round(time.Millisecond))
	if rec.GetEpoch() <= epoch {
		t.Errorf("new epoch %d not above the old %d", rec.GetEpoch(), epoch)
	}
	if ended >= granted || pubClosed >= granted {
		t.Errorf("origin-a still served at %v, after origin-b was granted the stream at %v", max(ended, pubClosed), granted)
	}

	// While cut off, origin-a refuses new publishes; after the network
	// heals it registers again and takes them.
	cmd := proctest.Start(t, "ffmpeg-publish-a2", ff, "-nostdin", "-v", "error", "-re", "-t", "2", "-i", flvFile(t), "-c", "copy", "-f", "flv", a.url("other"))
	if cmd.Wait(10*time.Second) == 0 || !strings.Contains(cmd.Output(), "not renewed in time") && !strings.Contains(cmd.Output(), "lost") {
		t.Errorf("publish on the fenced origin-a: %s", cmd.Output())
	}
	proxy.cut.Store(false)
	// The blackholed connection stays dead; gRPC reconnects through the
	// proxy once its calls time out.
	a.WaitOutput(`"msg":"lease renewed: taking new publishes again"`, 30*time.Second)
	publish(t, a.url("after"))
	waitOwner(t, ocm, "after", "origin-a", 20*time.Second)
}

// playOnce opens a play and reads the codecs; the error says why not.
func playOnce(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rtmp.Dial(ctx, url, rtmp.Config{})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Play(); err != nil {
		return err
	}
	if _, err := c.Streams(); err != nil {
		return err
	}
	if _, err := c.ReadPacket(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
