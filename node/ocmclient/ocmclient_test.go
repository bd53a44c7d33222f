package ocmclient

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/node/backoff"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// fakeOCM is the minimal edge of this unit test: sessions and leases, no
// etcd. The real OCM lives in the ocm module.
type fakeOCM struct {
	ocmv1.UnimplementedOCMServiceServer
	mu         sync.Mutex
	nextLease  int64
	lease      map[string]int64 // node id → live lease
	registers  int
	heartbeats int
	lastLoad   *ocmv1.Load
	drained    []int64
	deregs     []int64
	intervalMs int64       // told on Register (default 30)
	failHB     int         // fail this many next heartbeats (UNAVAILABLE)
	hbTimes    []time.Time // when each heartbeat arrived
}

func newFakeOCM() *fakeOCM { return &fakeOCM{nextLease: 100, lease: map[string]int64{}} }

func (f *fakeOCM) Register(_ context.Context, r *ocmv1.RegisterRequest) (*ocmv1.RegisterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.GetNode().GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "node id required")
	}
	f.nextLease++
	f.registers++
	f.lease[r.GetNode().GetId()] = f.nextLease
	iv := f.intervalMs
	if iv == 0 {
		iv = 30
	}
	return &ocmv1.RegisterResponse{Node: r.GetNode(), LeaseId: f.nextLease, LeaseTtlSeconds: 1, HeartbeatIntervalMs: iv}, nil
}

func (f *fakeOCM) check(id string, lease int64) error {
	if f.lease[id] != lease {
		return status.Errorf(codes.NotFound, "node %s lease %d: no such session", id, lease)
	}
	return nil
}

func (f *fakeOCM) Heartbeat(_ context.Context, r *ocmv1.HeartbeatRequest) (*ocmv1.HeartbeatResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(r.GetNodeId(), r.GetLeaseId()); err != nil {
		return nil, err
	}
	f.hbTimes = append(f.hbTimes, time.Now())
	if f.failHB > 0 {
		f.failHB--
		return nil, status.Error(codes.Unavailable, "replica going away")
	}
	f.heartbeats++
	f.lastLoad = r.GetLoad()
	return &ocmv1.HeartbeatResponse{LeaseTtlSeconds: 1, State: ocmv1.NodeState_NODE_STATE_READY}, nil
}

func (f *fakeOCM) Drain(_ context.Context, r *ocmv1.DrainRequest) (*ocmv1.DrainResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(r.GetNodeId(), r.GetLeaseId()); err != nil {
		return nil, err
	}
	f.drained = append(f.drained, r.GetLeaseId())
	return &ocmv1.DrainResponse{}, nil
}

func (f *fakeOCM) Deregister(_ context.Context, r *ocmv1.DeregisterRequest) (*ocmv1.DeregisterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(r.GetNodeId(), r.GetLeaseId()); err != nil {
		return nil, err
	}
	delete(f.lease, r.GetNodeId())
	f.deregs = append(f.deregs, r.GetLeaseId())
	return &ocmv1.DeregisterResponse{}, nil
}

// expire drops every session, as an etcd lease expiry would.
func (f *fakeOCM) expire() {
	f.mu.Lock()
	f.lease = map[string]int64{}
	f.mu.Unlock()
}

func (f *fakeOCM) counts() (registers, heartbeats int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.registers, f.heartbeats
}

func serve(t *testing.T, addr string, f *fakeOCM) *grpc.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on the reserved address %s: %v", addr, err)
	}
	srv := grpc.NewServer()
	ocmv1.RegisterOCMServiceServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return srv
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRegisterHeartbeatReregisterAndBlips(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for reconnects")
	}
	// Reserve an address with nothing listening: the OCM is down at first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	var reregistered atomic.Int64
	var streams atomic.Uint32
	streams.Store(7)
	c, err := New(Options{
		Address: addr,
		Node: &ocmv1.Node{Id: "origin-0", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN,
			Addresses: &ocmv1.NodeAddresses{Rtmp: "origin-0:1935"}},
		Load:           func() *ocmv1.Load { return &ocmv1.Load{Streams: streams.Load()} },
		OnReregistered: func(ctx context.Context, s Session) { reregistered.Store(s.LeaseID) },
		MinBackoff:     20 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
		CallTimeout:    time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Count the pauses between failed registrations instead of sleeping
	// for a guessed number of them.
	retries := make(chan time.Duration, 100)
	c.sleep = func(ctx context.Context, d time.Duration) bool {
		select {
		case retries <- d:
		default:
		}
		return backoff.Sleep(ctx, d)
	}

	t0 := time.Now()
	c.Start(context.Background())
	if d := time.Since(t0); d > 50*time.Millisecond {
		t.Fatalf("Start blocked for %s", d)
	}
	if c.Registered() || c.ReadinessCheck() == nil {
		t.Fatal("registered with no OCM")
	}
	for i := 0; i < 3; i++ { // three failed attempts
		select {
		case <-retries:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d register retries", i)
		}
	}
	if c.Registered() {
		t.Fatal("registered with no OCM")
	}

	f := newFakeOCM()
	srv := serve(t, addr, f)
	waitFor(t, "registration", 5*time.Second, c.Registered)
	s1, ok := c.Session()
	if !ok || s1.NodeID != "origin-0" || s1.LeaseID == 0 {
		t.Fatalf("session %+v %v", s1, ok)
	}
	waitFor(t, "heartbeats", 5*time.Second, func() bool { _, hb := f.counts(); return hb >= 3 })
	f.mu.Lock()
	if f.lastLoad.GetStreams() != 7 {
		t.Errorf("heartbeat load %v", f.lastLoad)
	}
	f.mu.Unlock()

	// Lease expiry: NotFound → register again → hook with the new session.
	f.expire()
	waitFor(t, "re-registration hook", 5*time.Second, func() bool { return reregistered.Load() != 0 })
	s2, _ := c.Session()
	if s2.LeaseID == s1.LeaseID || reregistered.Load() != s2.LeaseID {
		t.Errorf("hook lease %d, session %+v, old %+v", reregistered.Load(), s2, s1)
	}
	if r, _ := f.counts(); r != 2 {
		t.Errorf("registers %d, want 2", r)
	}

	// The OCM goes away: the node stays registered (ready).
	srv.Stop()
	waitFor(t, "heartbeat failures", 5*time.Second, func() bool { return c.Status().ConsecutiveFailures >= 3 })
	if !c.Registered() || c.ReadinessCheck() != nil {
		t.Fatal("an OCM outage made the node unready")
	}

	// It comes back with the session intact: heartbeats resume.
	_, before := f.counts()
	serve(t, addr, f)
	waitFor(t, "heartbeats after the OCM returned", 10*time.Second, func() bool {
		_, hb := f.counts()
		return hb > before && c.Status().ConsecutiveFailures == 0
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Registered() {
		t.Error("registered after Deregister")
	}
	f.mu.Lock()
	if len(f.drained) != 1 || len(f.deregs) != 1 || f.deregs[0] != s2.LeaseID {
		t.Errorf("drained %v deregistered %v, want lease %d", f.drained, f.deregs, s2.LeaseID)
	}
	f.mu.Unlock()
	// Deregister returns once the heartbeat loop has ended: none can follow.
	select {
	case <-c.done:
	default:
		t.Error("the heartbeat loop still runs after Deregister")
	}
}

func TestDrainBeforeRegistrationStopsRegistering(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := New(Options{Address: addr, Node: &ocmv1.Node{Id: "edge-1"}, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Start(context.Background())
	if err := c.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Drain before registration returns once the registration loop has
	// ended, so an OCM that comes up later can never see this node.
	select {
	case <-c.done:
	default:
		t.Fatal("the registration loop still runs after Drain")
	}
	f := newFakeOCM()
	serve(t, addr, f)
	if r, _ := f.counts(); r != 0 || c.Registered() {
		t.Errorf("a draining node registered (%d)", r)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{Node: &ocmv1.Node{Id: "x"}}); err == nil {
		t.Error("no address accepted")
	}
	if _, err := New(Options{Address: "ocm:7000"}); err == nil {
		t.Error("no node accepted")
	}
}

// A failed heartbeat is retried after the backoff, not a whole interval
// later: the replica that failed it may be gone while the lease counts down.
func TestFailedHeartbeatRetriedSoon(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := newFakeOCM()
	f.intervalMs = 1000
	serve(t, addr, f)
	c, err := New(Options{Address: addr, Node: &ocmv1.Node{Id: "o1", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN,
		Addresses: &ocmv1.NodeAddresses{Rtmp: "o1:1935"}}, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f.mu.Lock()
	f.failHB = 1 // the first heartbeat fails
	f.mu.Unlock()
	c.Start(context.Background())
	waitFor(t, "a heartbeat after the failed one", 5*time.Second, func() bool { _, hb := f.counts(); return hb >= 1 })
	f.mu.Lock()
	defer f.mu.Unlock()
	if gap := f.hbTimes[1].Sub(f.hbTimes[0]); gap > 500*time.Millisecond {
		t.Fatalf("heartbeat retried %v after a failure, want well within the 1 s interval", gap)
	}
}
