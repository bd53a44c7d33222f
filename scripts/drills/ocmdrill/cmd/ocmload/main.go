// Command ocmload acts as many origins against real OCM replicas for the
// control-plane drills (scripts/drills/ocm-failover.sh, etcd-quorum.sh):
// each simulated origin is a node/ocmclient.Client of its own (Register,
// heartbeats, the KeepSession stream, the same code a real origin runs),
// claims one stable stream and keeps it, and, every -churn, claims a
// second stream and releases it again, and looks its stable stream up.
// Every call goes to the -history log (ocmclient.History), which lincheck
// checks afterwards.
//
// The drill script drives the phases on stdin, one line each:
//
//	phase NAME    start counting under NAME (the fault was just made)
//	stop          (or EOF) verify and exit
//
// At the end it checks every stable stream (LookupStream on a replica, so
// from its cache) and prints one JSON object: per phase the results of
// claims, releases and lookups by kind, a sample error message of each
// kind, the leases lost (re-registrations) and the longest run of failed
// heartbeats; then how many stable streams kept their owner and epoch.
// Exit status: 0 (the script judges the figures), 2 bad usage or setup.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

type opts struct {
	ocm      []string
	origins  int
	prefix   string
	churn    time.Duration
	timeout  time.Duration
	history  string
	settle   time.Duration
	maxStart time.Duration
}

func main() {
	var o opts
	var ocm string
	flag.StringVar(&ocm, "ocm", "", "OCM replica gRPC addresses, comma-separated (round robin over all, as through a Service)")
	flag.IntVar(&o.origins, "origins", 200, "simulated origins, one stable stream each")
	flag.StringVar(&o.prefix, "prefix", "drill", "node id and stream name prefix")
	flag.DurationVar(&o.churn, "churn", time.Second, "each origin claims and releases a second stream, and looks its stable one up, this often (0: never)")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Second, "bound of each stream call")
	flag.StringVar(&o.history, "history", "", "JSONL history of every call (required)")
	flag.DurationVar(&o.settle, "settle", 0, "after stop, wait this long before the final check")
	flag.DurationVar(&o.maxStart, "start-timeout", 60*time.Second, "give up when the origins are not all registered with a stable stream by then")
	flag.Parse()
	o.ocm = strings.Split(ocm, ",")
	if ocm == "" || o.history == "" || o.origins <= 0 {
		fmt.Fprintln(os.Stderr, "usage: ocmload -ocm HOST:PORT[,HOST:PORT...] -history FILE [-origins N] [-churn D] < phases")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "ocmload:", err)
		os.Exit(2)
	}
}

// counts holds one phase's figures.
type counts struct {
	Name         string                    `json:"phase"`
	StartMs      int64                     `json:"start_unix_ms"`
	Calls        map[string]map[string]int `json:"calls"`             // op → result → n
	Samples      map[string]string         `json:"error_samples"`     // "op/result" → a message
	FirstClaimOK int64                     `json:"first_claim_ok_ms"` // after the phase began; -1 none
	LeasesLost   int                       `json:"leases_lost"`
	MaxHBFails   int                       `json:"max_consecutive_heartbeat_failures"`
}

type recorder struct {
	mu     sync.Mutex
	phases []*counts
	start  time.Time
}

func (r *recorder) phase(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.start = time.Now()
	r.phases = append(r.phases, &counts{Name: name, StartMs: r.start.UnixMilli(), Calls: map[string]map[string]int{},
		Samples: map[string]string{}, FirstClaimOK: -1})
}

func (r *recorder) cur() *counts { return r.phases[len(r.phases)-1] }

func (r *recorder) count(op string, err error) {
	res, _, _ := ocmclient.HistoryResult(err)
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cur()
	if c.Calls[op] == nil {
		c.Calls[op] = map[string]int{}
	}
	c.Calls[op][res]++
	if err != nil {
		if _, ok := c.Samples[op+"/"+res]; !ok {
			c.Samples[op+"/"+res] = err.Error()
		}
	}
	if op == "claim" && err == nil && c.FirstClaimOK < 0 {
		c.FirstClaimOK = time.Since(r.start).Milliseconds()
	}
}

func (r *recorder) hbFails(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cur()
	c.MaxHBFails = max(c.MaxHBFails, n)
}

func (r *recorder) leaseLost() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cur().LeasesLost++
}

type origin struct {
	id     string
	c      *ocmclient.Client
	stable streamkey.Key
	churn  streamkey.Key
	mu     sync.Mutex
	epoch  int64 // of the stable stream
}

func run(ctx context.Context, o opts) error {
	hist, err := ocmclient.OpenHistory(o.history)
	if err != nil {
		return err
	}
	defer hist.Close()
	rec := &recorder{}
	rec.phase("start")

	var addrs []resolver.Address
	for _, a := range o.ocm {
		addrs = append(addrs, resolver.Address{Addr: strings.TrimSpace(a)})
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	origins := make([]*origin, o.origins)
	for i := range origins {
		id := fmt.Sprintf("%s-o%03d", o.prefix, i)
		r := manual.NewBuilderWithScheme("drill")
		r.InitialState(resolver.State{Addresses: addrs})
		or := &origin{id: id,
			stable: streamkey.Key{Vhost: "default", App: "live", Name: fmt.Sprintf("%s-s%03d", o.prefix, i)},
			churn:  streamkey.Key{Vhost: "default", App: "live", Name: fmt.Sprintf("%s-x%03d", o.prefix, i)},
		}
		or.c, err = ocmclient.New(ocmclient.Options{
			Address: "drill:///ocm",
			Node: &ocmv1.Node{Id: id, Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN,
				Addresses: &ocmv1.NodeAddresses{Rtmp: id + ":1935", Http: id + ":8080"}},
			DialOptions: []grpc.DialOption{grpc.WithResolvers(r)},
			History:     hist,
			// The re-registration is what a lost lease looks like; re-claim
			// as owner.Reclaim does, so the stream is not lost for good.
			OnReregistered: func(ctx context.Context, s ocmclient.Session) {
				rec.leaseLost()
				cctx, ccancel := context.WithTimeout(ctx, o.timeout)
				defer ccancel()
				st, err := or.c.Claim(cctx, s, ocmclient.ClaimRequest{Key: or.stable})
				rec.count("reclaim", err)
				if err == nil {
					or.mu.Lock()
					or.epoch = st.GetEpoch()
					or.mu.Unlock()
				}
			},
		})
		if err != nil {
			return err
		}
		origins[i] = or
	}
	defer func() {
		// Deregister (the leases go at once), bounded.
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		var wg sync.WaitGroup
		for _, or := range origins {
			wg.Go(func() { _ = or.c.Deregister(dctx) })
		}
		wg.Wait()
	}()

	// Register and claim the stable streams.
	startCtx, startCancel := context.WithTimeout(ctx, o.maxStart)
	defer startCancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(origins))
	for _, or := range origins {
		or.c.Start(ctx)
		wg.Go(func() {
			for startCtx.Err() == nil {
				s, ok := or.c.Session()
				if !ok {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				cctx, ccancel := context.WithTimeout(startCtx, o.timeout)
				st, err := or.c.Claim(cctx, s, ocmclient.ClaimRequest{Key: or.stable})
				ccancel()
				rec.count("claim", err)
				if err == nil {
					or.mu.Lock()
					or.epoch = st.GetEpoch()
					or.mu.Unlock()
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			errs <- fmt.Errorf("origin %s: no stable claim within %s", or.id, o.maxStart)
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "ocmload: %d origins registered, each owning its stable stream\n", len(origins))
	rec.phase("steady")
	fmt.Println(`{"ready":true}`) // the script waits for this line
	_ = os.Stdout.Sync()

	loadCtx, loadCancel := context.WithCancel(ctx)
	var loops sync.WaitGroup
	if o.churn > 0 {
		for _, or := range origins {
			loops.Go(func() { churn(loadCtx, or, o, rec) })
		}
	}
	loops.Go(func() { watchHeartbeats(loadCtx, origins, rec) })

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
	}()
read:
	for {
		select {
		case <-ctx.Done():
			break read
		case l, ok := <-lines:
			if !ok || l == "stop" {
				break read
			}
			if name, ok := strings.CutPrefix(l, "phase "); ok {
				rec.phase(name)
				fmt.Fprintf(os.Stderr, "ocmload: phase %s\n", name)
			}
		}
	}
	loadCancel()
	loops.Wait()
	select {
	case <-time.After(o.settle):
	case <-ctx.Done():
	}
	return report(ctx, origins, o, rec, hist)
}

// churn claims and releases the origin's second stream and looks up its
// stable one, every o.churn (jittered, so 200 origins do not march in step).
func churn(ctx context.Context, or *origin, o opts, rec *recorder) {
	t := time.NewTimer(rand.N(o.churn))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(o.churn/2 + rand.N(o.churn))
		s, ok := or.c.Session()
		if !ok {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, o.timeout)
		_, _, lerr := or.c.Lookup(cctx, or.stable)
		rec.count("lookup", lerr)
		st, err := or.c.Claim(cctx, s, ocmclient.ClaimRequest{Key: or.churn})
		if ctx.Err() != nil {
			cancel()
			return
		}
		rec.count("claim", err)
		epoch := st.GetEpoch()
		var owned *ocmclient.AlreadyOwnedError
		if errors.As(err, &owned) && owned.Owner == or.id {
			// Ours still: an earlier release's answer was lost (it failed
			// "unknown") without applying. Release it now.
			err, epoch = nil, owned.Epoch
		}
		if err == nil {
			err = or.c.Release(cctx, s, or.churn, epoch)
			if ctx.Err() == nil {
				rec.count("release", err)
			}
		}
		cancel()
	}
}

func watchHeartbeats(ctx context.Context, origins []*origin, rec *recorder) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		worst := 0
		for _, or := range origins {
			worst = max(worst, or.c.Status().ConsecutiveFailures)
		}
		rec.hbFails(worst)
	}
}

type summary struct {
	Origins       int       `json:"origins"`
	Registrations int       `json:"registrations"` // over all origins; == origins: no lease lost
	StableKept    int       `json:"stable_kept"`   // owned by their origin at the epoch it last claimed
	StableMoved   []string  `json:"stable_changed,omitempty"`
	Phases        []*counts `json:"phases"`
	HistoryError  string    `json:"history_error,omitempty"`
}

func report(ctx context.Context, origins []*origin, o opts, rec *recorder, hist *ocmclient.History) error {
	sum := summary{Origins: len(origins), Phases: rec.phases}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, or := range origins {
		wg.Go(func() {
			sum2 := or.c.Status().Registrations
			or.mu.Lock()
			want := or.epoch
			or.mu.Unlock()
			var st *ocmv1.Stream
			var err error
			for attempt := 0; attempt < 5; attempt++ {
				cctx, cancel := context.WithTimeout(ctx, o.timeout)
				st, _, err = or.c.Lookup(cctx, or.stable)
				cancel()
				if err == nil || ctx.Err() != nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			sum.Registrations += sum2
			switch {
			case err != nil:
				sum.StableMoved = append(sum.StableMoved, fmt.Sprintf("%s: %v", or.stable, err))
			case st.GetOwnerNodeId() != or.id || st.GetEpoch() != want:
				sum.StableMoved = append(sum.StableMoved, fmt.Sprintf("%s: owner %s epoch %d, want %s epoch %d",
					or.stable, st.GetOwnerNodeId(), st.GetEpoch(), or.id, want))
			default:
				sum.StableKept++
			}
		})
	}
	wg.Wait()
	slices.Sort(sum.StableMoved)
	if err := hist.Err(); err != nil {
		sum.HistoryError = err.Error()
	}
	return json.NewEncoder(os.Stdout).Encode(sum)
}
