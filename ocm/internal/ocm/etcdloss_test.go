package ocm_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/ocm/internal/etcdtest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// ownMember starts an etcd member of the test's own, which it may stop.
func ownMember(t *testing.T) *etcdtest.Member {
	t.Helper()
	m, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m.Server != nil {
			m.Stop()
		}
	})
	return m
}

// With etcd gone (no quorum), a claim fails with UNAVAILABLE naming etcd,
// and before the caller's own deadline, so the caller (an origin, its
// publisher) learns why instead of a bare DEADLINE_EXCEEDED.
func TestClaimWithoutEtcdFailsClearlyBeforeTheDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("stops an etcd member")
	}
	m := ownMember(t)
	r := startReplica(t, m.Endpoints(), newPrefix(t), 10*time.Second)
	s := register(t, r.c, "o1", ocmv1.NodeRole_NODE_ROLE_ORIGIN, "", 0)
	m.Stop()
	m.Server = nil
	const deadline = 3 * time.Second
	t0 := time.Now()
	_, err := claim(ctxT(t, deadline), r.c, s, key("gone"))
	took := time.Since(t0)
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "etcd") {
		t.Fatalf("claim without etcd: %v; want UNAVAILABLE naming etcd", err)
	}
	if took >= deadline-100*time.Millisecond {
		t.Errorf("claim answered after %v, want before the caller's deadline (%v)", took, deadline)
	}
	t.Logf("answered in %v: %v", took.Round(time.Millisecond), err)
}

// While etcd elects a leader (the leader of a 3-member cluster crashed),
// a write waits for a leader, or is dropped at once ("raft proposal
// dropped", gRPC code Unknown) when it meets the member just as it loses
// its leader. Claims and releases made then must ride the election out
// within their deadline, not fail. The leaderless window is held open
// here by stopping two of three members (the one left steps down: no
// quorum) for longer than commit's first attempt, and closed by starting
// one again, so every call below begins while no member has a leader.
func TestWritesRideOutALeaderlessEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-member etcd and stops members")
	}
	ms, err := etcdtest.StartCluster(ctxT(t, 60*time.Second), t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.Stop()
		}
	})
	// A long TTL: nothing heartbeats this session.
	r := startReplica(t, etcdtest.ClusterEndpoints(ms), newPrefix(t), time.Minute)
	s := register(t, r.c, "o1", ocmv1.NodeRole_NODE_ROLE_ORIGIN, "", 0)
	before, err := claim(ctxT(t, 5*time.Second), r.c, s, key("before"))
	if err != nil {
		t.Fatalf("claim with every member up: %v", err)
	}

	// Keep the leader, stop the other two: the leader steps down once it
	// misses a quorum for an election timeout.
	left := ms[0]
	for _, m := range ms {
		if l, self := m.Leader(); l == self {
			left = m
		}
	}
	var stopped []*etcdtest.ClusterMember
	for _, m := range ms {
		if m != left {
			m.Stop()
			stopped = append(stopped, m)
		}
	}
	eventually(t, 15*time.Second, "the member left to have no leader", func() bool {
		l, _ := left.Leader()
		return l == 0
	})

	ctx := ctxT(t, 8*time.Second)
	t0 := time.Now()
	type result struct {
		what string
		err  error
		took time.Duration
	}
	done := make(chan result, 2)
	go func() {
		_, err := claim(ctx, r.c, s, key("during"))
		done <- result{"claim", err, time.Since(t0)}
	}()
	go func() {
		_, err := r.c.ReleaseStream(ctx, &ocmv1.ReleaseStreamRequest{NodeId: s.id, LeaseId: s.lease, Key: key("before"), Epoch: before.Epoch})
		done <- result{"release", err, time.Since(t0)}
	}()
	// Longer than commit's first attempt (a third of the ~5 s budget):
	// the calls must be tried again, not given up.
	time.Sleep(2 * time.Second)
	if l, _ := left.Leader(); l != 0 {
		t.Fatalf("the member left got a leader (%x) without a quorum", l)
	}
	if err := stopped[0].Restart(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		res := <-done
		if res.err != nil {
			t.Errorf("%s begun while etcd had no leader: %v (after %v); want it to succeed once a leader is elected", res.what, res.err, res.took.Round(time.Millisecond))
			continue
		}
		if res.took < 2*time.Second {
			t.Errorf("%s succeeded after %v, before a leader could be elected: the window was not leaderless", res.what, res.took)
		}
		t.Logf("%s succeeded after %v", res.what, res.took.Round(time.Millisecond))
	}
	// Each applied once: the stream claimed during the election is ours,
	// the released one is free.
	_, err = claim(ctxT(t, 5*time.Second), r.c, s, key("during"))
	wantCode(t, err, codes.AlreadyExists, "claim again of the stream claimed during the election")
	if _, err := claim(ctxT(t, 5*time.Second), r.c, s, key("before")); err != nil {
		t.Errorf("claim of the stream released during the election: %v", err)
	}
}
