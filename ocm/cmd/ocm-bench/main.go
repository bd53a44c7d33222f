// Command ocm-bench loads a running OCM over gRPC and prints figures: time to
// claim many streams, watch propagation under claim/release churn (with
// --watchers: the time from a claim or release to every interested watcher
// being told), LookupStream and AssignOrigin throughput and latency,
// the OCM's RSS (with --pid) and the time from a node's last heartbeat until
// all its streams are gone.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

type opts struct {
	addr          string
	origins       int
	streams       int
	workers       int
	conns         int
	lookupFor     time.Duration
	lookupWorkers []int
	assignFor     time.Duration
	pid           int
	expiry        bool
	cleanup       bool
	idPrefix      string
	cpuProfile    string
	watch         watchOpts
	idleFor       time.Duration
}

func main() {
	var o opts
	flag.StringVar(&o.addr, "addr", "127.0.0.1:7000", "OCM gRPC address")
	flag.IntVar(&o.origins, "origins", 200, "origins to register")
	flag.IntVar(&o.streams, "streams", 100000, "streams to claim")
	flag.IntVar(&o.workers, "workers", 128, "concurrent claim workers")
	flag.IntVar(&o.conns, "conns", 1, "gRPC connections to spread the load over (an edge or origin has one ClientConn, so one connection to each OCM replica)")
	flag.DurationVar(&o.lookupFor, "lookup-duration", 10*time.Second, "how long to run lookups")
	workers := flag.String("lookup-workers", "16", "concurrent lookup and assign workers; a comma-separated list runs LookupStream once per count (AssignOrigin uses the first)")
	flag.DurationVar(&o.assignFor, "assign-duration", 5*time.Second, "how long to run AssignOrigin")
	flag.IntVar(&o.pid, "pid", 0, "OCM process id, to report its RSS (Linux)")
	flag.BoolVar(&o.expiry, "expiry", true, "measure lease expiry of one origin")
	flag.BoolVar(&o.cleanup, "cleanup", true, "deregister the origins at the end")
	flag.StringVar(&o.idPrefix, "id-prefix", "bench-origin-", "node id prefix")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write this client's CPU profile of the lookup phase to a file")
	flag.DurationVar(&o.idleFor, "idle-duration", 0, "after the claims, measure the OCM's CPU this long with only heartbeats running (needs --pid)")
	flag.IntVar(&o.watch.watchers, "watchers", 0, "watch propagation: this many watchers (each its own connection and WatchStreams, as edges), after the claims; 0 skips the phase")
	flag.IntVar(&o.watch.keysPer, "watch-keys", 200, "keys each watcher watches")
	flag.IntVar(&o.watch.pool, "watch-pool", 0, "watchers draw their keys from the first N streams (0: all); fewer means more watchers per key")
	flag.IntVar(&o.watch.churn, "churn", 1000, "claims plus releases per second on watched keys during the watch phase")
	flag.DurationVar(&o.watch.churnFor, "churn-duration", 30*time.Second, "how long the churn runs")
	flag.IntVar(&o.watch.churnWorkers, "churn-workers", 128, "concurrent churn workers (each does a release and the next owner's claim)")
	flag.Uint64Var(&o.watch.seed, "seed", 1, "seed of the watchers' key choice")
	flag.Parse()
	if o.watch.pool == 0 {
		o.watch.pool = o.streams
	}
	for f := range strings.SplitSeq(*workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "ocm-bench: --lookup-workers %q: want positive counts\n", *workers)
			os.Exit(2)
		}
		o.lookupWorkers = append(o.lookupWorkers, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "ocm-bench:", err)
		os.Exit(1)
	}
}

type session struct {
	id       string
	lease    int64
	interval time.Duration
	ttl      time.Duration
	lastHB   atomic.Int64 // unix nanos of the last successful heartbeat
	stop     chan struct{}
}

func run(ctx context.Context, o opts) error {
	var clients []ocmv1.OCMServiceClient
	for range max(o.conns, 1) {
		cc, err := grpc.NewClient(o.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			// As on the OCM: static windows turn off the BDP estimator's
			// PING per burst of received data, which small responses never
			// need.
			grpc.WithStaticStreamWindowSize(1<<20), grpc.WithStaticConnWindowSize(1<<20))
		if err != nil {
			return err
		}
		defer cc.Close()
		clients = append(clients, ocmv1.NewOCMServiceClient(cc))
	}
	cl := func(i int) ocmv1.OCMServiceClient { return clients[i%len(clients)] }

	// 1. Register origins and keep them heartbeating.
	t0 := time.Now()
	sess := make([]*session, o.origins)
	for i := range sess {
		id := fmt.Sprintf("%s%d", o.idPrefix, i)
		r, err := cl(i).Register(ctx, &ocmv1.RegisterRequest{Node: &ocmv1.Node{
			Id: id, Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN, Zone: fmt.Sprintf("z%d", i%3),
			Addresses: &ocmv1.NodeAddresses{Rtmp: id + ":1935", Http: id + ":8080"},
		}})
		if err != nil {
			return fmt.Errorf("register %s: %w", id, err)
		}
		s := &session{id: id, lease: r.LeaseId, interval: time.Duration(r.HeartbeatIntervalMs) * time.Millisecond, ttl: time.Duration(r.LeaseTtlSeconds) * time.Second, stop: make(chan struct{})}
		s.lastHB.Store(time.Now().UnixNano())
		sess[i] = s
	}
	fmt.Printf("registered %d origins in %s\n", o.origins, time.Since(t0).Round(time.Millisecond))
	var hbWG sync.WaitGroup
	hbCtx, stopHB := context.WithCancel(ctx)
	defer func() { stopHB(); hbWG.Wait() }()
	var hbErrs atomic.Int64
	for i, s := range sess {
		hbWG.Add(1)
		go func() {
			defer hbWG.Done()
			t := time.NewTicker(s.interval)
			defer t.Stop()
			for {
				select {
				case <-hbCtx.Done():
					return
				case <-s.stop:
					return
				case <-t.C:
					if _, err := cl(i).Heartbeat(hbCtx, &ocmv1.HeartbeatRequest{NodeId: s.id, LeaseId: s.lease, Load: &ocmv1.Load{Streams: uint32(o.streams / o.origins)}}); err != nil {
						if hbCtx.Err() == nil {
							hbErrs.Add(1)
						}
					} else {
						s.lastHB.Store(time.Now().UnixNano())
					}
				}
			}
		}()
	}

	// 2. Claim.
	keyOf := func(i int) *ocmv1.StreamKey { return &ocmv1.StreamKey{App: "bench", Name: fmt.Sprintf("s%07d", i)} }
	var next atomic.Int64
	var claimErrs atomic.Int64
	var firstErr atomic.Value
	claimCPU0 := cpuOf(o.pid)
	t0 = time.Now()
	// owner[i] is the index in sess of stream i's owner (-1: not claimed),
	// epochs[i] its epoch; the watch phase moves streams between origins.
	owner, epochs := make([]int, o.streams), make([]int64, o.streams)
	for i := range owner {
		owner[i] = -1
	}
	var wg sync.WaitGroup
	for w := range o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cl(w)
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= o.streams {
					return
				}
				s := sess[i%len(sess)]
				r, err := c.ClaimStream(ctx, &ocmv1.ClaimStreamRequest{NodeId: s.id, LeaseId: s.lease, Key: keyOf(i)})
				if err != nil {
					claimErrs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				owner[i], epochs[i] = i%len(sess), r.GetStream().GetEpoch()
			}
		}()
	}
	wg.Wait()
	claimDur := time.Since(t0)
	fmt.Printf("claimed %d streams with %d workers in %s (%.0f claims/s), errors %d",
		o.streams, o.workers, claimDur.Round(time.Millisecond), float64(o.streams)/claimDur.Seconds(), claimErrs.Load())
	if e := firstErr.Load(); e != nil {
		fmt.Printf(" (first: %s)", e)
	}
	fmt.Println()
	if o.pid > 0 {
		fmt.Printf("  OCM CPU per claim (OCM + its embedded etcd when it has one): %s\n",
			((cpuOf(o.pid) - claimCPU0) / time.Duration(max(o.streams, 1))).Round(100*time.Nanosecond))
	}

	// 2a. Idle: only the origins' heartbeats (lease renewals), the OCM's
	// baseline with this many streams and nodes.
	if o.idleFor > 0 && o.pid > 0 {
		time.Sleep(time.Second) // the claims' tail
		c0, t := cpuOf(o.pid), time.Now()
		select {
		case <-ctx.Done():
		case <-time.After(o.idleFor):
		}
		el := time.Since(t)
		c := cpuOf(o.pid) - c0
		hbs := float64(o.origins) * el.Seconds() / sess[0].interval.Seconds()
		fmt.Printf("idle %s: OCM %.3f cores with %d origins heartbeating every %s (%.0f heartbeats/s): at most %s per heartbeat\n",
			el.Round(time.Millisecond), c.Seconds()/el.Seconds(), o.origins, sess[0].interval, hbs/el.Seconds(),
			(time.Duration(float64(c) / max(hbs, 1))).Round(100*time.Nanosecond))
	}

	// 2b. Watch propagation under churn.
	if o.watch.watchers > 0 {
		if err := runWatch(ctx, o, o.watch, sess, owner, epochs, keyOf, cl); err != nil {
			return err
		}
	}

	// 3. Lookups. Requests are built beforehand (marshalling a shared message
	// concurrently is safe) so the client spends its CPU on gRPC, not on
	// formatting keys: client and OCM share the same cores here.
	reqs := make([]*ocmv1.LookupStreamRequest, o.streams)
	for i := range reqs {
		reqs[i] = &ocmv1.LookupStreamRequest{Key: keyOf(i)}
	}
	lookup := func(c ocmv1.OCMServiceClient) error {
		_, err := c.LookupStream(ctx, reqs[rand.IntN(len(reqs))])
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	for _, w := range o.lookupWorkers {
		if o.lookupFor <= 0 {
			break
		}
		load(ctx, "LookupStream", o.lookupFor, w, o.pid, cl, lookup)
	}
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}

	// 4. Placement of streams nobody owns.
	assign := func(c ocmv1.OCMServiceClient) error {
		_, err := c.AssignOrigin(ctx, &ocmv1.AssignOriginRequest{Key: keyOf(o.streams + rand.IntN(1<<30)), Zone: "z1"})
		return err
	}
	if o.assignFor > 0 {
		load(ctx, "AssignOrigin", o.assignFor, o.lookupWorkers[0], o.pid, cl, assign)
	}

	if o.pid > 0 {
		if rss, err := rssOf(o.pid); err == nil {
			fmt.Printf("OCM RSS: %s\n", rss)
		} else {
			fmt.Printf("OCM RSS: %v\n", err)
		}
	}

	// 5. Lease expiry: stop one origin's heartbeats and time until all its
	// streams are deleted.
	if o.expiry && ctx.Err() == nil {
		victim := sess[0]
		want := 0
		for _, ow := range owner {
			if ow == 0 {
				want++
			}
		}
		wctx, cancel := context.WithCancel(ctx)
		w, err := cl(0).WatchStreams(wctx, &ocmv1.WatchStreamsRequest{})
		if err != nil {
			cancel()
			return err
		}
		close(victim.stop)
		deleted := 0
		var lastDel time.Time
		for deleted < want {
			ev, err := w.Recv()
			if err != nil {
				cancel()
				return fmt.Errorf("watch: %w", err)
			}
			if ev.Type == ocmv1.WatchStreamsResponse_EVENT_TYPE_DELETE && ev.Stream.OwnerNodeId == victim.id {
				deleted++
				lastDel = time.Now()
			}
		}
		cancel()
		last := time.Unix(0, victim.lastHB.Load())
		fmt.Printf("lease expiry: %d streams of %s gone %s after its last heartbeat (heartbeat interval %s, TTL %s)\n",
			deleted, victim.id, lastDel.Sub(last).Round(time.Millisecond), victim.interval, victim.ttl)
	}
	fmt.Printf("heartbeat errors: %d\n", hbErrs.Load())

	if o.cleanup {
		stopHB()
		hbWG.Wait()
		for i, s := range sess[1:] {
			if _, err := cl(i).Deregister(context.WithoutCancel(ctx), &ocmv1.DeregisterRequest{NodeId: s.id, LeaseId: s.lease}); err != nil && status.Code(err) != codes.NotFound {
				return fmt.Errorf("deregister %s: %w", s.id, err)
			}
		}
	}
	return nil
}

// load runs fn from workers goroutines for d and prints throughput and
// latency percentiles, and the CPU time the OCM (pid > 0) and this client
// spent per call: unlike calls/s, that does not depend on what else is
// running on the machine.
func load(ctx context.Context, name string, d time.Duration, workers, pid int, cl func(int) ocmv1.OCMServiceClient, fn func(ocmv1.OCMServiceClient) error) {
	lctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	lat := make([][]time.Duration, workers)
	var errs atomic.Int64
	var wg sync.WaitGroup
	srv0, self0 := cpuOf(pid), cpuOf(os.Getpid())
	t0 := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cl(w)
			for lctx.Err() == nil {
				s := time.Now()
				if err := fn(c); err != nil {
					errs.Add(1)
					continue
				}
				lat[w] = append(lat[w], time.Since(s))
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	srvCPU, selfCPU := cpuOf(pid)-srv0, cpuOf(os.Getpid())-self0
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(p*float64(len(all))))]
	}
	fmt.Printf("%s: %d ok in %s with %d workers: %.0f/s, p50 %s, p99 %s, max %s, errors %d\n",
		name, len(all), el.Round(time.Millisecond), workers, float64(len(all))/el.Seconds(),
		pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), pct(1).Round(time.Microsecond), errs.Load())
	if n := len(all) + int(errs.Load()); n > 0 {
		per := func(cpu time.Duration) time.Duration { return (cpu / time.Duration(n)).Round(100 * time.Nanosecond) }
		if pid > 0 {
			fmt.Printf("  CPU per call: OCM %s, client %s (OCM used %.2f cores)\n", per(srvCPU), per(selfCPU), srvCPU.Seconds()/el.Seconds())
		} else {
			fmt.Printf("  CPU per call: client %s\n", per(selfCPU))
		}
	}
}

// cpuOf returns the user+system CPU time of a process (Linux), 0 when
// unknown.
func cpuOf(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: utime and stime are the 12th and 13th of them, in clock ticks.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ, 100 on every Linux this runs on
	return time.Duration(ut+st) * time.Second / hz
}

func rssOf(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
