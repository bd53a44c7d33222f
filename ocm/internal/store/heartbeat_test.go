package store

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/ocm/internal/etcdtest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

var cli *clientv3.Client

func TestMain(m *testing.M) {
	os.Exit(etcdtest.RunTests(m, func(mem *etcdtest.Member) error {
		c, err := mem.Client()
		if err != nil {
			return err
		}
		cli = c
		return nil
	}))
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// A heartbeat whose load did not change materially renews the lease and
// leaves the node record (and etcd's revision) alone; a changed stream
// count, a large change of bandwidth or an old record is written; a Drain
// is never undone; a lost session is NotFound.
func TestHeartbeatWritesRecordOnlyWhenItChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clk := &clock{now: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	s := New(cli, Options{Prefix: "/hb/", LeaseTTL: 5 * time.Second, Now: clk.Now, RecordRefresh: 30 * time.Second})
	n, _, err := s.Register(ctx, &ocmv1.Node{Id: "o1", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN, Addresses: &ocmv1.NodeAddresses{Rtmp: "127.0.0.1:1935"}})
	if err != nil {
		t.Fatal(err)
	}
	record := func() (*ocmv1.Node, int64) {
		t.Helper()
		r, err := cli.Get(ctx, s.Schema().NodeKey("o1"))
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("node record: %v, %d keys", err, len(r.Kvs))
		}
		rec, err := DecodeNode(r.Kvs[0])
		if err != nil {
			t.Fatal(err)
		}
		return rec, r.Kvs[0].ModRevision
	}
	known, rev := record()
	beat := func(what string, load *ocmv1.Load, wantWrite bool) {
		t.Helper()
		clk.add(time.Second)
		ttl, state, err := s.Heartbeat(ctx, n.Id, n.LeaseId, load, known)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ttl <= 0 || state != known.GetState() {
			t.Fatalf("%s: ttl %d state %v", what, ttl, state)
		}
		got, r := record()
		if wrote := r != rev; wrote != wantWrite {
			t.Fatalf("%s: record written %v (revision %d → %d), want %v", what, wrote, rev, r, wantWrite)
		}
		known, rev = got, r
	}
	beat("first load", &ocmv1.Load{Streams: 10, IngressBps: 20e6, CpuCores: 0.5, BytesIn: 1000}, true)
	if known.GetLoad().GetStreams() != 10 {
		t.Fatalf("stored load %v", known.GetLoad())
	}
	beat("same load", &ocmv1.Load{Streams: 10, IngressBps: 20e6, CpuCores: 0.5, BytesIn: 1000}, false)
	beat("counters and small moves", &ocmv1.Load{Streams: 10, IngressBps: 21e6, CpuCores: 0.52, BytesIn: 9e9, BytesOut: 5e9}, false)
	beat("no load", nil, false)
	beat("one more stream", &ocmv1.Load{Streams: 11, IngressBps: 20e6, CpuCores: 0.5}, true)
	beat("bandwidth up a half", &ocmv1.Load{Streams: 11, IngressBps: 30e6, CpuCores: 0.5}, true)
	clk.add(30 * time.Second)
	beat("record older than the refresh", &ocmv1.Load{Streams: 11, IngressBps: 30e6, CpuCores: 0.5}, true)
	if !known.GetLastHeartbeatAt().AsTime().Equal(clk.Now()) {
		t.Fatalf("last_heartbeat_at %v, want %v", known.GetLastHeartbeatAt().AsTime(), clk.Now())
	}

	// Without a known record (a replica whose cache has not seen the node)
	// it writes, as before.
	clk.add(time.Second)
	if _, _, err := s.Heartbeat(ctx, n.Id, n.LeaseId, known.GetLoad(), nil); err != nil {
		t.Fatal(err)
	}
	if _, r := record(); r == rev {
		t.Fatal("heartbeat without a known record did not write")
	}

	// A stale READY copy cannot undo a Drain: the renewal writes nothing.
	stale, _ := record()
	if _, _, err := s.Drain(ctx, n.Id, n.LeaseId); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Second)
	if _, _, err := s.Heartbeat(ctx, n.Id, n.LeaseId, stale.GetLoad(), stale); err != nil {
		t.Fatal(err)
	}
	if rec, _ := record(); rec.GetState() != ocmv1.NodeState_NODE_STATE_DRAINING {
		t.Fatalf("state after heartbeat %v, want DRAINING", rec.GetState())
	}

	// The renewal alone still notices a lost session.
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(n.LeaseId)); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Heartbeat(ctx, n.Id, n.LeaseId, stale.GetLoad(), stale)
	if status.Code(err) != codes.NotFound {
		t.Fatalf("heartbeat of a revoked session: %v, want NotFound", err)
	}
}
