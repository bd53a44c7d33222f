package directory

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/node/ocmclient"
	"github.com/livecluster/livecluster/node/ocmclient/ocmtest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

// fakeOCM answers LookupStream from a function, through a real gRPC server
// (ocmtest) and the real ocmclient.
type fakeOCM struct {
	srv    *ocmtest.Server
	oc     *ocmclient.Client
	mu     sync.Mutex
	lookup func() (*ocmv1.LookupStreamResponse, error)
}

func newFake(t *testing.T, lookup func() (*ocmv1.LookupStreamResponse, error)) *fakeOCM {
	f := &fakeOCM{srv: ocmtest.Start(t), lookup: lookup}
	f.srv.OnLookup = func(*ocmv1.LookupStreamRequest) (*ocmv1.LookupStreamResponse, error) {
		f.mu.Lock()
		l := f.lookup
		f.mu.Unlock()
		return l()
	}
	f.oc = f.srv.Client(t, "edge-1", ocmclient.Options{})
	return f
}

func (f *fakeOCM) set(lookup func() (*ocmv1.LookupStreamResponse, error)) {
	f.mu.Lock()
	f.lookup = lookup
	f.mu.Unlock()
}

func (f *fakeOCM) calls() int { return f.srv.Calls("LookupStream") }

func owned(node string, epoch int64) (*ocmv1.LookupStreamResponse, error) {
	return &ocmv1.LookupStreamResponse{
		Stream: &ocmv1.Stream{Key: &ocmv1.StreamKey{Vhost: "default", App: "live", Name: "s"}, OwnerNodeId: node, Epoch: epoch},
		Owner:  &ocmv1.Node{Id: node, Addresses: &ocmv1.NodeAddresses{Rtmp: node + ":1935", Http: node + ":8080"}},
	}, nil
}

func TestLookupCacheAndStaleFallback(t *testing.T) {
	f := newFake(t, func() (*ocmv1.LookupStreamResponse, error) { return owned("o1", 5) })
	d := New(Options{OCM: f.oc, FreshFor: 50 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	k, _ := streamkey.New("", "live", "s")
	ctx := context.Background()
	o, err := d.Lookup(ctx, k)
	if err != nil || o.NodeID != "o1" || o.RTMP != "o1:1935" || o.Epoch != 5 {
		t.Fatalf("lookup: %+v %v", o, err)
	}
	if _, err := d.Lookup(ctx, k); err != nil || f.calls() != 1 {
		t.Fatalf("fresh entry not served from the cache: %d calls, %v", f.calls(), err)
	}
	time.Sleep(60 * time.Millisecond)
	f.set(func() (*ocmv1.LookupStreamResponse, error) { return nil, status.Error(codes.Unavailable, "down") })
	o, err = d.Lookup(ctx, k)
	if err != nil || o.NodeID != "o1" {
		t.Fatalf("OCM down: want the cached owner, got %+v %v", o, err)
	}

	other, _ := streamkey.New("", "live", "other")
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := d.Lookup(cctx, other); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("uncached stream with the OCM down: %v, want ErrUnavailable", err)
	}
	if f.calls() < 3 {
		t.Fatalf("no retries: %d calls", f.calls())
	}

	f.set(func() (*ocmv1.LookupStreamResponse, error) { return nil, status.Error(codes.NotFound, "no") })
	if _, err := d.Lookup(ctx, other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unowned stream: %v", err)
	}
}

func TestSubscribeNotifiesOnOwnerChange(t *testing.T) {
	epoch := atomic.Int64{}
	epoch.Store(1)
	f := newFake(t, func() (*ocmv1.LookupStreamResponse, error) { return owned("o1", epoch.Load()) })
	d := New(Options{OCM: f.oc, FreshFor: time.Nanosecond})
	k, _ := streamkey.New("", "live", "s")
	sub := d.Subscribe(k)
	defer sub.Close()
	if _, err := d.Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	<-sub.Changed() // first known owner
	epoch.Store(2)
	if _, err := d.Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Changed():
	default:
		t.Fatal("no notification for a new epoch")
	}
	if o, ok := sub.Owner(); !ok || o.Epoch != 2 {
		t.Fatalf("owner %+v", o)
	}
	if _, err := d.Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Changed():
		t.Fatal("notified without a change")
	default:
	}
}

func TestSubscribeNotifiesOnOwnerStateChange(t *testing.T) {
	state := atomic.Int32{}
	state.Store(int32(ocmv1.NodeState_NODE_STATE_READY))
	f := newFake(t, func() (*ocmv1.LookupStreamResponse, error) {
		r, err := owned("o1", 3)
		r.Owner.State = ocmv1.NodeState(state.Load())
		return r, err
	})
	d := New(Options{OCM: f.oc, FreshFor: time.Nanosecond})
	k, _ := streamkey.New("", "live", "s")
	sub := d.Subscribe(k)
	defer sub.Close()
	if _, err := d.Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	<-sub.Changed() // first known owner
	state.Store(int32(ocmv1.NodeState_NODE_STATE_DRAINING))
	if _, err := d.Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Changed():
	default:
		t.Fatal("no notification when the owner started DRAINING")
	}
	if o, ok := sub.Owner(); !ok || o.NodeID != "o1" || o.Epoch != 3 || o.State != ocmv1.NodeState_NODE_STATE_DRAINING {
		t.Fatalf("owner %+v, want o1@3 DRAINING", o)
	}
	if _, err := d.Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Changed():
		t.Fatal("notified without a change")
	default:
	}
}
