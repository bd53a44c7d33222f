package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livecluster/livecluster/ocm/internal/etcdtest"
	"github.com/livecluster/livecluster/ocm/internal/store"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
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

func putStream(t *testing.T, sc store.Schema, name, owner string) int64 {
	t.Helper()
	k := streamkey.Key{Vhost: "default", App: "live", Name: name}
	b, _ := proto.Marshal(&ocmv1.Stream{Key: ocmv1.NewStreamKey(k), OwnerNodeId: owner})
	r, err := cli.Put(context.Background(), sc.StreamKey(k), string(b))
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

func TestCompactionTriggersResync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sc := store.Schema{Prefix: "/compact/"}
	putStream(t, sc, "gone", "n1")
	putStream(t, sc, "kept", "n1")
	c := New(cli, sc, Options{})
	rev, err := c.resync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sub, _, _ := c.Subscribe(nil, false, 16)
	defer sub.Close()
	// Change things while no watch runs, then compact that history away:
	// the watch from rev+1 must fail and the re-read must produce the diff.
	if _, err := cli.Delete(ctx, sc.StreamKey(streamkey.Key{Vhost: "default", App: "live", Name: "gone"})); err != nil {
		t.Fatal(err)
	}
	last := putStream(t, sc, "new", "n2")
	if _, err := cli.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	reason := c.follow(ctx, rev)
	if want := fmt.Sprintf("compacted at revision %d", last); reason != want {
		t.Fatalf("follow ended with %q, want %q", reason, want)
	}
	if _, err := c.resync(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]ocmv1.WatchStreamsResponse_EventType{}
	for len(got) < 2 {
		select {
		case <-sub.Ready():
			for _, ev := range sub.Take(nil) {
				got[ev.Stream.Key.Name] = ev.Type
			}
		case <-ctx.Done():
			t.Fatalf("events after resync: %v", got)
		}
	}
	if got["gone"] != EventDelete || got["new"] != EventPut {
		t.Fatalf("resync events %v, want DELETE gone and PUT new", got)
	}
	if evs := sub.Take(nil); len(evs) > 0 {
		t.Fatalf("unchanged stream re-announced: %v", evs)
	}
	if _, _, ok := c.Stream("default/live/gone"); ok {
		t.Fatal("deleted stream still cached")
	}
	if st, _, ok := c.Stream("default/live/new"); !ok || st.OwnerNodeId != "n2" {
		t.Fatal("new stream not cached")
	}

	// And Run itself recovers from a compaction under a live watch: it
	// follows, sees later writes and its revision keeps up.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	r2 := putStream(t, sc, "later", "n3")
	if err := c.WaitRevision(ctx, r2); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := c.Stream("default/live/later"); !ok {
		t.Fatal("write after resync not seen")
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

func TestSlowSubscriberIsDropped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sc := store.Schema{Prefix: "/slow/"}
	c := New(cli, sc, Options{})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = c.Run(runCtx) }()
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	slow, _, _ := c.Subscribe(nil, false, 2)
	defer slow.Close()
	fast, _, _ := c.Subscribe([]string{"default/live/s9"}, false, 2)
	defer fast.Close()
	var last int64
	for i := range 10 {
		last = putStream(t, sc, fmt.Sprintf("s%d", i), "n1")
	}
	if err := c.WaitRevision(ctx, last); err != nil {
		t.Fatal(err)
	}
	select {
	case <-slow.Done():
	case <-ctx.Done():
		t.Fatal("slow subscriber not dropped")
	}
	if !errors.Is(slow.Err(), ErrSlowSubscriber) {
		t.Fatalf("err %v", slow.Err())
	}
	// A subscriber filtered to one key is not affected by the others' churn.
	select {
	case <-fast.Ready():
		if evs := fast.Take(nil); len(evs) != 1 || evs[0].Stream.Key.Name != "s9" {
			t.Fatalf("filtered subscriber got %v", evs)
		}
	case <-fast.Done():
		t.Fatal("filtered subscriber dropped")
	}
	if c.Subscribers() != 1 {
		t.Fatalf("%d subscribers, want 1", c.Subscribers())
	}
	_, _, total := c.List("", 3, Filter{})
	page, next, _ := c.List("", 3, Filter{})
	if total != 10 || len(page) != 3 || next != "default/live/s2" {
		t.Fatalf("list: total %d page %d next %q", total, len(page), next)
	}
}

// The cache keeps a compact form of each record and rebuilds messages on
// demand: every field must survive, whichever way the record is read.
func TestCompactRecordRoundTrip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc := store.Schema{Prefix: "/roundtrip/"}
	k := streamkey.Key{Vhost: "v1", App: "live", Name: "cam-1"}
	want := &ocmv1.Stream{Key: ocmv1.NewStreamKey(k), OwnerNodeId: "o7", PublishPath: ocmv1.PublishPath_PUBLISH_PATH_FORWARDED,
		ForwardedBy: "e3", ClaimedAt: &timestamppb.Timestamp{Seconds: 1795000000, Nanos: 123456789}}
	b, _ := proto.Marshal(want)
	r, err := cli.Put(ctx, sc.StreamKey(k), string(b))
	if err != nil {
		t.Fatal(err)
	}
	want.Epoch = r.Header.Revision
	c := New(cli, sc, Options{})
	sub, _, _ := c.Subscribe(nil, false, 4)
	defer sub.Close()
	if _, err := c.resync(ctx); err != nil {
		t.Fatal(err)
	}
	byString, _, ok1 := c.Stream(k.String())
	byKey, _, ok2 := c.StreamOf(k)
	var m StreamMsg
	into, _, ok3 := c.StreamInto(k, &m)
	page, _, _ := c.List("", 10, Filter{Owner: "o7", App: "live", Vhost: "v1"})
	_, initial, _ := c.Subscribe([]string{k.String()}, true, 4)
	evs := sub.Take(nil)
	if len(evs) != 1 {
		t.Fatalf("%d events after the read, want 1", len(evs))
	}
	ev := evs[0]
	if !ok1 || !ok2 || !ok3 || len(page) != 1 || len(initial) != 1 {
		t.Fatalf("stream not found: Stream %v, StreamOf %v, StreamInto %v, List %d, initial %d", ok1, ok2, ok3, len(page), len(initial))
	}
	for what, got := range map[string]*ocmv1.Stream{"Stream": byString, "StreamOf": byKey, "StreamInto": into, "List": page[0], "initial": initial[0].Stream, "event": ev.Stream} {
		if !proto.Equal(got, want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	if _, _, ok := c.StreamOf(streamkey.Key{Vhost: "v1", App: "live", Name: "cam-2"}); ok {
		t.Error("StreamOf found a stream that does not exist")
	}
}

func putNode(t *testing.T, sc store.Schema, id string, state ocmv1.NodeState, streams uint32) int64 {
	t.Helper()
	b, _ := proto.Marshal(&ocmv1.Node{Id: id, Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN, State: state, Load: &ocmv1.Load{Streams: streams}})
	r, err := cli.Put(context.Background(), sc.NodeKey(id), string(b))
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

// A drain that happened while the watch was broken is announced by the
// re-read like a live one; a load-only change is not.
func TestResyncAnnouncesOwnerStateChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sc := store.Schema{Prefix: "/restate/"}
	putNode(t, sc, "n1", ocmv1.NodeState_NODE_STATE_READY, 0)
	putNode(t, sc, "n2", ocmv1.NodeState_NODE_STATE_READY, 0)
	putStream(t, sc, "a", "n1")
	putStream(t, sc, "b", "n2")
	c := New(cli, sc, Options{})
	if _, err := c.resync(ctx); err != nil {
		t.Fatal(err)
	}
	all, _, _ := c.Subscribe(nil, false, 16)
	defer all.Close()
	keyed, _, _ := c.Subscribe([]string{"default/live/b"}, false, 16)
	defer keyed.Close()
	putNode(t, sc, "n1", ocmv1.NodeState_NODE_STATE_DRAINING, 1)
	rev := putNode(t, sc, "n2", ocmv1.NodeState_NODE_STATE_READY, 5) // load only
	if got, err := c.resync(ctx); err != nil || got < rev {
		t.Fatalf("resync = %d, %v", got, err)
	}
	evs := all.Take(nil)
	if len(evs) != 1 {
		t.Fatalf("events %v, want one for the drained owner's stream", evs)
	}
	if ev := evs[0]; ev.Type != EventPut || ev.Stream.Key.Name != "a" || ev.Owner.GetState() != ocmv1.NodeState_NODE_STATE_DRAINING {
		t.Fatalf("event %v, want PUT a with a DRAINING owner", ev)
	}
	for what, s := range map[string]*Subscription{"all": all, "keyed": keyed} {
		if evs := s.Take(nil); len(evs) > 0 {
			t.Fatalf("%s: unexpected events %v", what, evs)
		}
	}
}

// A subscriber that does not take its changes is told the latest state of
// each stream it watches, once, however many changes it missed: its queue
// stays at one entry per stream (so it is never dropped however slow it is,
// when it watches no more streams than its bound) and a subscriber that
// keeps up is told every change meanwhile.
func TestSlowSubscriberCoalescesAndDelaysNobody(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc := store.Schema{Prefix: "/coalesce/"}
	c := New(cli, sc, Options{})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = c.Run(runCtx) }()
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	keys := []string{"default/live/a", "default/live/b"}
	slow, _, _ := c.Subscribe(keys, false, len(keys)) // bound: exactly its keys
	defer slow.Close()
	fast, _, _ := c.Subscribe(keys, false, len(keys))
	defer fast.Close()
	ka := streamkey.Key{Vhost: "default", App: "live", Name: "a"}
	var fastSeen []Event
	take := func(rev int64) {
		t.Helper()
		for {
			select {
			case <-fast.Ready():
				fastSeen = fast.Take(fastSeen)
				if fastSeen[len(fastSeen)-1].Revision >= rev {
					return
				}
			case <-fast.Done():
				t.Fatal("the subscriber that keeps up was dropped")
			case <-ctx.Done():
				t.Fatalf("subscriber that keeps up: change at revision %d not told (%d told)", rev, len(fastSeen))
			}
		}
	}
	const rounds = 20
	var last int64
	for i := range rounds {
		take(putStream(t, sc, "a", fmt.Sprintf("n%d", i)))
		r, err := cli.Delete(ctx, sc.StreamKey(ka))
		if err != nil {
			t.Fatal(err)
		}
		take(r.Header.Revision)
	}
	take(putStream(t, sc, "b", "nb"))
	last = putStream(t, sc, "a", "final")
	take(last)
	if len(fastSeen) != 2*rounds+2 {
		t.Fatalf("the subscriber that keeps up was told %d changes, want %d", len(fastSeen), 2*rounds+2)
	}
	select {
	case <-slow.Done():
		t.Fatalf("slow subscriber dropped: %v", slow.Err())
	default:
	}
	got := slow.Take(nil)
	if len(got) != 2 {
		t.Fatalf("slow subscriber has %d changes waiting, want one per stream (2): %v", len(got), got)
	}
	// In the order the streams first changed, each at its latest state.
	if got[0].Type != EventPut || got[0].Stream.Key.Name != "a" || got[0].Stream.OwnerNodeId != "final" || got[0].Revision != last {
		t.Errorf("a: %v, want its last PUT (owner final, revision %d)", got[0], last)
	}
	if got[1].Type != EventPut || got[1].Stream.Key.Name != "b" || got[1].Stream.OwnerNodeId != "nb" {
		t.Errorf("b: %v, want PUT owned by nb", got[1])
	}
	if evs := slow.Take(nil); len(evs) != 0 {
		t.Fatalf("Take left %d changes", len(evs))
	}
	// A DELETE replaces a waiting PUT: the latest state is "gone".
	putStream(t, sc, "b", "nb2")
	r, err := cli.Delete(ctx, sc.StreamKey(streamkey.Key{Vhost: "default", App: "live", Name: "b"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRevision(ctx, r.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if got := slow.Take(nil); len(got) != 1 || got[0].Type != EventDelete || got[0].Stream.Key.Name != "b" {
		t.Fatalf("after PUT then DELETE of b: %v, want one DELETE", got)
	}
}
