package relay

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/livecluster/livecluster/edge/internal/directory"
	"github.com/livecluster/livecluster/edge/internal/edgetest"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/media/stream"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

func TestMain(m *testing.M) {
	code := m.Run()
	edgetest.Cleanup()
	os.Exit(code)
}

var key = streamkey.Key{Vhost: streamkey.DefaultVhost, App: "live", Name: "s"}

type fixture struct {
	ocm     *edgetest.OCM
	m       *Manager
	metrics *Metrics
}

func newFixture(t *testing.T, st Settings) *fixture {
	t.Helper()
	st.Protocol = ProtocolRTMP
	ocm, api := edgetest.StartOCM(t)
	dir := directory.New(directory.Options{OCM: api, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); dir.Run(ctx) }()
	metrics := NewMetrics(prometheus.NewRegistry())
	m := New(Options{Dir: dir, Settings: func() Settings { return st }, Hub: hub.Config{MergeWindow: -1}, Metrics: metrics})
	t.Cleanup(func() {
		m.Close()
		cancel()
		<-done
	})
	return &fixture{ocm: ocm, m: m, metrics: metrics}
}

func (f *fixture) own(o *edgetest.Origin, epoch int64) {
	f.ocm.Node(o.Node(ocmv1.NodeState_NODE_STATE_READY))
	f.ocm.Set(key, o.ID, epoch)
}

// player reads a hub as a packet sink and records what a viewer notices.
type player struct {
	headers chan int // number of headers so far, after each
	packets chan av.Packet
	done    chan error
}

type sink struct{ p *player }

func (s sink) WriteHeader([]av.CodecData) error {
	select {
	case s.p.headers <- 1:
	default:
	}
	return nil
}

func (s sink) WritePacket(pkt av.Packet) error {
	select {
	case s.p.packets <- pkt:
	default: // the test reads only what it needs
	}
	return nil
}

func play(t *testing.T, h *hub.Hub) (*player, *hub.Reader) {
	t.Helper()
	rd, err := h.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	p := &player{headers: make(chan int, 16), packets: make(chan av.Packet, 4096), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { p.done <- stream.PlayPackets(ctx, rd, sink{p}) }()
	t.Cleanup(func() { cancel(); rd.Close() })
	return p, rd
}

// next returns the next packet within d, failing the test otherwise.
func (p *player) next(t *testing.T, d time.Duration, what string) av.Packet {
	t.Helper()
	select {
	case pkt := <-p.packets:
		return pkt
	case err := <-p.done:
		t.Fatalf("%s: the player ended: %v", what, err)
	case <-time.After(d):
		t.Fatalf("%s: no packet within %v", what, d)
	}
	return av.Packet{}
}

// drainFor reads packets for d and returns the highest timestamp, failing
// when they go backwards.
func (p *player) drainFor(t *testing.T, d time.Duration, last time.Duration) time.Duration {
	t.Helper()
	end := time.After(d)
	for {
		select {
		case pkt := <-p.packets:
			if pkt.Time+100*time.Millisecond < last { // audio and video interleave within a frame
				t.Fatalf("timestamp went back from %v to %v", last, pkt.Time)
			}
			last = max(last, pkt.Time)
		case err := <-p.done:
			t.Fatalf("the player ended: %v", err)
		case <-end:
			return last
		}
	}
}

// One pull per stream; when the last player leaves, the upstream closes
// after the idle timeout.
func TestPullAndIdleClose(t *testing.T) {
	f := newFixture(t, Settings{IdleTimeout: 300 * time.Millisecond, WaitTimeout: 2 * time.Second, DialTimeout: 2 * time.Second})
	a := edgetest.StartOrigin(t, "origin-a")
	src := a.Feed(t, key)
	f.own(a, 1)
	h, err := f.m.Acquire(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := f.m.Acquire(context.Background(), key)
	if err != nil || h2 != h {
		t.Fatalf("second player got another hub (%v)", err)
	}
	p, rd := play(t, h)
	p.next(t, 3*time.Second, "first packet")
	if n := src.NumReaders(); n != 1 {
		t.Fatalf("origin has %d readers, want 1 upstream", n)
	}
	rd.Close()
	left := time.Now()
	edgetest.WaitFor(t, "upstream to close", 5*time.Second, func() bool { return src.NumReaders() == 0 })
	if idle := time.Since(left); idle < 250*time.Millisecond {
		t.Fatalf("upstream closed %v after the last player left, before the idle timeout", idle)
	}
	if f.m.Upstreams() != 0 {
		t.Fatal("the manager still counts an upstream")
	}
}

// Every write to a player is timed in livecluster_edge_player_wait_seconds:
// the relay's hubs report to it without the caller wiring anything.
func TestPlayerWaitObserved(t *testing.T) {
	f := newFixture(t, Settings{IdleTimeout: time.Second, WaitTimeout: 2 * time.Second, DialTimeout: 2 * time.Second})
	a := edgetest.StartOrigin(t, "origin-a")
	a.Feed(t, key)
	f.own(a, 1)
	h, err := f.m.Acquire(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := play(t, h)
	for range 20 {
		p.next(t, 3*time.Second, "packet")
	}
	hist := func(until string) *dto.Histogram {
		var m dto.Metric
		if err := f.metrics.PlayerWait.WithLabelValues(until).(prometheus.Metric).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram()
	}
	// The player took at least the packets after its GOP burst one batch
	// at a time (no merge window here), each told when it came back.
	edgetest.WaitFor(t, "player waits observed", 5*time.Second, func() bool { return hist("written").GetSampleCount() >= 5 })
	// One of each per batch (read while the player runs: a batch or two
	// apart at most).
	taken, written := hist("taken"), hist("written")
	if d := int64(taken.GetSampleCount()) - int64(written.GetSampleCount()); d < -2 || d > 2 {
		t.Fatalf("%d taken, %d written: want one of each per batch", taken.GetSampleCount(), written.GetSampleCount())
	}
	if written.GetSampleSum()/float64(written.GetSampleCount()) > 1 {
		t.Fatalf("mean wait %.3f s on loopback without a window", written.GetSampleSum()/float64(written.GetSampleCount()))
	}
}

// The owner changes: the new upstream is spliced under the running player
// (headers again, timestamps monotonic), then the old one closes.
func TestOwnerChangeSplices(t *testing.T) {
	f := newFixture(t, Settings{IdleTimeout: time.Minute, WaitTimeout: 2 * time.Second, DialTimeout: 2 * time.Second})
	a := edgetest.StartOrigin(t, "origin-a")
	b := edgetest.StartOrigin(t, "origin-b")
	srcA := a.Feed(t, key)
	srcB := b.Feed(t, key)
	f.own(a, 1)
	h, err := f.m.Acquire(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := play(t, h)
	last := p.drainFor(t, time.Second, 0)
	headers := len(p.headers)

	f.ocm.Node(b.Node(ocmv1.NodeState_NODE_STATE_READY))
	f.ocm.Set(key, b.ID, 2)
	edgetest.WaitFor(t, "the pull from origin-b", 5*time.Second, func() bool { return srcB.NumReaders() == 1 })
	edgetest.WaitFor(t, "the pull from origin-a to close", 5*time.Second, func() bool { return srcA.NumReaders() == 0 })
	// Media goes on after the switch, within a bound, and never back in time.
	p.next(t, 2*time.Second, "a packet after the switch")
	p.drainFor(t, time.Second, last)
	if len(p.headers) <= headers {
		t.Fatal("no codec headers resent at the switch")
	}
	if s := f.m.Streams(); len(s) != 1 || s[0].Switches != 1 || s[0].Owner != "origin-b@2" {
		t.Fatalf("streams %+v: want one switch to origin-b@2", s)
	} else if h := s[0].Hub; h.Readers != s[0].Players || h.Readers == 0 || h.PacketsIn == 0 || h.BytesOut == 0 {
		t.Fatalf("stream %s: hub counters %+v, want its player and the packets it was sent", s[0].Key, h)
	}
}

// An owner that hangs (accepts TCP, never answers) costs the dial timeout,
// not the stream: the running upstream keeps playing meanwhile.
func TestHungNewOwnerKeepsCurrentUpstream(t *testing.T) {
	f := newFixture(t, Settings{IdleTimeout: time.Minute, WaitTimeout: 2 * time.Second, DialTimeout: 300 * time.Millisecond})
	a := edgetest.StartOrigin(t, "origin-a")
	src := a.Feed(t, key)
	f.own(a, 1)
	h, err := f.m.Acquire(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := play(t, h)
	last := p.drainFor(t, 500*time.Millisecond, 0)

	hung := edgetest.Blackhole(t)
	f.ocm.Node(&ocmv1.Node{Id: "origin-hung", Addresses: &ocmv1.NodeAddresses{Rtmp: hung, Http: hung}})
	f.ocm.Set(key, "origin-hung", 2)
	// Several dial timeouts pass; the player never stops.
	p.drainFor(t, 1500*time.Millisecond, last)
	if n := testutil.ToFloat64(f.metrics.Starts.WithLabelValues(ProtocolRTMP, "error")); n < 2 {
		t.Fatalf("%v failed dials of the hung owner in 1.5 s, want the 300 ms dial timeout to end each", n)
	}
	p.next(t, time.Second, "a packet while the new owner hangs")
	if src.NumReaders() != 1 {
		t.Fatal("the upstream from origin-a was closed for an owner that never answered")
	}
	if s := f.m.Streams(); len(s) != 1 || s[0].Switches != 0 || s[0].Owner != "origin-a@1" {
		t.Fatalf("streams %+v: want origin-a@1 still playing", s)
	}
}

// The upstream ends (the origin died) and the stream comes back on another
// origin: the players stay attached and media follows.
func TestUpstreamLostThenBackElsewhere(t *testing.T) {
	f := newFixture(t, Settings{IdleTimeout: time.Minute, WaitTimeout: 5 * time.Second, DialTimeout: time.Second})
	a := edgetest.StartOrigin(t, "origin-a")
	a.Feed(t, key)
	f.own(a, 1)
	h, err := f.m.Acquire(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := play(t, h)
	last := p.drainFor(t, 500*time.Millisecond, 0)

	a.Stop()
	f.ocm.Set(key, "", 0)
	time.Sleep(300 * time.Millisecond)
	b := edgetest.StartOrigin(t, "origin-b")
	b.Feed(t, key)
	f.own(b, 3)
	p.next(t, 3*time.Second, "a packet from origin-b")
	p.drainFor(t, 500*time.Millisecond, last)
	if s := f.m.Streams(); len(s) != 1 || s[0].Owner != "origin-b@3" {
		t.Fatalf("streams %+v: want origin-b@3", s)
	}
}

// A stream nobody publishes fails its player with ErrNotFound after the
// wait timeout.
func TestNotPublished(t *testing.T) {
	f := newFixture(t, Settings{IdleTimeout: time.Minute, WaitTimeout: 400 * time.Millisecond, DialTimeout: time.Second})
	start := time.Now()
	_, err := f.m.Acquire(context.Background(), key)
	waited := time.Since(start)
	if !errors.Is(err, ErrNotFound) || waited < 350*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("Acquire of an unpublished stream: %v after %v, want ErrNotFound after the wait timeout", err, waited)
	}
}

// An upstream whose origin goes quiet without closing (its publisher
// paused: the hub stays open) stalls; the session pulls again from the
// same owner, holding its player, and each re-pull that only brings the
// origin's cached GOP doubles the next stall timeout, so a paused stream
// is not pulled again every stall timeout.
func TestStalledUpstreamPulledAgainWithBackoff(t *testing.T) {
	const stall = 300 * time.Millisecond
	f := newFixture(t, Settings{IdleTimeout: time.Minute, WaitTimeout: 5 * time.Second, DialTimeout: time.Second,
		OwnerLossHold: time.Minute, StallTimeout: stall})
	a := edgetest.StartOrigin(t, "origin-a")
	// 1.5 s of media in real time, then silence with the publish open.
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	oh, _, err := a.Hubs.GetOrCreate(key.String())
	if err != nil {
		t.Fatal(err)
	}
	src, err := oh.Publish(streams, nil)
	if err != nil {
		t.Fatal(err)
	}
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		start := time.Now()
		for _, p := range pkts {
			if p.Time > 1500*time.Millisecond {
				return
			}
			time.Sleep(time.Until(start.Add(p.Time)))
			if src.WritePacket(p) != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { <-fed })
	f.own(a, 1)
	h, err := f.m.Acquire(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := play(t, h)
	p.next(t, 2*time.Second, "first packet")
	<-fed

	stalls := func() int { return int(testutil.ToFloat64(f.metrics.Stalls)) }
	deadline := time.Now().Add(5 * time.Second)
	for stalls() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the quiet upstream was never dropped as stalled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	first := time.Now()
	// Each re-pull brings the cached GOP, so the player gets media again.
	p.next(t, 2*time.Second, "a packet of the re-pull")
	// Stalls after the first, with backoff: +0.3 s, +0.9 s, +2.1 s (the
	// timeout doubling each time); without it one every 0.3 s, 7 by then.
	time.Sleep(2*time.Second - time.Since(first))
	n := stalls()
	t.Logf("%d stalls within 2 s of the first (stall timeout %v)", n, stall)
	if n < 2 || n > 4 {
		t.Errorf("%d stalls within 2 s of the first, want 2 to 4 (the timeout doubling after each re-pull that only brought the cached GOP)", n)
	}
	if got := testutil.ToFloat64(f.metrics.Starts.WithLabelValues(ProtocolRTMP, "ok")); got < 2 {
		t.Errorf("%v upstream dials succeeded, want the first one and a re-pull at least", got)
	}
	select {
	case err := <-p.done:
		t.Fatalf("the player ended across the stalls: %v", err)
	default:
	}
}
