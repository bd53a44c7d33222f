package ocmclient

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// slowOCM answers heartbeats after delay (0 while stalled is false) and
// records when each heartbeat arrived; while stalled, heartbeats hang until
// the client gives up (an OCM cut off).
type slowOCM struct {
	*fakeOCM
	delay   time.Duration
	stalled atomic.Bool
	mu      sync.Mutex
	arrived []time.Time
}

func (f *slowOCM) Register(ctx context.Context, r *ocmv1.RegisterRequest) (*ocmv1.RegisterResponse, error) {
	resp, err := f.fakeOCM.Register(ctx, r)
	if err == nil {
		resp.LeaseTtlSeconds, resp.HeartbeatIntervalMs = 2, 300
	}
	return resp, err
}

func (f *slowOCM) Heartbeat(ctx context.Context, r *ocmv1.HeartbeatRequest) (*ocmv1.HeartbeatResponse, error) {
	at := time.Now()
	if f.stalled.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.mu.Lock()
	f.arrived = append(f.arrived, at)
	f.mu.Unlock()
	time.Sleep(f.delay)
	resp, err := f.fakeOCM.Heartbeat(ctx, r)
	if err == nil {
		resp.LeaseTtlSeconds = 2
	}
	return resp, err
}

func (f *slowOCM) lastArrival() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.arrived) == 0 {
		return time.Time{}
	}
	return f.arrived[len(f.arrived)-1]
}

// The local lease deadline counts from the heartbeat's send, not from its
// answer: the OCM renews the lease somewhere in between, so only the send
// time is certainly no later than the renewal. It does not move while
// heartbeats fail, and is gone after Deregister.
func TestLeaseDeadlineCountsFromSend(t *testing.T) {
	f := &slowOCM{fakeOCM: newFakeOCM(), delay: 250 * time.Millisecond}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	ocmv1.RegisterOCMServiceServer(g, f)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	c, err := New(Options{Address: ln.Addr().String(), MinBackoff: 5 * time.Millisecond,
		Node: &ocmv1.Node{Id: "origin-0", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN, Addresses: &ocmv1.NodeAddresses{Rtmp: "o:1935"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if !c.LeaseDeadline().IsZero() {
		t.Fatal("a deadline before registration")
	}
	c.Start(context.Background())
	waitFor(t, "two heartbeats", 5*time.Second, func() bool { _, hb := f.counts(); return hb >= 2 })

	const ttl = 2 * time.Second
	margin := FenceMargin(ttl)
	if margin != time.Second {
		t.Fatalf("FenceMargin(2s) = %v, want 1s", margin)
	}
	// The OCM renews the lease when a heartbeat arrives, so the deadline
	// may never lie beyond the latest arrival + TTL - margin. Counted from
	// the answer instead (arrival + delay), it would for the time between
	// an answer and the next heartbeat.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		dl := c.LeaseDeadline()
		arr := f.lastArrival()
		if dl.After(arr.Add(ttl - margin)) {
			t.Fatalf("deadline %v is %v past the latest renewal + TTL - margin", dl, dl.Sub(arr.Add(ttl-margin)))
		}
	}
	if dl := c.LeaseDeadline(); dl.Before(time.Now().Add(ttl - margin - 600*time.Millisecond)) {
		t.Fatalf("deadline %v not kept up by the heartbeats", dl)
	}

	// Cut off: heartbeats hang and time out; the deadline stays put and
	// passes.
	f.stalled.Store(true)
	time.Sleep(400 * time.Millisecond) // the answer in flight lands
	stuck := c.LeaseDeadline()
	time.Sleep(1200 * time.Millisecond)
	if dl := c.LeaseDeadline(); !dl.Equal(stuck) {
		t.Fatalf("deadline moved from %v to %v while heartbeats failed", stuck, dl)
	}
	if time.Now().Before(stuck) {
		t.Fatalf("deadline %v not passed %v after the cut", stuck, 1600*time.Millisecond)
	}
	f.stalled.Store(false)
	waitFor(t, "a renewal after the cut", 5*time.Second, func() bool { return c.LeaseDeadline().After(time.Now()) })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if dl := c.LeaseDeadline(); !dl.IsZero() {
		t.Fatalf("deadline %v after Deregister", dl)
	}
}
