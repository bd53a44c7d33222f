package ocm_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/ocm/internal/ocm"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// processConn is a connection of its own, as a node process has: closing it
// is what the OCM sees when the process dies (its socket closes).
func processConn(t *testing.T, addr net.Addr) (ocmv1.OCMServiceClient, func()) {
	t.Helper()
	cc, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return ocmv1.NewOCMServiceClient(cc), func() { _ = cc.Close() }
}

// openSession opens KeepSession and waits for its first message.
func openSession(t *testing.T, ctx context.Context, c ocmv1.OCMServiceClient, n session) grpc.ServerStreamingClient[ocmv1.KeepSessionResponse] {
	t.Helper()
	st, err := c.KeepSession(ctx, &ocmv1.KeepSessionRequest{NodeId: n.id, LeaseId: n.lease})
	if err != nil {
		t.Fatalf("KeepSession: %v", err)
	}
	first, err := st.Recv()
	if err != nil {
		t.Fatalf("KeepSession first message: %v", err)
	}
	if first.Generation <= 0 || first.SessionGraceMs <= 0 {
		t.Fatalf("KeepSession first message %v", first)
	}
	return st
}

func withGrace(g time.Duration) func(*ocm.Config) {
	return func(c *ocm.Config) { c.SessionGrace = g }
}

// owned reports whether the stream is still owned, asking etcd through the
// replica's cache.
func owned(ctx context.Context, c ocmv1.OCMServiceClient, name string) bool {
	_, err := c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key(name)})
	return status.Code(err) != codes.NotFound
}

func TestBrokenSessionStreamRevokesLeaseAfterGrace(t *testing.T) {
	const grace = time.Second
	prefix := newPrefix(t)
	ra := startReplica(t, shared.Endpoints(), prefix, 10*time.Second, withGrace(grace))
	ctx := ctxT(t, 30*time.Second)
	nc, die := processConn(t, ra.Addr())
	n := register(t, nc, "o1", origin, "", 0)
	if _, err := claim(ctx, nc, n, key("x")); err != nil {
		t.Fatal(err)
	}
	openSession(t, ctx, nc, n)

	start := time.Now()
	die()
	for owned(ctx, ra.c, "x") {
		if time.Since(start) > grace+time.Second {
			t.Fatalf("stream still owned %s after the session stream broke (grace %s, lease TTL 10s)", time.Since(start), grace)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	if took < grace-100*time.Millisecond {
		t.Fatalf("stream freed after %s, before the %s grace", took, grace)
	}
	t.Logf("stream freed %s after the session stream broke (grace %s)", took, grace)

	// The session is gone: heartbeats and a new session stream say so.
	_, err := ra.c.Heartbeat(ctx, &ocmv1.HeartbeatRequest{NodeId: n.id, LeaseId: n.lease})
	wantCode(t, err, codes.NotFound, "heartbeat after the revocation")
	st, err := ra.c.KeepSession(ctx, &ocmv1.KeepSessionRequest{NodeId: n.id, LeaseId: n.lease})
	if err == nil {
		_, err = st.Recv()
	}
	wantCode(t, err, codes.NotFound, "KeepSession after the revocation")
}

func TestSessionStreamReopenedOnOtherReplicaKeepsLease(t *testing.T) {
	const grace = time.Second
	prefix := newPrefix(t)
	ra := startReplica(t, shared.Endpoints(), prefix, 10*time.Second, withGrace(grace))
	rb := startReplica(t, shared.Endpoints(), prefix, 10*time.Second, withGrace(grace))
	ctx := ctxT(t, 30*time.Second)
	ca, cutA := processConn(t, ra.Addr())
	n := register(t, ca, "o1", origin, "", 0)
	if _, err := claim(ctx, ca, n, key("x")); err != nil {
		t.Fatal(err)
	}
	openSession(t, ctx, ca, n)
	// A proxy cuts the stream to A; the node reconnects through B.
	cutA()
	time.Sleep(300 * time.Millisecond)
	cb, _ := processConn(t, rb.Addr())
	openSession(t, ctx, cb, n)

	time.Sleep(grace + time.Second)
	if !owned(ctx, ra.c, "x") || !owned(ctx, rb.c, "x") {
		t.Fatal("stream freed although the node reopened its session stream on the other replica within the grace")
	}
	if _, err := cb.Heartbeat(ctx, &ocmv1.HeartbeatRequest{NodeId: n.id, LeaseId: n.lease}); err != nil {
		t.Fatalf("heartbeat after the reconnect: %v", err)
	}
}

func TestReplicaShutdownRevokesNothing(t *testing.T) {
	const grace = time.Second
	prefix := newPrefix(t)
	ra := startReplica(t, shared.Endpoints(), prefix, 10*time.Second, withGrace(grace))
	rb := startReplica(t, shared.Endpoints(), prefix, 10*time.Second, withGrace(grace))
	ctx := ctxT(t, 30*time.Second)
	ca, _ := processConn(t, ra.Addr())
	n := register(t, ca, "o1", origin, "", 0)
	if _, err := claim(ctx, ca, n, key("x")); err != nil {
		t.Fatal(err)
	}
	st := openSession(t, ctx, ca, n)
	// Another node's stream broke just before the shutdown: its grace is
	// cancelled too (the replica going away revokes nothing).
	nd, dieD := processConn(t, ra.Addr())
	d := register(t, nd, "o2", origin, "", 0)
	if _, err := claim(ctx, nd, d, key("y")); err != nil {
		t.Fatal(err)
	}
	openSession(t, ctx, nd, d)
	dieD()
	time.Sleep(100 * time.Millisecond)

	ra.Stop()
	_, err := st.Recv()
	wantCode(t, err, codes.Unavailable, "session stream when its replica shuts down")
	// The node does not even reconnect here: nothing may revoke its lease.
	time.Sleep(grace + time.Second)
	for _, name := range []string{"x", "y"} {
		if !owned(ctx, rb.c, name) {
			t.Fatalf("stream %s freed by a replica's shutdown", name)
		}
	}
}

func TestDeregisterAfterStreamCloseIsClean(t *testing.T) {
	const grace = 500 * time.Millisecond
	prefix := newPrefix(t)
	ra := startReplica(t, shared.Endpoints(), prefix, 10*time.Second, withGrace(grace))
	ctx := ctxT(t, 30*time.Second)
	n := register(t, ra.c, "o1", origin, "", 0)
	sctx, cancel := context.WithCancel(ctx)
	openSession(t, sctx, ra.c, n)
	cancel()
	if _, err := ra.c.Deregister(ctx, &ocmv1.DeregisterRequest{NodeId: n.id, LeaseId: n.lease}); err != nil {
		t.Fatalf("deregister: %v", err)
	}
	// The same node registers again at once; the old stream's grace must
	// not touch the new session.
	n2 := register(t, ra.c, "o1", origin, "", 0)
	if _, err := claim(ctx, ra.c, n2, key("z")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(grace + 500*time.Millisecond)
	if !owned(ctx, ra.c, "z") {
		t.Fatal("the new session's stream was freed by the old session's grace")
	}
}
