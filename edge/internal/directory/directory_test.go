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

// results counts the directory's OnLookup results.
type results struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *results) add(s string) {
	r.mu.Lock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[s]++
	r.mu.Unlock()
}

func (r *results) get(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[s]
}

func TestLookupCacheAndStaleFallback(t *testing.T) {
	f := newFake(t, func() (*ocmv1.LookupStreamResponse, error) { return owned("o1", 5) })
	var res results
	d := New(Options{OCM: f.oc, FreshFor: 50 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		OnLookup: res.add})
	defer d.Close()
	k, _ := streamkey.New("", "live", "s")
	ctx := context.Background()
	o, err := d.Lookup(ctx, k)
	if err != nil || o.NodeID != "o1" || o.RTMP != "o1:1935" || o.Epoch != 5 {
		t.Fatalf("lookup: %+v %v", o, err)
	}
	if _, err := d.Lookup(ctx, k); err != nil || f.calls() != 1 || res.get("cache") != 1 {
		t.Fatalf("fresh entry not served from the cache: %d calls, %d cache hits, %v", f.calls(), res.get("cache"), err)
	}
	time.Sleep(60 * time.Millisecond) // past FreshFor
	f.set(func() (*ocmv1.LookupStreamResponse, error) { return nil, status.Error(codes.Unavailable, "down") })
	o, err = d.Lookup(ctx, k)
	if err != nil || o.NodeID != "o1" {
		t.Fatalf("OCM down: want the cached owner, got %+v %v", o, err)
	}
	// The fallback ran: the stale owner was served, the OCM was asked again
	// (and failed), and nothing was forgotten.
	settle(d)
	if res.get("stale") != 1 || f.calls() != 2 || res.get("error") != 1 {
		t.Fatalf("stale %d, OCM calls %d, errors %d; want 1, 2, 1", res.get("stale"), f.calls(), res.get("error"))
	}
	if o, ok := d.Cached(k); !ok || o.NodeID != "o1" {
		t.Fatalf("cached owner lost after a failed refresh: %+v", o)
	}

	other, _ := streamkey.New("", "live", "other")
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := d.Lookup(cctx, other); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("uncached stream with the OCM down: %v, want ErrUnavailable", err)
	}
	if f.calls() < 4 {
		t.Fatalf("no retries: %d calls", f.calls())
	}

	f.set(func() (*ocmv1.LookupStreamResponse, error) { return nil, status.Error(codes.NotFound, "no") })
	if _, err := d.Lookup(ctx, other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unowned stream: %v", err)
	}
}

// TestBlackholedOCMServesStaleAtOnce: the OCM accepts the call and answers
// nothing until the call times out (blackholed). A cached owner is served
// without waiting, and however many players ask, one call is in flight.
func TestBlackholedOCMServesStaleAtOnce(t *testing.T) {
	f := newFake(t, func() (*ocmv1.LookupStreamResponse, error) { return owned("o1", 5) })
	d := New(Options{OCM: f.oc, FreshFor: time.Millisecond, CallTimeout: 3 * time.Second})
	defer d.Close()
	k, _ := streamkey.New("", "live", "s")
	if _, err := d.Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	f.set(func() (*ocmv1.LookupStreamResponse, error) {
		<-release // blackholed until the test ends
		return nil, status.Error(codes.Unavailable, "late")
	})
	defer close(release)
	time.Sleep(5 * time.Millisecond) // past FreshFor
	start := time.Now()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := d.Lookup(context.Background(), k)
			if err != nil || o.NodeID != "o1" {
				t.Errorf("lookup with the OCM blackholed: %+v %v", o, err)
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("20 lookups took %s with a cached owner: they waited for the OCM", took)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.calls() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := f.calls(); n != 2 {
		t.Fatalf("%d OCM calls, want 2 (the first lookup, then one refresh for 20 players)", n)
	}
}

// TestEvictionIsBoundedLRU: past MaxEntries the least recently used
// unwatched key goes; a watched key is never evicted.
func TestEvictionIsBoundedLRU(t *testing.T) {
	f := newFake(t, nil)
	f.set(func() (*ocmv1.LookupStreamResponse, error) { return owned("o1", 1) })
	d := New(Options{OCM: f.oc, MaxEntries: 3})
	defer d.Close()
	key := func(n string) streamkey.Key { k, _ := streamkey.New("", "live", n); return k }
	ctx := context.Background()
	watched := d.Subscribe(key("w"))
	defer watched.Close()
	for _, n := range []string{"a", "b", "c"} {
		if _, err := d.Lookup(ctx, key(n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Lookup(ctx, key("a")); err != nil { // a is now the most recent
		t.Fatal(err)
	}
	for _, n := range []string{"d", "e"} {
		if _, err := d.Lookup(ctx, key(n)); err != nil {
			t.Fatal(err)
		}
	}
	d.mu.Lock()
	_, hasA := d.entries[key("a").String()]
	_, hasB := d.entries[key("b").String()]
	_, hasW := d.entries[key("w").String()]
	n, lru := len(d.entries), d.lru.Len()
	d.mu.Unlock()
	if lru != 3 || n != 4 || !hasA || hasB || !hasW {
		t.Fatalf("%d entries (%d unwatched), a %v b %v w %v; want 4 (3), a and w kept, b evicted", n, lru, hasA, hasB, hasW)
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
	// The cached owner is stale: served at once, refreshed in the background.
	waitChanged(t, sub, "no notification for a new epoch")
	if o, ok := sub.Owner(); !ok || o.Epoch != 2 {
		t.Fatalf("owner %+v", o)
	}
	if _, err := d.Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	settle(d)
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
	waitChanged(t, sub, "no notification when the owner started DRAINING")
	if o, ok := sub.Owner(); !ok || o.NodeID != "o1" || o.Epoch != 3 || o.State != ocmv1.NodeState_NODE_STATE_DRAINING {
		t.Fatalf("owner %+v, want o1@3 DRAINING", o)
	}
	if _, err := d.Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	settle(d)
	select {
	case <-sub.Changed():
		t.Fatal("notified without a change")
	default:
	}
}

// settle waits for the background lookups in flight (tests start none
// concurrently with it).
func settle(d *Directory) { d.bgWG.Wait() }

func waitChanged(t *testing.T, sub *Sub, msg string) {
	t.Helper()
	select {
	case <-sub.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal(msg)
	}
}

func put(node string, epoch int64) *ocmv1.WatchStreamsResponse {
	r, _ := owned(node, epoch)
	return &ocmv1.WatchStreamsResponse{Type: ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT, Stream: r.Stream, Owner: r.Owner}
}

var synced = &ocmv1.WatchStreamsResponse{Type: ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED}

// TestWatchPath: the watch (broken once, then re-established) keeps a
// subscribed key's owner current without lookups: the initial state, a new
// owner, a delete.
func TestWatchPath(t *testing.T) {
	f := newFake(t, func() (*ocmv1.LookupStreamResponse, error) {
		return nil, status.Error(codes.Unavailable, "lookups not expected")
	})
	events := make(chan *ocmv1.WatchStreamsResponse, 10)
	var watches atomic.Int32
	f.srv.OnWatch = func(ctx context.Context, r *ocmv1.WatchStreamsRequest, send func(*ocmv1.WatchStreamsResponse) error) error {
		if watches.Add(1) == 1 {
			return status.Error(codes.Unavailable, "OCM replica shutting down; watch again")
		}
		if len(r.GetKeys()) != 2 || r.GetKeys()[0].KeyString() != "default/live/barrier" || !r.GetInitialState() {
			return status.Error(codes.InvalidArgument, "unexpected request")
		}
		for {
			select {
			case <-ctx.Done():
				return nil
			case ev := <-events:
				if err := send(ev); err != nil {
					return err
				}
			}
		}
	}
	var up atomic.Bool
	d := New(Options{OCM: f.oc, FreshFor: time.Nanosecond, OnWatchState: up.Store})
	k, _ := streamkey.New("", "live", "s")
	// Events are applied in order on one goroutine: a change of the
	// barrier key, once seen, proves every event before it was applied.
	bk, _ := streamkey.New("", "live", "barrier")
	barrier := d.Subscribe(bk)
	defer barrier.Close()
	sub := d.Subscribe(k)
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	events <- put("o1", 5)
	events <- synced
	waitChanged(t, sub, "initial state not applied")
	waitChanged(t, barrier, "barrier not known unowned at SYNCED")
	deadline := time.Now().Add(5 * time.Second)
	// The state flips first and the callback is told just after it: wait
	// for both, or the check below races the callback.
	for !(d.WatchUp() && up.Load()) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if !d.WatchUp() || !up.Load() || watches.Load() != 2 {
		t.Fatalf("watch up %v (reported %v) after %d watches; want up after 2", d.WatchUp(), up.Load(), watches.Load())
	}
	if o, err := d.Lookup(context.Background(), k); err != nil || o.NodeID != "o1" || o.Epoch != 5 {
		t.Fatalf("lookup of a watched key: %+v %v", o, err)
	}

	events <- put("o2", 9)
	waitChanged(t, sub, "new owner not applied")
	if o, ok := sub.Owner(); !ok || o.NodeID != "o2" || o.Epoch != 9 || o.RTMP != "o2:1935" {
		t.Fatalf("owner after PUT: %+v", o)
	}
	// Older ownerships arriving late change nothing.
	events <- put("o1", 5)
	old := put("o1", 5)
	old.Type, old.Owner = ocmv1.WatchStreamsResponse_EVENT_TYPE_DELETE, nil
	events <- old
	b := put("o3", 1)
	b.Stream.Key = ocmv1.NewStreamKey(bk)
	events <- b
	waitChanged(t, barrier, "barrier event not applied")
	if o, ok := sub.Owner(); !ok || o.NodeID != "o2" || o.Epoch != 9 {
		t.Fatalf("owner after late events of an older epoch: %+v, want o2@9", o)
	}
	events <- &ocmv1.WatchStreamsResponse{Type: ocmv1.WatchStreamsResponse_EVENT_TYPE_DELETE, Stream: put("o2", 9).Stream}
	waitChanged(t, sub, "delete not applied")
	if o, ok := sub.Owner(); ok {
		t.Fatalf("owner after DELETE: %+v", o)
	}
	if _, err := d.Lookup(context.Background(), k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup after DELETE: %v, want ErrNotFound from the watch", err)
	}
	if n := f.calls(); n != 0 {
		t.Fatalf("%d LookupStream calls for a watched key", n)
	}
}

// TestWatchInitialStateForgetsGoneStream: an owner cached before the watch
// started, absent from the watch's initial state, is forgotten at SYNCED.
func TestWatchInitialStateForgetsGoneStream(t *testing.T) {
	f := newFake(t, func() (*ocmv1.LookupStreamResponse, error) { return owned("o1", 5) })
	f.srv.OnWatch = func(ctx context.Context, _ *ocmv1.WatchStreamsRequest, send func(*ocmv1.WatchStreamsResponse) error) error {
		if err := send(synced); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}
	d := New(Options{OCM: f.oc})
	k, _ := streamkey.New("", "live", "s")
	if _, err := d.Lookup(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	sub := d.Subscribe(k)
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitChanged(t, sub, "gone stream not forgotten at SYNCED")
	if o, ok := sub.Owner(); ok {
		t.Fatalf("owner %+v survived a watch that does not know it", o)
	}
}
