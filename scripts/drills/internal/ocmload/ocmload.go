// Package ocmload acts as many origins against real OCM replicas, for the
// control-plane drills (ocm-failover, etcd-quorum): each simulated origin
// is a node/ocmclient.Client of its own (Register, heartbeats, the
// KeepSession stream: the code a real origin runs), claims one stable
// stream and keeps it, and, every Churn, looks its stable stream up,
// claims a second stream and releases it again. Every call goes to the
// History log, which lincheck checks afterwards.
//
// The drill marks phases (Phase) as it makes its faults; the figures are
// counted per phase. Stop ends the load, checks every stable stream
// (owned by its origin at the epoch it last claimed) and deregisters.
package ocmload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

// Options configure a Load.
type Options struct {
	// OCM are the replicas' gRPC addresses (host:port): each client
	// balances over all of them (round robin), as through a Service.
	OCM     []string
	Origins int    // simulated origins, one stable stream each
	Prefix  string // node ids <Prefix>-oNNN, streams <Prefix>-sNNN / -xNNN
	// Churn: each origin looks up, claims and releases this often
	// (jittered); 0: never.
	Churn   time.Duration
	Timeout time.Duration // bound of each stream call (default 2 s)
	History *ocmclient.History
	// StartTimeout bounds the registration and the stable claims (default 60 s).
	StartTimeout time.Duration
}

// Phase is the figures of one phase.
type Phase struct {
	Name    string                    `json:"phase"`
	Start   time.Time                 `json:"-"`
	Calls   map[string]map[string]int `json:"calls"`         // op → result → n
	Samples map[string]string         `json:"error_samples"` // "op/result" → a message
	// FirstClaimOKMs: from the phase's start to the first claim that
	// succeeded in it (-1: none).
	FirstClaimOKMs int64 `json:"first_claim_ok_ms"`
	LeasesLost     int   `json:"leases_lost"` // re-registrations
	MaxHBFailures  int   `json:"max_consecutive_heartbeat_failures"`
}

// Count returns how many op calls ended with result.
func (p *Phase) Count(op, result string) int { return p.Calls[op][result] }

// Total returns how many op calls were made.
func (p *Phase) Total(op string) int {
	n := 0
	for _, v := range p.Calls[op] {
		n += v
	}
	return n
}

// Summary is what Stop found.
type Summary struct {
	Origins       int `json:"origins"`
	Registrations int `json:"registrations"` // over all origins; == Origins: no lease lost
	// StableKept: stable streams owned by their origin at the epoch it
	// last claimed; StableChanged says what happened to the others.
	StableKept    int      `json:"stable_kept"`
	StableChanged []string `json:"stable_changed,omitempty"`
	Phases        []*Phase `json:"phases"`
}

// Phase returns the phase named name (nil: none).
func (s *Summary) Phase(name string) *Phase {
	for _, p := range s.Phases {
		if p.Name == name {
			return p
		}
	}
	return nil
}

type origin struct {
	id     string
	c      *ocmclient.Client
	stable streamkey.Key
	churn  streamkey.Key
	mu     sync.Mutex
	epoch  int64 // of the stable stream
}

// Load is the running simulated origins.
type Load struct {
	o       Options
	origins []*origin

	mu     sync.Mutex
	phases []*Phase

	gate gate // the churn's calls pass it; Hold closes it

	cancel context.CancelFunc // ends the clients
	stop   context.CancelFunc // ends the churn
	loops  sync.WaitGroup
}

// gate lets the churn's calls through one at a time each (enter, leave)
// until hold closes it: then no call starts, and hold returns once the
// calls under way have returned. resume opens it again.
type gate struct {
	mu       sync.Mutex
	held     chan struct{} // nil: open; closed by resume
	inflight int
	idle     chan struct{} // closed when inflight drops to 0 while held
}

// enter waits while the gate is held; it fails only when ctx ends.
func (g *gate) enter(ctx context.Context) error {
	for {
		g.mu.Lock()
		h := g.held
		if h == nil {
			g.inflight++
			g.mu.Unlock()
			return nil
		}
		g.mu.Unlock()
		select {
		case <-h:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight--
	if g.inflight == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
}

// hold closes the gate and waits until no call is under way; it fails
// when ctx ends first (the gate stays closed: call resume).
func (g *gate) hold(ctx context.Context) error {
	g.mu.Lock()
	if g.held == nil {
		g.held = make(chan struct{})
	}
	var idle chan struct{}
	if g.inflight > 0 {
		if g.idle == nil {
			g.idle = make(chan struct{})
		}
		idle = g.idle
	}
	g.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ocmload: calls still under way: %w", ctx.Err())
	}
}

func (g *gate) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held != nil {
		close(g.held)
		g.held = nil
	}
}

// Hold stops the churn from starting calls and returns once every call
// under way has returned (each is bounded by Timeout), so that a fault
// made next cannot catch a call begun before it: each call then runs
// wholly before the fault or wholly after Resume. Heartbeats and session
// streams go on. It fails when ctx ends first; call Resume in every case.
func (l *Load) Hold(ctx context.Context) error { return l.gate.hold(ctx) }

// Resume lets the churn start calls again after Hold.
func (l *Load) Resume() { l.gate.resume() }

func (l *Load) phaseLocked(name string) {
	l.phases = append(l.phases, &Phase{Name: name, Start: time.Now(), Calls: map[string]map[string]int{},
		Samples: map[string]string{}, FirstClaimOKMs: -1})
}

// Phase starts counting under name from now.
func (l *Load) Phase(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phaseLocked(name)
}

// count counts a call that started at t0 in the phase it started in: a
// call made under a fault is the fault's, even when it returns after the
// repair (and one made before the fault is not, even when etcd answers it
// late).
func (l *Load) count(op string, t0 time.Time, err error) {
	res, _, _ := ocmclient.HistoryResult(err)
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.phases[0]
	for _, p := range l.phases {
		if !p.Start.After(t0) {
			c = p
		}
	}
	if c.Calls[op] == nil {
		c.Calls[op] = map[string]int{}
	}
	c.Calls[op][res]++
	if err != nil {
		if _, ok := c.Samples[op+"/"+res]; !ok {
			c.Samples[op+"/"+res] = err.Error()
		}
	}
	if op == "claim" && err == nil && (c.FirstClaimOKMs < 0 || time.Since(c.Start).Milliseconds() < c.FirstClaimOKMs) {
		c.FirstClaimOKMs = time.Since(c.Start).Milliseconds()
	}
}

func (l *Load) update(f func(p *Phase)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(l.phases[len(l.phases)-1])
}

// Start registers the origins, claims their stable streams and starts the
// churn; it returns once every origin owns its stable stream (phase
// "start"; then phase "steady" begins), or fails after StartTimeout (the
// clients are closed then).
func Start(ctx context.Context, o Options) (*Load, error) {
	if len(o.OCM) == 0 || o.Origins <= 0 || o.History == nil {
		return nil, errors.New("ocmload: OCM, Origins and History are required")
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = time.Minute
	}
	var addrs []resolver.Address
	for _, a := range o.OCM {
		addrs = append(addrs, resolver.Address{Addr: a})
	}
	l := &Load{o: o}
	l.Phase("start")
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel = cancel
	for i := range o.Origins {
		or := &origin{id: fmt.Sprintf("%s-o%03d", o.Prefix, i),
			stable: streamkey.Key{Vhost: "default", App: "live", Name: fmt.Sprintf("%s-s%03d", o.Prefix, i)},
			churn:  streamkey.Key{Vhost: "default", App: "live", Name: fmt.Sprintf("%s-x%03d", o.Prefix, i)},
		}
		r := manual.NewBuilderWithScheme("drill")
		r.InitialState(resolver.State{Addresses: addrs})
		c, err := ocmclient.New(ocmclient.Options{
			Address: "drill:///ocm",
			Node: &ocmv1.Node{Id: or.id, Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN,
				Addresses: &ocmv1.NodeAddresses{Rtmp: or.id + ":1935", Http: or.id + ":8080"}},
			DialOptions: []grpc.DialOption{grpc.WithResolvers(r)},
			History:     o.History,
			// A re-registration is what a lost lease looks like: re-claim,
			// as the origin's owner.Reclaim does.
			OnReregistered: func(ctx context.Context, s ocmclient.Session) {
				l.update(func(p *Phase) { p.LeasesLost++ })
				cctx, ccancel := context.WithTimeout(ctx, o.Timeout)
				defer ccancel()
				t0 := time.Now()
				st, err := or.c.Claim(cctx, s, ocmclient.ClaimRequest{Key: or.stable})
				l.count("reclaim", t0, err)
				if err == nil {
					or.setEpoch(st.GetEpoch())
				}
			},
		})
		if err != nil {
			l.close()
			return nil, err
		}
		or.c = c
		l.origins = append(l.origins, or)
		c.Start(cctx)
	}
	sctx, scancel := context.WithTimeout(ctx, o.StartTimeout)
	defer scancel()
	var wg sync.WaitGroup
	var failed sync.Map
	for _, or := range l.origins {
		wg.Go(func() {
			for sctx.Err() == nil {
				s, ok := or.c.Session()
				if !ok {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				callCtx, cancel := context.WithTimeout(sctx, o.Timeout)
				t0 := time.Now()
				st, err := or.c.Claim(callCtx, s, ocmclient.ClaimRequest{Key: or.stable})
				cancel()
				l.count("claim", t0, err)
				if err == nil {
					or.setEpoch(st.GetEpoch())
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			failed.Store(or.id, true)
		})
	}
	wg.Wait()
	n := 0
	failed.Range(func(any, any) bool { n++; return true })
	if n > 0 {
		l.close()
		return nil, fmt.Errorf("ocmload: %d of %d origins got no session and stable stream within %s", n, o.Origins, o.StartTimeout)
	}
	l.Phase("steady")
	lctx, stop := context.WithCancel(cctx)
	l.stop = stop
	if o.Churn > 0 {
		for _, or := range l.origins {
			l.loops.Go(func() { l.churn(lctx, or) })
		}
	}
	l.loops.Go(func() { l.watchHeartbeats(lctx) })
	return l, nil
}

func (or *origin) setEpoch(e int64) {
	or.mu.Lock()
	or.epoch = e
	or.mu.Unlock()
}

// churn looks up the origin's stable stream, claims its second one and
// releases it, every Churn (jittered, so the origins do not march in step).
func (l *Load) churn(ctx context.Context, or *origin) {
	t := time.NewTimer(rand.N(l.o.Churn))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(l.o.Churn/2 + rand.N(l.o.Churn))
		s, ok := or.c.Session()
		if !ok {
			continue
		}
		if !l.call(ctx, "lookup", func(cctx context.Context) error {
			_, _, err := or.c.Lookup(cctx, or.stable)
			return err
		}) {
			return
		}
		var st *ocmv1.Stream
		var err error
		if !l.call(ctx, "claim", func(cctx context.Context) error {
			st, err = or.c.Claim(cctx, s, ocmclient.ClaimRequest{Key: or.churn})
			return err
		}) {
			return
		}
		epoch := st.GetEpoch()
		var owned *ocmclient.AlreadyOwnedError
		if errors.As(err, &owned) && owned.Owner == or.id {
			// Ours still: an earlier release failed without applying
			// (unknown), or a claim's answer was lost. Release it now.
			err, epoch = nil, owned.Epoch
		}
		if err == nil {
			if !l.call(ctx, "release", func(cctx context.Context) error {
				return or.c.Release(cctx, s, or.churn, epoch)
			}) {
				return
			}
		}
	}
}

// call makes one churn call through the gate, bounded by Timeout, and
// counts it in the phase it started in; false when ctx ended (the load
// stops: the call is not counted).
func (l *Load) call(ctx context.Context, op string, f func(ctx context.Context) error) bool {
	if l.gate.enter(ctx) != nil {
		return false
	}
	defer l.gate.leave()
	cctx, cancel := context.WithTimeout(ctx, l.o.Timeout)
	defer cancel()
	t0 := time.Now()
	err := f(cctx)
	if ctx.Err() != nil {
		return false
	}
	l.count(op, t0, err)
	return true
}

func (l *Load) watchHeartbeats(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		worst := 0
		for _, or := range l.origins {
			worst = max(worst, or.c.Status().ConsecutiveFailures)
		}
		l.update(func(p *Phase) { p.MaxHBFailures = max(p.MaxHBFailures, worst) })
	}
}

// Stop ends the churn, checks every stable stream (a lookup, retried a few
// times while the OCM is unreachable), deregisters the origins and
// returns the figures.
func (l *Load) Stop(ctx context.Context) Summary {
	l.stop()
	l.loops.Wait()
	sum := Summary{Origins: len(l.origins)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, or := range l.origins {
		wg.Go(func() {
			regs := or.c.Status().Registrations
			or.mu.Lock()
			want := or.epoch
			or.mu.Unlock()
			var st *ocmv1.Stream
			var err error
			for range 5 {
				cctx, cancel := context.WithTimeout(ctx, l.o.Timeout)
				st, _, err = or.c.Lookup(cctx, or.stable)
				cancel()
				if err == nil || ctx.Err() != nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			sum.Registrations += regs
			switch {
			case err != nil:
				sum.StableChanged = append(sum.StableChanged, fmt.Sprintf("%s: %v", or.stable, err))
			case st.GetOwnerNodeId() != or.id || st.GetEpoch() != want:
				sum.StableChanged = append(sum.StableChanged, fmt.Sprintf("%s: owner %s epoch %d, want %s epoch %d",
					or.stable, st.GetOwnerNodeId(), st.GetEpoch(), or.id, want))
			default:
				sum.StableKept++
			}
		})
	}
	wg.Wait()
	slices.Sort(sum.StableChanged)
	l.mu.Lock()
	sum.Phases = l.phases
	l.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, or := range l.origins {
		wg.Go(func() { _ = or.c.Deregister(dctx) })
	}
	wg.Wait()
	l.close()
	return sum
}

// close closes every client (no Deregister: used on a failed start).
func (l *Load) close() {
	for _, or := range l.origins {
		_ = or.c.Close()
	}
	l.cancel()
}

// Describe is a one-line account of a phase for the drill's log.
func (p *Phase) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:", p.Name)
	for _, op := range []string{"claim", "release", "lookup", "reclaim"} {
		if len(p.Calls[op]) > 0 {
			fmt.Fprintf(&b, " %s %v", op, p.Calls[op])
		}
	}
	fmt.Fprintf(&b, " leases_lost %d max_hb_failures %d", p.LeasesLost, p.MaxHBFailures)
	return b.String()
}
