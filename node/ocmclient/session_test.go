package ocmclient

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prometheus/client_golang/prometheus"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// sessionFake adds KeepSession to the fake: call n (from 1) is served by
// keep; every call's lease is recorded.
type sessionFake struct {
	*fakeOCM
	n      atomic.Int32
	keep   func(n int32, r *ocmv1.KeepSessionRequest, srv grpc.ServerStreamingServer[ocmv1.KeepSessionResponse]) error
	mu     sync.Mutex
	leases []int64
}

func (f *sessionFake) KeepSession(r *ocmv1.KeepSessionRequest, srv grpc.ServerStreamingServer[ocmv1.KeepSessionResponse]) error {
	f.mu.Lock()
	f.leases = append(f.leases, r.GetLeaseId())
	f.mu.Unlock()
	return f.keep(f.n.Add(1), r, srv)
}

func sessionLostErr() error {
	st, _ := status.New(codes.NotFound, "node session not found").
		WithDetails(&errdetails.ErrorInfo{Reason: ocmv1.ReasonSessionNotFound, Domain: ocmv1.ErrorDomain})
	return st.Err()
}

// The session stream is opened after Register, reopened at once when the
// OCM ends it (a replica going away), ends the session when the OCM says
// it is gone (the client registers again and re-claims), and is closed by
// Deregister; its metric counts the breaks.
func TestSessionStreamReopensAndEndsSession(t *testing.T) {
	ended := make(chan struct{})
	f := &sessionFake{fakeOCM: newFakeOCM()}
	f.keep = func(n int32, r *ocmv1.KeepSessionRequest, srv grpc.ServerStreamingServer[ocmv1.KeepSessionResponse]) error {
		if err := srv.Send(&ocmv1.KeepSessionResponse{SessionGraceMs: 1500, Generation: int64(n)}); err != nil {
			return err
		}
		switch n {
		case 1: // the replica shuts down
			return status.Error(codes.Unavailable, "OCM replica shutting down")
		case 2: // the lease was revoked
			return sessionLostErr()
		default: // held until the client ends it
			<-srv.Context().Done()
			if n == 3 {
				close(ended)
			}
			return srv.Context().Err()
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	ocmv1.RegisterOCMServiceServer(g, f)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)

	reg := prometheus.NewRegistry()
	var reregistered atomic.Int64
	c, err := New(Options{Address: ln.Addr().String(), Registerer: reg,
		Node:           &ocmv1.Node{Id: "origin-0", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN, Addresses: &ocmv1.NodeAddresses{Rtmp: "o:1935"}},
		MinBackoff:     5 * time.Millisecond,
		OnReregistered: func(_ context.Context, s Session) { reregistered.Store(s.LeaseID) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	c.Start(context.Background())
	waitFor(t, "the third session stream", 5*time.Second, func() bool { return f.n.Load() >= 3 })

	f.mu.Lock()
	leases := append([]int64(nil), f.leases...)
	f.mu.Unlock()
	if leases[0] != leases[1] || leases[2] == leases[1] {
		t.Fatalf("session streams' leases %v: want the first two on the first lease (reopened), the third on a new one (re-registered)", leases)
	}
	waitFor(t, "OnReregistered", 5*time.Second, func() bool { return reregistered.Load() == leases[2] })
	if regs, _ := f.counts(); regs != 2 {
		t.Fatalf("registrations = %d, want 2", regs)
	}
	// The third stream counts as a break only once the client has read its
	// first message (up = 1); a Deregister before that, which a loaded
	// machine allowed, ends a stream that never came up.
	waitFor(t, "the third stream up", 5*time.Second, func() bool {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "ocm_session_stream_up" {
				return mf.GetMetric()[0].GetGauge().GetValue() == 1
			}
		}
		return false
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Deregister(ctx); err != nil {
		t.Fatalf("deregister: %v", err)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("Deregister did not end the session stream")
	}
	if n := f.n.Load(); n != 3 {
		t.Fatalf("%d session streams opened, want 3", n)
	}
	// The fake sees the third stream end before the client's goroutine
	// counts the break: poll.
	var breaks, up float64 = -1, -1
	metrics := func() bool {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			switch mf.GetName() {
			case "ocm_session_stream_breaks_total":
				breaks = mf.GetMetric()[0].GetCounter().GetValue()
			case "ocm_session_stream_up":
				up = mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return breaks == 3 && up == 0
	}
	deadline := time.Now().Add(5 * time.Second)
	for !metrics() {
		if time.Now().After(deadline) {
			t.Fatalf("metrics: breaks %v (want 3), up %v (want 0)", breaks, up)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An OCM without KeepSession (an older version) is left alone: one
// attempt, no retry loop, heartbeats go on.
func TestSessionStreamUnsupported(t *testing.T) {
	f := newFakeOCM()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // serve listens on the address itself
	serve(t, addr, f)
	var slept atomic.Int32
	c, err := New(Options{Address: addr,
		Node: &ocmv1.Node{Id: "origin-0", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN, Addresses: &ocmv1.NodeAddresses{Rtmp: "o:1935"}}})
	if err != nil {
		t.Fatal(err)
	}
	SetSleep(c, func(ctx context.Context, d time.Duration) bool {
		slept.Add(1)
		return true
	})
	t.Cleanup(func() { _ = c.Close() })
	c.Start(context.Background())
	waitFor(t, "heartbeats", 5*time.Second, func() bool { _, hb := f.counts(); return hb >= 5 })
	if n := slept.Load(); n != 0 {
		t.Fatalf("client retried %d times against an OCM without KeepSession", n)
	}
}
