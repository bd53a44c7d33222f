package ocm_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/ocm/internal/etcdtest"
	"github.com/livecluster/livecluster/ocm/internal/ocm"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// shared is the embedded etcd every test of this package uses, each under
// its own prefix.
var shared *etcdtest.Member

var prefixSeq atomic.Int64

func TestMain(m *testing.M) {
	os.Exit(etcdtest.RunTests(m, func(mem *etcdtest.Member) error {
		shared = mem
		return nil
	}))
}

func newPrefix(t *testing.T) string {
	return fmt.Sprintf("/test-%s-%d/", t.Name(), prefixSeq.Add(1))
}

type replica struct {
	*ocm.OCM
	c ocmv1.OCMServiceClient
}

// startReplica starts an OCM replica on the given etcd endpoints and prefix.
func startReplica(t *testing.T, endpoints []string, prefix string, ttl time.Duration, mod ...func(*ocm.Config)) *replica {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := ocm.Config{Listener: lis, EtcdEndpoints: endpoints, Prefix: prefix, LeaseTTL: ttl, ShutdownTimeout: 5 * time.Second}
	for _, f := range mod {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o, err := ocm.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Stop)
	if err := o.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return &replica{OCM: o, c: ocmv1.NewOCMServiceClient(cc)}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

type session struct {
	id    string
	lease int64
}

func register(t *testing.T, c ocmv1.OCMServiceClient, id string, role ocmv1.NodeRole, zone string, capacity uint32) session {
	t.Helper()
	resp, err := c.Register(ctxT(t, 10*time.Second), &ocmv1.RegisterRequest{Node: &ocmv1.Node{
		Id: id, Role: role, Zone: zone, Capacity: capacity,
		Addresses: &ocmv1.NodeAddresses{Rtmp: id + ":1935", Http: id + ":8080"},
	}})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	return session{id: id, lease: resp.LeaseId}
}

func key(name string) *ocmv1.StreamKey { return &ocmv1.StreamKey{App: "live", Name: name} }

func claim(ctx context.Context, c ocmv1.OCMServiceClient, s session, k *ocmv1.StreamKey) (*ocmv1.Stream, error) {
	resp, err := c.ClaimStream(ctx, &ocmv1.ClaimStreamRequest{NodeId: s.id, LeaseId: s.lease, Key: k})
	return resp.GetStream(), err
}

func wantCode(t *testing.T, err error, want codes.Code, what string) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: got %v (%v), want %v", what, got, err, want)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
