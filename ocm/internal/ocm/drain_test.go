package ocm_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// AssignOrigin keeps an owned stream on a READY, non-excluded owner and
// places it elsewhere (naming the current owner in stream) when the owner is
// DRAINING or excluded.
func TestAssignOriginOwnedStream(t *testing.T) {
	r := startReplica(t, shared.Endpoints(), newPrefix(t), 10*time.Second)
	ctx := ctxT(t, 30*time.Second)
	a := register(t, r.c, "a", origin, "", 0)
	b := register(t, r.c, "b", origin, "", 0)
	c := register(t, r.c, "c", origin, "", 0)
	register(t, r.c, "e", edge, "", 0)
	k := key("owned")
	st, err := claim(ctx, r.c, a, k)
	if err != nil {
		t.Fatal(err)
	}
	assign := func(exclude ...string) (*ocmv1.AssignOriginResponse, error) {
		return r.c.AssignOrigin(ctx, &ocmv1.AssignOriginRequest{Key: k, ExcludeNodeIds: exclude})
	}
	wantStream := func(what string, as *ocmv1.AssignOriginResponse) {
		t.Helper()
		if as.GetStream().GetOwnerNodeId() != a.id || as.GetStream().GetEpoch() != st.Epoch {
			t.Fatalf("%s: stream = %v, want the current record (owner a, epoch %d)", what, as.GetStream(), st.Epoch)
		}
	}

	// Owned by a READY origin: the owner, whatever else is excluded.
	for _, ex := range [][]string{nil, {b.id}, {b.id, c.id}} {
		as, err := assign(ex...)
		if err != nil || as.Origin.GetId() != a.id {
			t.Fatalf("assign excluding %v = %v, %v; want the READY owner a", ex, as, err)
		}
		wantStream(fmt.Sprintf("assign excluding %v", ex), as)
	}

	// Owner excluded: another origin, with the current record.
	for range 20 {
		as, err := assign(a.id)
		if err != nil {
			t.Fatalf("assign excluding the owner: %v", err)
		}
		if id := as.Origin.GetId(); id != b.id && id != c.id {
			t.Fatalf("assign excluding the owner chose %q, want b or c", id)
		}
		wantStream("assign excluding the owner", as)
	}
	as, err := assign(a.id, b.id)
	if err != nil || as.Origin.GetId() != c.id {
		t.Fatalf("assign excluding a and b = %v, %v; want c", as, err)
	}
	wantStream("assign excluding a and b", as)
	_, err = assign(a.id, b.id, c.id)
	wantCode(t, err, codes.FailedPrecondition, "assign excluding every origin")

	// Owner DRAINING: another READY origin, with the current record.
	if _, err := r.c.Drain(ctx, &ocmv1.DrainRequest{NodeId: a.id, LeaseId: a.lease}); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		as, err := assign()
		if err != nil {
			t.Fatalf("assign with the owner draining: %v", err)
		}
		if id := as.Origin.GetId(); id != b.id && id != c.id {
			t.Fatalf("assign with the owner draining chose %q, want b or c", id)
		}
		if as.Origin.GetState() != ocmv1.NodeState_NODE_STATE_READY {
			t.Fatalf("assign chose %v", as.Origin)
		}
		wantStream("assign with the owner draining", as)
	}
	as, err = assign(b.id)
	if err != nil || as.Origin.GetId() != c.id {
		t.Fatalf("assign with a draining and b excluded = %v, %v; want c", as, err)
	}
	wantStream("assign with a draining and b excluded", as)

	// No other origin: c drains too, b is excluded.
	if _, err := r.c.Drain(ctx, &ocmv1.DrainRequest{NodeId: c.id, LeaseId: c.lease}); err != nil {
		t.Fatal(err)
	}
	_, err = assign(b.id)
	wantCode(t, err, codes.FailedPrecondition, "assign with the owner draining and no other READY origin")
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "owned by a") || !strings.Contains(msg, "draining") {
		t.Fatalf("error %q does not say the stream's owner is a and draining", msg)
	}
	// The record is untouched: AssignOrigin never moves a stream itself.
	lk, err := r.c.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: k})
	if err != nil || lk.Stream.OwnerNodeId != a.id || lk.Stream.Epoch != st.Epoch {
		t.Fatalf("lookup after assigns = %v, %v", lk, err)
	}
}

// recvUntilSynced reads a watch's initial state.
func recvUntilSynced(t *testing.T, w ocmv1.OCMService_WatchStreamsClient) []*ocmv1.WatchStreamsResponse {
	t.Helper()
	var out []*ocmv1.WatchStreamsResponse
	for {
		ev, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED {
			return out
		}
		out = append(out, ev)
	}
}

// A drain reaches watchers of the owner's streams as PUTs carrying the
// DRAINING owner; heartbeats (load updates) send nothing.
func TestWatchSeesOwnerDrain(t *testing.T) {
	r := startReplica(t, shared.Endpoints(), newPrefix(t), 10*time.Second)
	ctx := ctxT(t, 30*time.Second)
	a := register(t, r.c, "a", origin, "", 0)
	b := register(t, r.c, "b", origin, "", 0)
	claimed := map[string]*ocmv1.Stream{}
	for _, c := range []struct {
		s    session
		name string
	}{{a, "s1"}, {a, "s2"}, {b, "s3"}} {
		st, err := claim(ctx, r.c, c.s, key(c.name))
		if err != nil {
			t.Fatal(err)
		}
		claimed[c.name] = st
	}
	keyed, err := r.c.WatchStreams(ctx, &ocmv1.WatchStreamsRequest{Keys: []*ocmv1.StreamKey{key("s1"), key("s3")}, InitialState: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(recvUntilSynced(t, keyed)); n != 2 {
		t.Fatalf("keyed watch: %d initial streams, want 2", n)
	}
	all, err := r.c.WatchStreams(ctx, &ocmv1.WatchStreamsRequest{InitialState: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(recvUntilSynced(t, all)); n != 3 {
		t.Fatalf("watch of all: %d initial streams, want 3", n)
	}

	heartbeat := func(s session, streams uint32) {
		t.Helper()
		if _, err := r.c.Heartbeat(ctx, &ocmv1.HeartbeatRequest{NodeId: s.id, LeaseId: s.lease,
			Load: &ocmv1.Load{Streams: streams, IngressBps: uint64(streams) * 1e6}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		heartbeat(a, uint32(i))
		heartbeat(b, uint32(i))
	}
	drainAt := time.Now()
	if _, err := r.c.Drain(ctx, &ocmv1.DrainRequest{NodeId: a.id, LeaseId: a.lease}); err != nil {
		t.Fatal(err)
	}
	// The events are ordered, so if the heartbeats had produced any they
	// would come before these.
	wantDrainPut := func(what string, w ocmv1.OCMService_WatchStreamsClient, name string) {
		t.Helper()
		ev, err := w.Recv()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		st := ev.GetStream()
		if ev.Type != ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT || st.GetKey().GetName() != name {
			t.Fatalf("%s: got %v, want a PUT of %s", what, ev, name)
		}
		if st.GetOwnerNodeId() != a.id || st.GetEpoch() != claimed[name].Epoch {
			t.Fatalf("%s: stream %v, want the unchanged record (owner a, epoch %d)", what, st, claimed[name].Epoch)
		}
		if ev.GetOwner().GetId() != a.id || ev.GetOwner().GetState() != ocmv1.NodeState_NODE_STATE_DRAINING {
			t.Fatalf("%s: owner %v, want a DRAINING", what, ev.GetOwner())
		}
		if ev.GetOwner().GetLoad().GetStreams() != 4 {
			t.Fatalf("%s: owner load %v, want the last heartbeat's", what, ev.GetOwner().GetLoad())
		}
		if ev.Revision <= st.GetEpoch() {
			t.Fatalf("%s: revision %d not after the claim %d", what, ev.Revision, st.GetEpoch())
		}
	}
	wantDrainPut("keyed watch", keyed, "s1")
	t.Logf("keyed watcher saw the drain %v after the Drain call started", time.Since(drainAt))
	wantDrainPut("watch of all, first", all, "s1")
	wantDrainPut("watch of all, second", all, "s2")

	// Nothing else was sent: not for s2 to the keyed watcher, not for b's
	// stream, not for heartbeats of the draining node.
	heartbeat(a, 7)
	heartbeat(b, 7)
	if _, err := r.c.Drain(ctx, &ocmv1.DrainRequest{NodeId: a.id, LeaseId: a.lease}); err != nil {
		t.Fatal(err) // idempotent: no state change, no event
	}
	if _, err := r.c.ReleaseStream(ctx, &ocmv1.ReleaseStreamRequest{NodeId: b.id, LeaseId: b.lease, Key: key("s3"), Epoch: claimed["s3"].Epoch}); err != nil {
		t.Fatal(err)
	}
	for what, w := range map[string]ocmv1.OCMService_WatchStreamsClient{"keyed watch": keyed, "watch of all": all} {
		ev, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != ocmv1.WatchStreamsResponse_EVENT_TYPE_DELETE || ev.GetStream().GetKey().GetName() != "s3" {
			t.Fatalf("%s: next event after the drain is %v, want the DELETE of s3", what, ev)
		}
	}

	// A new watch's initial state carries the DRAINING owner too.
	w, err := r.c.WatchStreams(ctx, &ocmv1.WatchStreamsRequest{Keys: []*ocmv1.StreamKey{key("s2")}, InitialState: true})
	if err != nil {
		t.Fatal(err)
	}
	init := recvUntilSynced(t, w)
	if len(init) != 1 || init[0].GetOwner().GetState() != ocmv1.NodeState_NODE_STATE_DRAINING {
		t.Fatalf("initial state %v, want s2 with a DRAINING owner", init)
	}
	if !slices.ContainsFunc(init, func(e *ocmv1.WatchStreamsResponse) bool { return e.GetStream().GetKey().GetName() == "s2" }) {
		t.Fatalf("initial state %v lacks s2", init)
	}
}
