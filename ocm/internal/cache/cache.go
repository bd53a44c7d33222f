// Package cache keeps an OCM replica's in-memory copy of nodes and streams,
// fed by one etcd watch over the prefix, and fans stream changes out to
// subscribers. Lookups, listings and placement read only this copy.
//
// Records handed out by the cache are shared and must not be modified.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livecluster/livecluster/ocm/internal/store"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

// Event types, as in the API.
const (
	EventPut    = ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT
	EventDelete = ocmv1.WatchStreamsResponse_EVENT_TYPE_DELETE
)

// Event is one stream change.
type Event struct {
	Type     ocmv1.WatchStreamsResponse_EventType
	Stream   *ocmv1.Stream // for DELETE the last known record
	Owner    *ocmv1.Node   // for PUT the owner's record when known
	Revision int64
}

// ErrSlowSubscriber ends a subscription with more streams changed and not
// yet taken than its bound.
var ErrSlowSubscriber = errors.New("watch subscriber fell behind: too many streams with changes it has not taken")

// Options configure a Cache.
type Options struct {
	Logger *slog.Logger
	// OnResync, if set, is called after every full re-read (not the first).
	OnResync func(reason string)
}

// Cache is the in-memory copy. Run feeds it.
type Cache struct {
	cli      *clientv3.Client
	schema   store.Schema
	log      *slog.Logger
	onResync func(string)

	mu      sync.RWMutex
	nodes   map[string]*ocmv1.Node
	streams map[string]*streamRec // by "vhost/app/name"
	counts  map[string]int        // owner id -> owned streams
	rev     int64
	synced  bool
	revCh   chan struct{} // closed and replaced whenever rev advances or synced changes
	subs    map[*Subscription]struct{}
	// A change is offered only to the subscribers that watch its key (byKey)
	// and to those that watch everything (all), so that its cost under mu
	// does not grow with the number of subscribers: with 500 edges watching
	// 200 keys each, scanning every subscription per change was a sixth of
	// the OCM's CPU and held every lookup back while it ran.
	byKey map[string][]*Subscription
	all   map[*Subscription]struct{}

	// sorted holds every stream key in order, possibly with keys deleted
	// since (skipped on read); new keys set dirty and the next listing
	// rebuilds it, so a burst of claims costs one sort, not one insert each.
	sortMu sync.Mutex
	sorted []string
	dirty  atomic.Bool
}

// New returns an empty cache for the schema's prefix.
func New(cli *clientv3.Client, schema store.Schema, o Options) *Cache {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.OnResync == nil {
		o.OnResync = func(string) {}
	}
	return &Cache{
		cli: cli, schema: schema, log: o.Logger, onResync: o.OnResync,
		nodes: map[string]*ocmv1.Node{}, streams: map[string]*streamRec{}, counts: map[string]int{},
		revCh: make(chan struct{}), subs: map[*Subscription]struct{}{},
		byKey: map[string][]*Subscription{}, all: map[*Subscription]struct{}{},
	}
}

// Run reads the prefix, then follows it with one watch until ctx ends. On a
// compaction or a broken watch it re-reads and emits the difference. It
// returns ctx.Err().
func (c *Cache) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	first := true
	reason := ""
	for ctx.Err() == nil {
		rev, err := c.resync(ctx)
		if err != nil {
			c.log.Warn("ocm cache: read failed", "err", err, "retry_in", backoff)
			c.setSynced(false)
			if !sleep(ctx, backoff) {
				break
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		if !first {
			c.log.Info("ocm cache: resynced", "reason", reason, "revision", rev)
			c.onResync(reason)
		}
		first = false
		backoff = 100 * time.Millisecond
		reason = c.follow(ctx, rev)
	}
	return ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// follow applies watch events after rev until the watch breaks, and says why.
func (c *Cache) follow(ctx context.Context, rev int64) string {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := c.cli.Watch(clientv3.WithRequireLeader(wctx), c.schema.Prefix, clientv3.WithPrefix(),
		clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	for wr := range wch {
		if wr.CompactRevision != 0 {
			return fmt.Sprintf("compacted at revision %d", wr.CompactRevision)
		}
		if err := wr.Err(); err != nil {
			return "watch error: " + err.Error()
		}
		if wr.Canceled {
			return "watch canceled"
		}
		c.apply(wr.Events, wr.IsProgressNotify(), wr.Header.Revision)
	}
	if ctx.Err() != nil {
		return "stopped"
	}
	return "watch closed"
}

func (c *Cache) apply(evs []*clientv3.Event, progress bool, headerRev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	newRev := c.rev
	for _, ev := range evs {
		kv := ev.Kv
		kind, id := c.schema.Classify(string(kv.Key))
		switch kind {
		case store.KindNode:
			if ev.Type == clientv3.EventTypeDelete {
				delete(c.nodes, id)
			} else if n, err := store.DecodeNode(kv); err == nil {
				old, had := c.nodes[id]
				c.nodes[id] = n
				if had && old.State != n.State {
					c.ownerStateLocked(n, kv.ModRevision)
				}
			} else {
				c.log.Warn("ocm cache: bad node record", "key", string(kv.Key), "err", err)
			}
		case store.KindStream:
			if ev.Type == clientv3.EventTypeDelete {
				c.delStreamLocked(id, kv.ModRevision)
			} else if st, err := store.DecodeStream(kv); err == nil {
				c.putStreamLocked(c.compact(id, st), kv.ModRevision)
			} else {
				c.log.Warn("ocm cache: bad stream record", "key", string(kv.Key), "err", err)
			}
		}
		newRev = max(newRev, kv.ModRevision)
	}
	if progress {
		newRev = max(newRev, headerRev)
	}
	c.advanceLocked(newRev, true)
}

func (c *Cache) advanceLocked(rev int64, synced bool) {
	if rev != c.rev || synced != c.synced {
		c.rev = rev
		c.synced = synced
		close(c.revCh)
		c.revCh = make(chan struct{})
	}
}

func (c *Cache) setSynced(v bool) {
	c.mu.Lock()
	c.advanceLocked(c.rev, v)
	c.mu.Unlock()
}

func (c *Cache) putStreamLocked(r *streamRec, rev int64) {
	old, ok := c.streams[r.key]
	if ok {
		c.counts[old.owner]--
		if c.counts[old.owner] <= 0 {
			delete(c.counts, old.owner)
		}
	} else {
		c.dirty.Store(true)
	}
	c.streams[r.key] = r
	c.counts[r.owner]++
	if c.wanted(r.key) {
		c.publishLocked(Event{Type: EventPut, Stream: r.proto(), Owner: c.nodes[r.owner], Revision: rev}, r.key)
	}
}

func (c *Cache) delStreamLocked(id string, rev int64) {
	old, ok := c.streams[id]
	if !ok {
		return
	}
	delete(c.streams, id)
	c.counts[old.owner]--
	if c.counts[old.owner] <= 0 {
		delete(c.counts, old.owner)
	}
	if c.wanted(id) {
		c.publishLocked(Event{Type: EventDelete, Stream: old.proto(), Revision: rev}, id)
	}
}

// ownerStateLocked tells subscribers that the owner of some of their
// streams changed state: one PUT per owned stream they watch, with the
// unchanged stream record and the new node record. It runs only when a
// node's state changes (a drain, not a heartbeat). The cost is one lookup
// per key of each keyed subscriber, plus one pass over the streams when
// someone watches all of them; each event is built once and shared, and a
// subscriber whose buffer fills up is dropped as for any other change.
func (c *Cache) ownerStateLocked(n *ocmv1.Node, rev int64) {
	owned := c.counts[n.Id]
	if owned == 0 || len(c.subs) == 0 {
		return
	}
	built := map[string]Event{}
	var dropped []*Subscription
	evOf := func(k string, r *streamRec) Event {
		ev, ok := built[k]
		if !ok {
			ev = Event{Type: EventPut, Stream: r.proto(), Owner: n, Revision: rev}
			built[k] = ev
		}
		return ev
	}
	var all []Event // every stream of n, in key order, for subscribers to all
	allDone := false
	for s := range c.subs {
		if s.keys != nil {
			for k := range s.keys {
				if r, ok := c.streams[k]; ok && r.owner == n.Id {
					if !c.sendLocked(s, k, evOf(k, r)) {
						dropped = append(dropped, s)
						break
					}
				}
			}
			continue
		}
		if !allDone {
			allDone = true
			keys := make([]string, 0, owned)
			for k, r := range c.streams {
				if r.owner == n.Id {
					keys = append(keys, k)
					if len(keys) == owned {
						break
					}
				}
			}
			sort.Strings(keys)
			all = make([]Event, 0, len(keys))
			for _, k := range keys {
				all = append(all, evOf(k, c.streams[k]))
			}
		}
		for _, ev := range all {
			if !c.sendLocked(s, keyOf(ev.Stream), ev) {
				dropped = append(dropped, s)
				break
			}
		}
	}
	for _, s := range dropped {
		c.removeLocked(s)
	}
}

// wanted reports whether any subscriber watches key, so that changes nobody
// watches do not build a message.
func (c *Cache) wanted(key string) bool {
	return len(c.all) > 0 || len(c.byKey[key]) > 0
}

// resync reads everything under the prefix and replaces the copy, emitting
// PUT for new or changed streams and DELETE for vanished ones (on the first
// read there is no subscriber yet). It returns the read revision.
func (c *Cache) resync(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.cli.Get(rctx, c.schema.Prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", c.schema.Prefix, err)
	}
	nodes := map[string]*ocmv1.Node{}
	var decoded []*ocmv1.Stream
	var ids []string
	for _, kv := range resp.Kvs {
		kind, id := c.schema.Classify(string(kv.Key))
		switch kind {
		case store.KindNode:
			if n, err := store.DecodeNode(kv); err == nil {
				nodes[id] = n
			}
		case store.KindStream:
			if st, err := store.DecodeStream(kv); err == nil {
				decoded = append(decoded, st)
				ids = append(ids, id)
			}
		}
	}
	rev := resp.Header.Revision
	c.mu.Lock()
	defer c.mu.Unlock()
	var restated []*ocmv1.Node
	for id, n := range nodes {
		if old, ok := c.nodes[id]; ok && old.State != n.State {
			restated = append(restated, n)
		}
	}
	c.nodes = nodes
	// Compact after the node records are in place so owner ids share them.
	streams := make(map[string]*streamRec, len(decoded))
	for i, st := range decoded {
		streams[ids[i]] = c.compact(ids[i], st)
	}
	for id := range c.streams {
		if _, ok := streams[id]; !ok {
			c.delStreamLocked(id, rev)
		}
	}
	for id, r := range streams {
		if old, ok := c.streams[id]; ok && *old == *r {
			continue
		}
		c.putStreamLocked(r, rev)
	}
	// A drain missed while the watch was broken is told like a live one.
	// (A stream that also changed above is sent twice; both are current.)
	for _, n := range restated {
		c.ownerStateLocked(n, rev)
	}
	c.advanceLocked(rev, true)
	return rev, nil
}

// Synced reports whether the copy has been read and is being followed.
func (c *Cache) Synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.synced
}

// Revision is the etcd revision the copy reflects.
func (c *Cache) Revision() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.rev
}

// WaitRevision waits until the copy reflects rev (so a replica reads its own
// writes) or ctx ends.
func (c *Cache) WaitRevision(ctx context.Context, rev int64) error {
	for {
		c.mu.RLock()
		ok, ch := c.rev >= rev, c.revCh
		c.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitSynced waits until the first read is done or ctx ends.
func (c *Cache) WaitSynced(ctx context.Context) error {
	for {
		c.mu.RLock()
		ok, ch := c.synced, c.revCh
		c.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stream returns a stream's record and its owner's node record (nil when
// unknown).
func (c *Cache) Stream(key string) (*ocmv1.Stream, *ocmv1.Node, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.streams[key]
	if !ok {
		return nil, nil, false
	}
	return r.proto(), c.nodes[r.owner], true
}

// StreamOf is Stream for a validated key, without building the key string
// (one allocation less on the lookup path).
func (c *Cache) StreamOf(k streamkey.Key) (*ocmv1.Stream, *ocmv1.Node, bool) {
	return c.StreamInto(k, nil)
}

// StreamInto is StreamOf building the stream message in m (nil: a new one),
// so that a caller can allocate it together with its response. The owner's
// node record is the cache's own, shared by every response until the node
// record changes (then it is replaced, never modified).
func (c *Cache) StreamInto(k streamkey.Key, m *StreamMsg) (*ocmv1.Stream, *ocmv1.Node, bool) {
	var buf [256]byte
	b := append(append(append(append(append(buf[:0], k.Vhost...), '/'), k.App...), '/'), k.Name...)
	c.mu.RLock()
	r, ok := c.streams[string(b)] // no allocation: the conversion is only a map index
	var owner *ocmv1.Node
	if ok {
		owner = c.nodes[r.owner]
	}
	c.mu.RUnlock()
	if !ok {
		return nil, nil, false
	}
	// r is immutable once in the map (a change replaces it), so the message
	// can be built outside the lock.
	if m == nil {
		m = &StreamMsg{}
	}
	return r.into(m), owner, true
}

// Node returns a node record.
func (c *Cache) Node(id string) (*ocmv1.Node, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n, ok := c.nodes[id]
	return n, ok
}

// Nodes returns the nodes accepted by keep (nil keeps all), ordered by id.
func (c *Cache) Nodes(keep func(*ocmv1.Node) bool) []*ocmv1.Node {
	c.mu.RLock()
	out := make([]*ocmv1.Node, 0, len(c.nodes))
	for _, n := range c.nodes {
		if keep == nil || keep(n) {
			out = append(out, n)
		}
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}

// NodeLoad is a node with the number of streams it owns right now.
type NodeLoad struct {
	Node  *ocmv1.Node
	Owned int
}

// Origins returns every origin node with its owned stream count.
func (c *Cache) Origins() []NodeLoad {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]NodeLoad, 0, len(c.nodes))
	for id, n := range c.nodes {
		if n.Role == ocmv1.NodeRole_NODE_ROLE_ORIGIN {
			out = append(out, NodeLoad{Node: n, Owned: c.counts[id]})
		}
	}
	return out
}

// Counts summarizes the copy for metrics.
type Counts struct {
	Streams int
	// Nodes by role and state.
	Nodes map[[2]int32]int
}

// Counts returns the number of streams and of nodes by role and state.
func (c *Cache) Counts() Counts {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := Counts{Streams: len(c.streams), Nodes: map[[2]int32]int{}}
	for _, n := range c.nodes {
		out.Nodes[[2]int32{int32(n.Role), int32(n.State)}]++
	}
	return out
}

// Filter selects streams in a listing; empty fields match everything.
type Filter struct {
	Owner, App, Vhost string
}

func (f Filter) match(r *streamRec) bool {
	return (f.Owner == "" || r.owner == f.Owner) &&
		(f.App == "" || r.app == f.App) &&
		(f.Vhost == "" || r.vhost == f.Vhost)
}

// List returns up to limit streams matching f whose key sorts after `after`
// (empty: from the start), the key to continue after ("" on the last page)
// and the number of matching streams in all pages.
func (c *Cache) List(after string, limit int, f Filter) ([]*ocmv1.Stream, string, int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	c.sortMu.Lock()
	defer c.sortMu.Unlock()
	if c.dirty.Swap(false) || len(c.sorted) > 2*len(c.streams)+1024 {
		c.sorted = c.sorted[:0]
		for k := range c.streams {
			c.sorted = append(c.sorted, k)
		}
		sort.Strings(c.sorted)
	}
	total := 0
	switch {
	case f == Filter{}:
		total = len(c.streams)
	case f.Owner != "" && f.App == "" && f.Vhost == "":
		total = c.counts[f.Owner]
	default:
		for _, r := range c.streams {
			if f.match(r) {
				total++
			}
		}
	}
	i := 0
	if after != "" {
		i = sort.SearchStrings(c.sorted, after)
		if i < len(c.sorted) && c.sorted[i] == after {
			i++
		}
	}
	var out []*ocmv1.Stream
	next := ""
	for ; i < len(c.sorted); i++ {
		r, ok := c.streams[c.sorted[i]]
		if !ok || !f.match(r) {
			continue
		}
		if len(out) == limit {
			next = keyOf(out[len(out)-1])
			break
		}
		out = append(out, r.proto())
	}
	return out, next, total
}

func keyOf(st *ocmv1.Stream) string { return st.GetKey().KeyString() }

// Subscription receives stream changes. Changes wait in a queue that holds
// at most one entry per stream: a later change of a stream replaces the one
// still waiting (the latest state wins, in the place of the first), so a
// subscriber that takes them slowly is told less often, not later, and its
// queue never holds more entries than it watches streams. Each subscriber
// has its own queue: a slow one delays nobody else. A subscriber to every
// stream is dropped (ErrSlowSubscriber) when more than its bound of streams
// wait; one watching fewer keys than the bound never is.
type Subscription struct {
	c     *Cache
	keys  map[string]struct{} // nil: every stream
	max   int                 // most waiting streams before the drop
	ready chan struct{}       // holds a token while changes wait
	done  chan struct{}
	err   error // under c.mu

	// qmu, not c.mu, guards the queue, so that taking changes never waits
	// for the cache's writer and the writer waits for no reader.
	qmu   sync.Mutex
	queue []queued
	at    map[string]int // key → index in queue
}

type queued struct {
	key string
	ev  Event
}

// Subscribe registers a subscriber for the given keys ("vhost/app/name"; none
// means all); bound is the most streams whose changes may wait untaken
// before the subscriber is dropped (<= 0: 1024). When initial is set it also
// returns the current records of the watched streams, consistent with the
// changes that follow, and the revision they reflect.
func (c *Cache) Subscribe(keys []string, initial bool, bound int) (*Subscription, []Event, int64) {
	if bound <= 0 {
		bound = 1024
	}
	s := &Subscription{c: c, max: bound, ready: make(chan struct{}, 1), done: make(chan struct{}), at: map[string]int{}}
	if len(keys) > 0 {
		s.keys = make(map[string]struct{}, len(keys))
		for _, k := range keys {
			s.keys[k] = struct{}{}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var init []Event
	if initial {
		add := func(r *streamRec) {
			init = append(init, Event{Type: EventPut, Stream: r.proto(), Owner: c.nodes[r.owner], Revision: r.epoch})
		}
		if s.keys != nil {
			for k := range s.keys {
				if r, ok := c.streams[k]; ok {
					add(r)
				}
			}
		} else {
			init = make([]Event, 0, len(c.streams))
			for _, r := range c.streams {
				add(r)
			}
		}
		sort.Slice(init, func(i, j int) bool { return keyOf(init[i].Stream) < keyOf(init[j].Stream) })
	}
	c.subs[s] = struct{}{}
	if s.keys == nil {
		c.all[s] = struct{}{}
	} else {
		for k := range s.keys {
			c.byKey[k] = append(c.byKey[k], s)
		}
	}
	return s, init, c.rev
}

// removeLocked unregisters s (a no-op if it is not registered).
func (c *Cache) removeLocked(s *Subscription) {
	if _, ok := c.subs[s]; !ok {
		return
	}
	delete(c.subs, s)
	if s.keys == nil {
		delete(c.all, s)
		return
	}
	for k := range s.keys {
		l := c.byKey[k]
		for i, x := range l {
			if x == s {
				l[i] = l[len(l)-1]
				l[len(l)-1] = nil
				l = l[:len(l)-1]
				break
			}
		}
		if len(l) == 0 {
			delete(c.byKey, k)
		} else {
			c.byKey[k] = l
		}
	}
}

// publishLocked never blocks: a subscriber over its bound is dropped.
func (c *Cache) publishLocked(ev Event, key string) {
	for s := range c.all {
		if !c.sendLocked(s, key, ev) {
			c.removeLocked(s) // deleting from the map being ranged over is safe
		}
	}
	// Backwards, so that a drop (which moves the last entry into the
	// dropped one's place) never skips an entry not yet visited.
	l := c.byKey[key]
	for i := len(l) - 1; i >= 0; i-- {
		if s := l[i]; !c.sendLocked(s, key, ev) {
			c.removeLocked(s)
		}
	}
}

// sendLocked queues ev for s without blocking, replacing a change of the
// same key still waiting. When s would exceed its bound it marks s dropped
// and returns false; the caller unregisters it.
func (c *Cache) sendLocked(s *Subscription, key string, ev Event) bool {
	s.qmu.Lock()
	if i, ok := s.at[key]; ok {
		s.queue[i].ev = ev
		s.qmu.Unlock()
		return true
	}
	if len(s.queue) >= s.max {
		s.qmu.Unlock()
		s.err = ErrSlowSubscriber
		close(s.done)
		return false
	}
	s.at[key] = len(s.queue)
	s.queue = append(s.queue, queued{key: key, ev: ev})
	s.qmu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default: // a token is already there
	}
	return true
}

// Ready has a value when changes wait; call Take after receiving it.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take appends the waiting changes to dst, in the order their streams first
// changed since the last Take, and empties the queue.
func (s *Subscription) Take(dst []Event) []Event {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	for _, q := range s.queue {
		dst = append(dst, q.ev)
	}
	if cap(s.queue) > 1024 {
		// Do not keep a burst's worth of memory for every subscriber.
		s.queue, s.at = nil, map[string]int{}
	} else {
		clear(s.queue)
		s.queue = s.queue[:0]
		clear(s.at)
	}
	return dst
}

// Done is closed when the subscription was dropped; Err says why.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err is ErrSlowSubscriber after Done is closed.
func (s *Subscription) Err() error {
	s.c.mu.RLock()
	defer s.c.mu.RUnlock()
	return s.err
}

// Close unregisters the subscription.
func (s *Subscription) Close() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.c.removeLocked(s)
}

// Subscribers returns the number of live subscriptions.
func (c *Cache) Subscribers() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.subs)
}

// streamRec is the cache's compact form of a stream record. Holding 100k
// streams as *ocmv1.Stream costs three messages and four or five strings
// each (about 460 bytes with the map entry); this is one object whose key
// parts are substrings of the map key and whose owner id shares the node
// record's string, about a third of that. Messages are built when asked for:
// three small allocations per lookup, which are cheaper for the garbage
// collector than scanning the larger live heap on every cycle.
type streamRec struct {
	key              string // "vhost/app/name"
	vhost, app, name string
	owner            string
	forwardedBy      string
	epoch            int64
	claimedSec       int64
	claimedNanos     int32
	hasClaimedAt     bool
	path             ocmv1.PublishPath
}

// compact turns a decoded record into a streamRec. c.mu must be held (it
// reads the node records to share owner ids).
func (c *Cache) compact(id string, st *ocmv1.Stream) *streamRec {
	id = strings.Clone(id) // do not keep the whole etcd key alive
	r := &streamRec{key: id, owner: st.OwnerNodeId, forwardedBy: st.ForwardedBy, epoch: st.Epoch, path: st.PublishPath}
	k := st.GetKey()
	v, a, n := k.GetVhost(), k.GetApp(), k.GetName()
	if len(id) == len(v)+len(a)+len(n)+2 && id[:len(v)] == v && id[len(v)+1:len(v)+1+len(a)] == a && id[len(v)+len(a)+2:] == n {
		r.vhost, r.app, r.name = id[:len(v)], id[len(v)+1:len(v)+1+len(a)], id[len(v)+len(a)+2:]
	} else {
		r.vhost, r.app, r.name = v, a, n
	}
	if node, ok := c.nodes[r.owner]; ok && node.Id == r.owner {
		r.owner = node.Id
	}
	if ts := st.GetClaimedAt(); ts != nil {
		r.hasClaimedAt, r.claimedSec, r.claimedNanos = true, ts.GetSeconds(), ts.GetNanos()
	}
	return r
}

// StreamMsg holds a Stream message and its two sub-messages, so that they
// are built in one allocation instead of three (or inside a caller's own).
// Its zero value is ready to use; it must not be reused while the message
// built in it is still referenced.
type StreamMsg struct {
	st  ocmv1.Stream
	key ocmv1.StreamKey
	ts  timestamppb.Timestamp
}

// proto builds a fresh message; callers may keep it but must not modify it
// (records handed out by the cache are treated as shared).
func (r *streamRec) proto() *ocmv1.Stream { return r.into(&StreamMsg{}) }

// into builds the message in m.
func (r *streamRec) into(m *StreamMsg) *ocmv1.Stream {
	m.key.Vhost, m.key.App, m.key.Name = r.vhost, r.app, r.name
	m.st.Key = &m.key
	m.st.OwnerNodeId, m.st.Epoch, m.st.PublishPath, m.st.ForwardedBy = r.owner, r.epoch, r.path, r.forwardedBy
	if r.hasClaimedAt {
		m.ts.Seconds, m.ts.Nanos = r.claimedSec, r.claimedNanos
		m.st.ClaimedAt = &m.ts
	}
	return &m.st
}
