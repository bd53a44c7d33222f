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
