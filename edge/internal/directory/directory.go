// Package directory is the edge's view of stream ownership: who owns a
// stream and where to pull it from. It answers from a local cache, asks the
// OCM (LookupStream) on a miss, and keeps the streams the edge serves fresh
// with one WatchStreams call per edge over exactly the keys being served,
// re-established with backoff (and whenever that key set changes).
//
// A cached owner older than FreshFor is served at once while one
// background lookup per key refreshes it (stale-while-revalidate), so an OCM
// that is unreachable, or blackholed and answering nothing until the call
// times out, never makes a player wait for a stream the cache knows;
// concurrent lookups of one key share one OCM call (singleflight). A stream
// the cache has never seen fails with ErrUnavailable once the caller's
// context ends, after retries with backoff. The cache of unwatched keys is
// bounded (MaxEntries), evicting the least recently used in O(1).
package directory

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/livecluster/livecluster/node/backoff"
	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

var (
	// ErrNotFound: the OCM says nobody owns the stream.
	ErrNotFound = errors.New("stream is not published")
	// ErrUnavailable: the OCM could not be reached and nothing is cached.
	ErrUnavailable = errors.New("OCM unreachable and the stream's owner is not cached")
)

// Owner is where a stream is served from.
type Owner struct {
	NodeID string
	Epoch  int64
	// RTMP and HTTP are the owner's advertised "host:port" addresses; empty
	// when an event came without the node record.
	RTMP, HTTP  string
	State       ocmv1.NodeState
	PublishPath ocmv1.PublishPath
	ForwardedBy string
}

// Same reports whether o and p are the same ownership (node and epoch).
func (o *Owner) Same(p *Owner) bool {
	if o == nil || p == nil {
		return o == p
	}
	return o.NodeID == p.NodeID && o.Epoch == p.Epoch
}

func (o *Owner) complete() bool { return o != nil && o.RTMP != "" && o.HTTP != "" }

func (o *Owner) String() string {
	if o == nil {
		return "<none>"
	}
	return fmt.Sprintf("%s@%d", o.NodeID, o.Epoch)
}

func ownerOf(st *ocmv1.Stream, n *ocmv1.Node) *Owner {
	o := &Owner{
		NodeID: st.GetOwnerNodeId(), Epoch: st.GetEpoch(),
		PublishPath: st.GetPublishPath(), ForwardedBy: st.GetForwardedBy(),
	}
	if n != nil && n.GetId() == o.NodeID {
		o.RTMP, o.HTTP, o.State = n.GetAddresses().GetRtmp(), n.GetAddresses().GetHttp(), n.GetState()
	}
	return o
}

// Options configure a Directory.
type Options struct {
	// OCM answers lookups and the watch (typed errors; the watch's
	// resubscription and its backoff live there).
	OCM    *ocmclient.Client
	Logger *slog.Logger
	// FreshFor is how long an owner looked up for a key nobody watches is
	// trusted without asking again (2 s).
	FreshFor time.Duration
	// MaxEntries bounds the cache of unwatched keys (10000).
	MaxEntries int
	// CallTimeout bounds each OCM call (3 s).
	CallTimeout time.Duration
	// MinBackoff, MaxBackoff bound retries (100 ms, 5 s).
	MinBackoff, MaxBackoff time.Duration
	// Debounce delays a watch restart after the key set changed (50 ms).
	Debounce time.Duration
	// OnWatchState, if set, is told when the watch goes up (true) or down.
	OnWatchState func(up bool)
	// OnLookup, if set, counts lookups by result: "cache" (fresh),
	// "stale" (a cached owner past FreshFor, served while it is looked up
	// again), and the OCM's answers "ok", "not_found", "error".
	OnLookup func(result string)
}

// Directory caches stream owners. Run must be running for watches.
type Directory struct {
	opts  Options
	log   *slog.Logger
	retry backoff.Policy
	// bg bounds the background lookups (singleflight and refreshes); Close
	// (or the end of Run) cancels them and waits.
	bg       context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup

	mu      sync.Mutex
	entries map[string]*entry
	// lru holds the unwatched entries, most recently used first; watched
	// entries are never evicted and are not in it.
	lru     *list.List
	flights map[string]*flight
	wake    chan struct{}
	watchUp bool
}

// flight is one OCM lookup that every concurrent Lookup of a key waits for.
type flight struct {
	done chan struct{}
	o    *Owner
	err  error
}

type entry struct {
	key     streamkey.Key
	owner   *Owner // nil: not owned (when known)
	known   bool   // owner reflects the OCM at fetched, or the live watch
	fetched time.Time
	subs    map[*Sub]struct{}
	// synced: the live watch covers this key (events keep owner current).
	synced bool
	// elem is the entry's place in the LRU list; nil while watched.
	elem *list.Element
}

// New returns a Directory.
func New(opts Options) *Directory {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.FreshFor <= 0 {
		opts.FreshFor = 2 * time.Second
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 10000
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 3 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Second, opts.MinBackoff)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	bg, cancel := context.WithCancel(context.Background())
	return &Directory{
		opts: opts, log: opts.Logger.With("component", "directory"),
		retry: backoff.Policy{Min: opts.MinBackoff, Max: opts.MaxBackoff},
		bg:    bg, bgCancel: cancel,
		entries: map[string]*entry{}, lru: list.New(), flights: map[string]*flight{},
		wake: make(chan struct{}, 1),
	}
}

// Close cancels the background lookups and waits for them. Run calls it
// when it returns; a Directory whose Run is not used must be closed.
func (d *Directory) Close() {
	d.bgCancel()
	d.bgWG.Wait()
}

// Sub is a subscription to one key's owner changes. Subscribing adds the key
// to the edge's watch.
type Sub struct {
	d   *Directory
	key string
	c   chan struct{}
}

// Changed receives (coalesced) when the key's owner changed (node, epoch
// or the owner's state); read the new one with Owner.
func (s *Sub) Changed() <-chan struct{} { return s.c }

// Owner returns the cached owner; ok is false when the cache does not know
// (never looked up, or the stream is not owned).
func (s *Sub) Owner() (*Owner, bool) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	e := s.d.entries[s.key]
	if e == nil || e.owner == nil {
		return nil, false
	}
	return e.owner, true
}

// Close ends the subscription; the key leaves the watch when its last
// subscriber leaves.
func (s *Sub) Close() {
	d := s.d
	d.mu.Lock()
	e := d.entries[s.key]
	if e != nil {
		delete(e.subs, s)
		if len(e.subs) == 0 {
			e.synced = false
			e.elem = d.lru.PushFront(e) // evictable again
			d.evictLocked()
			d.kick()
		}
	}
	d.mu.Unlock()
}

// Subscribe watches key: the key joins the edge's watch (Run) and is never
// evicted while subscribed. It does not fail; while the watch is down the
// subscription simply gets no changes.
func (d *Directory) Subscribe(key streamkey.Key) *Sub {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.entryLocked(key)
	s := &Sub{d: d, key: key.String(), c: make(chan struct{}, 1)}
	if len(e.subs) == 0 {
		if e.elem != nil {
			d.lru.Remove(e.elem) // watched: never evicted
			e.elem = nil
		}
		d.kick()
	}
	e.subs[s] = struct{}{}
	return s
}

func (d *Directory) entryLocked(key streamkey.Key) *entry {
	k := key.String()
	e := d.entries[k]
	if e == nil {
		e = &entry{key: key, subs: map[*Sub]struct{}{}}
		e.elem = d.lru.PushFront(e)
		d.entries[k] = e
		d.evictLocked()
	} else if e.elem != nil {
		d.lru.MoveToFront(e.elem)
	}
	return e
}

// evictLocked keeps the unwatched part of the cache within MaxEntries,
// dropping the least recently used entries (O(1) each).
func (d *Directory) evictLocked() {
	for d.lru.Len() > d.opts.MaxEntries {
		e := d.lru.Remove(d.lru.Back()).(*entry)
		e.elem = nil
		delete(d.entries, e.key.String())
	}
}

func (d *Directory) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// setLocked records a new owner for e and notifies subscribers on change:
// a new owner or epoch, or the same owner changing state (the OCM sends a
// PUT when the owner starts DRAINING, so a forward can move off it).
func (d *Directory) setLocked(e *entry, o *Owner) {
	changed := !e.known || !e.owner.Same(o)
	if o != nil && e.owner != nil && e.owner.Same(o) {
		if !o.complete() {
			// An event without the node record must not forget known addresses.
			o.RTMP, o.HTTP, o.State = e.owner.RTMP, e.owner.HTTP, e.owner.State
		} else if o.State != e.owner.State {
			changed = true
		}
	}
	e.owner, e.known, e.fetched = o, true, time.Now()
	if changed {
		for s := range e.subs {
			select {
			case s.c <- struct{}{}:
			default:
			}
		}
	}
}

func (d *Directory) count(result string) {
	if d.opts.OnLookup != nil {
		d.opts.OnLookup(result)
	}
}

// Cached returns the cached owner of key without asking the OCM.
func (d *Directory) Cached(key streamkey.Key) (*Owner, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.entries[key.String()]
	if e == nil || e.owner == nil {
		return nil, false
	}
	return e.owner, true
}

// Lookup returns the owner of key: from the cache when the watch keeps it
// current or it was looked up within FreshFor; a cached owner past FreshFor
// at once, while one background lookup refreshes it (stale-while-
// revalidate); else from the OCM, one call per key however many callers
// wait, retrying transient failures with backoff until ctx ends. Failures:
// ErrNotFound when nobody owns the stream; ErrUnavailable when the OCM
// cannot be reached (or ctx ends first) and the cache has no owner.
func (d *Directory) Lookup(ctx context.Context, key streamkey.Key) (*Owner, error) {
	ks := key.String()
	d.mu.Lock()
	e := d.entries[ks]
	if e != nil && e.elem != nil {
		d.lru.MoveToFront(e.elem)
	}
	if e != nil && e.owner.complete() {
		o, fresh := e.owner, e.synced || time.Since(e.fetched) < d.opts.FreshFor
		d.mu.Unlock()
		if fresh {
			d.count("cache")
		} else {
			// A wrong owner is corrected by the refresh, the next event,
			// or the origin refusing the pull; waiting on the OCM here
			// would make every player wait while it is unreachable.
			d.count("stale")
			d.fetch(key)
		}
		return o, nil
	}
	// The live watch covers the key and says nobody owns it: asking the OCM
	// would only repeat that (players waiting for a publish retry often).
	if e != nil && e.synced && e.known && e.owner == nil {
		d.mu.Unlock()
		d.count("cache")
		return nil, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	d.mu.Unlock()
	var lastErr error
	for attempt := 0; ; attempt++ {
		f := d.fetch(key)
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("look up owner of %s: %w (%v)", key, ErrUnavailable, ctx.Err())
		}
		if f.err == nil || errors.Is(f.err, ErrNotFound) {
			return f.o, f.err
		}
		lastErr = f.err
		// Filled in meanwhile (by the watch): a cached owner beats failing
		// a player.
		if o, ok := d.Cached(key); ok && o.complete() {
			d.count("stale")
			return o, nil
		}
		if !backoff.Sleep(ctx, d.retry.Delay(attempt)) {
			return nil, fmt.Errorf("look up owner of %s: %w (%v)", key, ErrUnavailable, lastErr)
		}
	}
}

// fetch returns the OCM lookup of key in flight, starting one if there is
// none. The lookup is bounded by CallTimeout, not by any one caller's
// context, so a caller that gives up does not fail the others.
func (d *Directory) fetch(key streamkey.Key) *flight {
	ks := key.String()
	d.mu.Lock()
	defer d.mu.Unlock()
	if f := d.flights[ks]; f != nil {
		return f
	}
	f := &flight{done: make(chan struct{})}
	d.flights[ks] = f
	d.bgWG.Add(1)
	go func() {
		defer d.bgWG.Done()
		f.o, f.err = d.lookupOnce(d.bg, key)
		if f.err != nil && !errors.Is(f.err, ErrNotFound) {
			d.log.Warn("OCM lookup failed", "stream", ks, "err", f.err.Error())
		}
		d.mu.Lock()
		delete(d.flights, ks)
		d.mu.Unlock()
		close(f.done)
	}()
	return f
}

func (d *Directory) lookupOnce(ctx context.Context, key streamkey.Key) (*Owner, error) {
	cctx, cancel := context.WithTimeout(ctx, d.opts.CallTimeout)
	st, node, err := d.opts.OCM.Lookup(cctx, key)
	cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case err == nil:
		d.count("ok")
		o := ownerOf(st, node)
		e := d.entryLocked(key)
		if e.synced && e.known && e.owner != nil && e.owner.Epoch > o.Epoch {
			return e.owner, nil // the watch already knows better
		}
		d.setLocked(e, o)
		return o, nil
	case errors.Is(err, ocmclient.ErrNotFound):
		d.count("not_found")
		e := d.entryLocked(key)
		if !e.synced {
			d.setLocked(e, nil)
		}
		return nil, fmt.Errorf("%s: %w", key, ErrNotFound)
	default:
		d.count("error")
		return nil, fmt.Errorf("look up owner of %s: %w", key, err)
	}
}

// WaitOwner returns the owner of key, waiting until ctx ends for the stream
// to be published (watched with sub, which must be subscribed to key).
// Failures: ErrNotFound (wrapped) when ctx ends before a publish;
// ErrUnavailable when the OCM cannot be reached and nothing is cached.
func (d *Directory) WaitOwner(ctx context.Context, sub *Sub, key streamkey.Key) (*Owner, error) {
	for {
		o, err := d.Lookup(ctx, key)
		if err == nil {
			return o, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-sub.Changed():
		}
	}
}

// WatchUp reports whether the watch stream is established.
func (d *Directory) WatchUp() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.watchUp
}

func (d *Directory) watchedKeys() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var keys []string
	for k, e := range d.entries {
		if len(e.subs) > 0 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// Run keeps the watch over the subscribed keys until ctx ends: one
// WatchStreams call over exactly the keys being served, restarted when that
// set changes; ocmclient's Watch re-establishes it with backoff when the
// OCM is unreachable.
func (d *Directory) Run(ctx context.Context) {
	defer d.Close()
	for ctx.Err() == nil {
		keys := d.watchedKeys()
		if len(keys) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-d.wake:
			}
			continue
		}
		d.watch(ctx, keys)
	}
}

// watch keeps one watch over keys until ctx ends or the set of watched keys
// changes (after a short debounce, so a burst of new players costs one
// restart).
func (d *Directory) watch(ctx context.Context, keys []string) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var restarter sync.WaitGroup
	defer restarter.Wait()
	restarter.Add(1)
	go func() {
		defer restarter.Done()
		for {
			select {
			case <-wctx.Done():
				return
			case <-d.wake:
			}
			if !backoff.Sleep(wctx, d.opts.Debounce) {
				return
			}
			if !slices.Equal(d.watchedKeys(), keys) {
				cancel()
				return
			}
		}
	}()

	w := ocmclient.Watch{InitialState: true}
	byKey := map[string]bool{}
	d.mu.Lock()
	for _, k := range keys {
		if e := d.entries[k]; e != nil {
			w.Keys = append(w.Keys, e.key)
			byKey[k] = true
		}
	}
	d.mu.Unlock()
	var seen map[string]bool // keys the current stream's initial state named
	synced := false
	w.Begin = func() { seen, synced = map[string]bool{}, false }
	w.Event = func(ev *ocmv1.WatchStreamsResponse) {
		switch ev.GetType() {
		case ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED:
			d.mu.Lock()
			for _, k := range keys {
				e := d.entries[k]
				if e == nil {
					continue
				}
				if !seen[k] {
					d.setLocked(e, nil) // gone while we were not watching
				}
				e.synced = len(e.subs) > 0
			}
			d.watchUp = true
			d.mu.Unlock()
			synced = true
			if d.opts.OnWatchState != nil {
				d.opts.OnWatchState(true)
			}
			d.log.Debug("stream watch established", "keys", len(keys))
		case ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT, ocmv1.WatchStreamsResponse_EVENT_TYPE_DELETE:
			st := ev.GetStream()
			k, kerr := st.GetKey().Key()
			if kerr != nil {
				return
			}
			ks := k.String()
			if !byKey[ks] {
				return
			}
			if !synced {
				seen[ks] = true
			}
			d.mu.Lock()
			if e := d.entries[ks]; e != nil {
				if ev.GetType() == ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT {
					o := ownerOf(st, ev.GetOwner())
					if !(e.known && e.owner != nil && e.owner.Epoch > o.Epoch) {
						d.setLocked(e, o)
					}
				} else if e.owner == nil || e.owner.Epoch <= st.GetEpoch() {
					d.setLocked(e, nil)
				}
			}
			d.mu.Unlock()
		}
	}
	w.End = func(err error, retryIn time.Duration, failures int) {
		d.down(keys)
		lvl := slog.LevelWarn
		if failures == 1 {
			lvl = slog.LevelInfo
		}
		d.log.Log(ctx, lvl, "stream watch ended; re-establishing", "err", err.Error(),
			"keys", len(keys), "retry_in", retryIn.String(), "failures", failures)
	}
	d.opts.OCM.Watch(wctx, w)
	d.down(keys)
}

// down records that the watch over keys is not established: their cached
// owners are no longer kept current by events.
func (d *Directory) down(keys []string) {
	d.mu.Lock()
	d.watchUp = false
	for _, k := range keys {
		if e := d.entries[k]; e != nil {
			e.synced = false
		}
	}
	d.mu.Unlock()
	if d.opts.OnWatchState != nil {
		d.opts.OnWatchState(false)
	}
}
