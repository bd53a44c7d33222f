package ocm_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/livecluster/livecluster/ocm/internal/etcdtest"
	"github.com/livecluster/livecluster/ocm/internal/ocm"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

func TestTwoReplicasShareState(t *testing.T) {
	prefix := newPrefix(t)
	ra := startReplica(t, shared.Endpoints(), prefix, 2*time.Second)
	rb := startReplica(t, shared.Endpoints(), prefix, 2*time.Second)
	ctx := ctxT(t, 30*time.Second)
	n := register(t, ra.c, "o1", origin, "", 0)

	w, err := rb.c.WatchStreams(ctx, &ocmv1.WatchStreamsRequest{Keys: []*ocmv1.StreamKey{key("x")}, InitialState: true})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := w.Recv(); err != nil || ev.Type != ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED {
		t.Fatalf("first event %v, %v; want SYNCED", ev, err)
	}
	st, err := claim(ctx, ra.c, n, key("x"))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := w.Recv()
	if err != nil || ev.Type != ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT || ev.Stream.Epoch != st.Epoch || ev.Owner.GetId() != n.id {
		t.Fatalf("watch on B got %v, %v; want PUT epoch %d with owner", ev, err, st.Epoch)
	}
	eventually(t, 5*time.Second, "lookup on B", func() bool {
		lk, err := rb.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key("x")})
		return err == nil && lk.Stream.Epoch == st.Epoch
	})
	// A claim through B of A's stream is refused with the owner named.
	n2 := register(t, rb.c, "o2", origin, "", 0)
	_, err = claim(ctx, rb.c, n2, key("x"))
	wantCode(t, err, codes.AlreadyExists, "claim of a stream owned via the other replica")

	// Heartbeats for a node registered on A, sent only to B, keep it alive
	// well past its 2 s TTL, and B sees the load report.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		hb, err := rb.c.Heartbeat(ctx, &ocmv1.HeartbeatRequest{NodeId: n.id, LeaseId: n.lease, Load: &ocmv1.Load{Streams: 1, IngressBps: 1000}})
		if err != nil {
			t.Fatalf("heartbeat via B: %v", err)
		}
		if hb.LeaseTtlSeconds < 1 {
			t.Fatalf("TTL after renewal %d", hb.LeaseTtlSeconds)
		}
		time.Sleep(500 * time.Millisecond)
	}
	lk, err := ra.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key("x")})
	if err != nil || lk.Owner.GetLoad().GetIngressBps() != 1000 || lk.Owner.LastHeartbeatAt.AsTime().Before(lk.Owner.RegisteredAt.AsTime()) {
		t.Fatalf("lookup on A after B's heartbeats = %v, %v", lk, err)
	}
	if !lk.Owner.LastHeartbeatAt.AsTime().After(lk.Owner.RegisteredAt.AsTime()) {
		t.Fatalf("last_heartbeat_at not updated: %v", lk.Owner)
	}
}

func TestReplicaRestartRebuildsCache(t *testing.T) {
	prefix := newPrefix(t)
	ra := startReplica(t, shared.Endpoints(), prefix, 10*time.Second)
	ctx := ctxT(t, 30*time.Second)
	n := register(t, ra.c, "o1", origin, "", 0)
	for _, name := range []string{"a", "b", "c"} {
		if _, err := claim(ctx, ra.c, n, key(name)); err != nil {
			t.Fatal(err)
		}
	}
	ra.Stop()
	rb := startReplica(t, shared.Endpoints(), prefix, 10*time.Second)
	ls, err := rb.c.ListStreams(ctx, &ocmv1.ListStreamsRequest{})
	if err != nil || ls.TotalSize != 3 {
		t.Fatalf("restarted replica lists %v, %v", ls, err)
	}
	nodes, err := rb.c.ListNodes(ctx, &ocmv1.ListNodesRequest{Role: origin})
	if err != nil || len(nodes.Nodes) != 1 {
		t.Fatalf("restarted replica nodes %v, %v", nodes, err)
	}
	// Health and reflection are served.
	cc, err := grpc.NewClient(rb.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	eventually(t, 5*time.Second, "grpc health SERVING", func() bool {
		h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: ocmv1.OCMService_ServiceDesc.ServiceName})
		return err == nil && h.Status == healthpb.HealthCheckResponse_SERVING
	})
	rs, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range rr.GetListServicesResponse().GetService() {
		found = found || s.Name == ocmv1.OCMService_ServiceDesc.ServiceName
	}
	if !found {
		t.Fatalf("reflection lists %v", rr)
	}
}

func TestEtcdRestartUnderRunningReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts etcd")
	}
	m, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			m.Stop()
		}
	})
	r := startReplica(t, m.Endpoints(), "/livecluster/", 10*time.Second, func(c *ocm.Config) {
		c.EtcdOpTimeout = 1500 * time.Millisecond
	})
	ctx := ctxT(t, 60*time.Second)
	n := register(t, r.c, "o1", origin, "", 0)
	if _, err := claim(ctx, r.c, n, key("before")); err != nil {
		t.Fatal(err)
	}
	w, err := r.c.WatchStreams(ctx, &ocmv1.WatchStreamsRequest{})
	if err != nil {
		t.Fatal(err)
	}

	m.Stop()
	stopped = true
	_, err = claim(ctx, r.c, n, key("during"))
	wantCode(t, err, codes.Unavailable, "claim while etcd is down")
	eventually(t, 10*time.Second, "not ready while etcd is down", func() bool { return r.Ready() != nil })
	// Lookups keep being served from the cache.
	if _, err := r.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key("before")}); err != nil {
		t.Fatalf("lookup during the outage: %v", err)
	}

	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	stopped = false
	eventually(t, 20*time.Second, "ready after etcd restart", func() bool { return r.Ready() == nil })
	var st *ocmv1.Stream
	eventually(t, 20*time.Second, "claim after etcd restart", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		st, err = claim(cctx, r.c, n, key("after"))
		return err == nil
	})
	if _, err := r.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key("after")}); err != nil {
		t.Fatalf("lookup of a claim made after the restart: %v", err)
	}
	for {
		ev, err := w.Recv()
		if err != nil {
			t.Fatalf("watch across the etcd restart: %v", err)
		}
		if ev.Type == ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT && ev.Stream.Key.Name == "after" {
			if ev.Stream.Epoch != st.Epoch {
				t.Fatalf("watch epoch %d, claim epoch %d", ev.Stream.Epoch, st.Epoch)
			}
			break
		}
	}
}
