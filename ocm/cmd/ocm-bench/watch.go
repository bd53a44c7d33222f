package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// watchOpts shape the watch-propagation phase: watchers edges, each with
// its own connection and one WatchStreams of keysPer keys drawn from the
// first pool streams, while churn claims and releases per second (half
// each: a release and the next owner's claim of the same key) run on
// watched keys for churnFor.
type watchOpts struct {
	watchers, keysPer, pool int
	churn                   int
	churnFor                time.Duration
	churnWorkers            int
	seed                    uint64
}

// pendingOp is one claim or release whose watch events are awaited: t0 is
// when its RPC was sent, left how many interested watchers have not been
// told yet.
type pendingOp struct {
	t0   time.Time
	left int
}

// propagation collects, per claim and per release, the time from sending the
// RPC to each interested watcher receiving the event, and to the last one.
type propagation struct {
	mu       sync.Mutex
	pending  map[pendKey]*pendingOp
	each     []time.Duration // every delivery
	allClaim []time.Duration // claim → last interested watcher told
	allRel   []time.Duration // release → last interested watcher told
	stray    int             // events for keys with no pending op (initial state excluded)
}

type pendKey struct {
	idx int
	typ ocmv1.WatchStreamsResponse_EventType
}

func (p *propagation) expect(idx int, typ ocmv1.WatchStreamsResponse_EventType, watchers int) {
	p.mu.Lock()
	p.pending[pendKey{idx, typ}] = &pendingOp{t0: time.Now(), left: watchers}
	p.mu.Unlock()
}

// drop forgets an op whose RPC failed.
func (p *propagation) drop(idx int, typ ocmv1.WatchStreamsResponse_EventType) {
	p.mu.Lock()
	delete(p.pending, pendKey{idx, typ})
	p.mu.Unlock()
}

func (p *propagation) told(idx int, typ ocmv1.WatchStreamsResponse_EventType, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := pendKey{idx, typ}
	op := p.pending[k]
	if op == nil {
		p.stray++
		return
	}
	d := at.Sub(op.t0)
	p.each = append(p.each, d)
	op.left--
	if op.left > 0 {
		return
	}
	delete(p.pending, k)
	if typ == ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT {
		p.allClaim = append(p.allClaim, d)
	} else {
		p.allRel = append(p.allRel, d)
	}
}

// runWatch measures watch propagation under churn. sess are the registered
// origins, epochs the current epoch of every claimed stream (key i is owned
// by owner[i]); both are updated as keys change hands.
func runWatch(ctx context.Context, o opts, w watchOpts, sess []*session, owner []int, epochs []int64,
	keyOf func(int) *ocmv1.StreamKey, cl func(int) ocmv1.OCMServiceClient) error {
	pool := min(w.pool, o.streams)
	if pool <= 0 || w.keysPer > pool {
		return fmt.Errorf("watch: --watch-keys %d must be at most the pool of %d streams", w.keysPer, pool)
	}
	rng := rand.New(rand.NewPCG(w.seed, 1))
	interested := make([]int, pool) // key index → watchers watching it
	sets := make([][]int, w.watchers)
	for i := range sets {
		set := make(map[int]struct{}, w.keysPer)
		for len(set) < w.keysPer {
			set[rng.IntN(pool)] = struct{}{}
		}
		for k := range set {
			sets[i] = append(sets[i], k)
			interested[k]++
		}
	}
	var churnKeys []int
	maxW := 0
	for k, n := range interested {
		if n > 0 {
			churnKeys = append(churnKeys, k)
		}
		maxW = max(maxW, n)
	}
	rng.Shuffle(len(churnKeys), func(i, j int) { churnKeys[i], churnKeys[j] = churnKeys[j], churnKeys[i] })
	fmt.Printf("watch: %d watchers × %d keys from the first %d streams: %d keys watched, up to %d watchers on one key\n",
		w.watchers, w.keysPer, pool, len(churnKeys), maxW)

	prop := &propagation{pending: map[pendKey]*pendingOp{}}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	synced := make(chan error, w.watchers)
	var events atomic.Int64
	t0 := time.Now()
	for i := range w.watchers {
		// One connection per watcher, as every edge has its own.
		cc, err := grpc.NewClient(o.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("watch: connection %d: %w", i, err)
		}
		req := &ocmv1.WatchStreamsRequest{InitialState: true}
		for _, k := range sets[i] {
			req.Keys = append(req.Keys, keyOf(k))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cc.Close()
			st, err := ocmv1.NewOCMServiceClient(cc).WatchStreams(wctx, req)
			if err != nil {
				synced <- fmt.Errorf("watcher %d: %w", i, err)
				return
			}
			live := false
			for {
				ev, err := st.Recv()
				if err != nil {
					if !live {
						synced <- fmt.Errorf("watcher %d: %w", i, err)
					} else if wctx.Err() == nil {
						fmt.Fprintf(os.Stderr, "watch: watcher %d ended: %v\n", i, err)
					}
					return
				}
				at := time.Now()
				if ev.Type == ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED {
					live = true
					synced <- nil
					continue
				}
				if !live {
					continue
				}
				events.Add(1)
				idx, err := strconv.Atoi(ev.GetStream().GetKey().GetName()[1:])
				if err != nil {
					continue
				}
				prop.told(idx, ev.Type, at)
			}
		}()
	}
	for range w.watchers {
		if err := <-synced; err != nil {
			return fmt.Errorf("watch: %w", err)
		}
	}
	fmt.Printf("watch: %d watchers synced in %s\n", w.watchers, time.Since(t0).Round(time.Millisecond))

	// Churn: a pair (release by the owner, claim by the next origin) every
	// 2/churn seconds, spread over workers so a slow RPC does not hold the
	// schedule; a key is reused only after len(churnKeys) pairs.
	pairs := make(chan int, 1024)
	var ops, opErrs, behind atomic.Int64
	var firstErr atomic.Value
	var cw sync.WaitGroup
	for range w.churnWorkers {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for k := range pairs {
				s := sess[owner[k]]
				prop.expect(k, ocmv1.WatchStreamsResponse_EVENT_TYPE_DELETE, interested[k])
				if _, err := cl(k).ReleaseStream(ctx, &ocmv1.ReleaseStreamRequest{NodeId: s.id, LeaseId: s.lease, Key: keyOf(k), Epoch: epochs[k]}); err != nil {
					prop.drop(k, ocmv1.WatchStreamsResponse_EVENT_TYPE_DELETE)
					opErrs.Add(1)
					firstErr.CompareAndSwap(nil, "release: "+err.Error())
					continue
				}
				ops.Add(1)
				next := (owner[k] + 1) % len(sess)
				n := sess[next]
				prop.expect(k, ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT, interested[k])
				r, err := cl(k).ClaimStream(ctx, &ocmv1.ClaimStreamRequest{NodeId: n.id, LeaseId: n.lease, Key: keyOf(k)})
				if err != nil {
					prop.drop(k, ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT)
					opErrs.Add(1)
					firstErr.CompareAndSwap(nil, "claim: "+err.Error())
					continue
				}
				ops.Add(1)
				owner[k], epochs[k] = next, r.GetStream().GetEpoch()
			}
		}()
	}
	pid := o.pid
	srv0, self0 := cpuOf(pid), cpuOf(os.Getpid())
	start := time.Now()
	interval := time.Duration(float64(2*time.Second) / float64(max(w.churn, 1)))
	tick := time.NewTicker(interval)
	end := time.After(w.churnFor)
	sent := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end:
			break loop
		case <-tick.C:
			// Catch up with the schedule if a tick was late.
			due := int(time.Since(start) / interval)
			for ; sent < due; sent++ {
				select {
				case pairs <- churnKeys[sent%len(churnKeys)]:
				default:
					behind.Add(1)
				}
			}
		}
	}
	tick.Stop()
	close(pairs)
	cw.Wait()
	el := time.Since(start)
	srvCPU, selfCPU := cpuOf(pid)-srv0, cpuOf(os.Getpid())-self0
	// Let the last events arrive.
	time.Sleep(time.Second)
	cancel()

	prop.mu.Lock()
	defer prop.mu.Unlock()
	pct := func(ds []time.Duration, p float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		return ds[min(len(ds)-1, int(p*float64(len(ds))))]
	}
	line := func(name string, ds []time.Duration) {
		slices.Sort(ds)
		fmt.Printf("  %s: n %d, p50 %s, p90 %s, p99 %s, max %s\n", name, len(ds),
			pct(ds, 0.5).Round(10*time.Microsecond), pct(ds, 0.9).Round(10*time.Microsecond),
			pct(ds, 0.99).Round(10*time.Microsecond), pct(ds, 1).Round(10*time.Microsecond))
	}
	fmt.Printf("churn: %d claims+releases in %s (%.0f/s, asked %d/s), errors %d, pairs dropped behind schedule %d\n",
		ops.Load(), el.Round(time.Millisecond), float64(ops.Load())/el.Seconds(), w.churn, opErrs.Load(), behind.Load())
	if e := firstErr.Load(); e != nil {
		fmt.Printf("  first error: %s\n", e)
	}
	// An op not told can be a release whose DELETE a watcher's queue
	// replaced with the next claim's PUT before the watcher took it (the
	// OCM coalesces by key): that watcher was told the later state.
	fmt.Printf("  watch events received %d (%.0f/s), for no pending op %d, ops not told to every watcher (or superseded in its queue) %d\n",
		events.Load(), float64(events.Load())/el.Seconds(), prop.stray, len(prop.pending))
	line("claim → every interested watcher told", prop.allClaim)
	line("release → every interested watcher told", prop.allRel)
	line("each delivery", prop.each)
	if pid > 0 {
		fmt.Printf("  CPU: OCM %.2f cores (%s per op), this client %.2f cores\n", srvCPU.Seconds()/el.Seconds(),
			(srvCPU / time.Duration(max(ops.Load(), 1))).Round(100*time.Nanosecond), selfCPU.Seconds()/el.Seconds())
		if rss, err := rssOf(pid); err == nil {
			fmt.Printf("  OCM RSS: %s\n", rss)
		}
	}
	if ctx.Err() != nil {
		return errors.New("watch: interrupted")
	}
	return nil
}
