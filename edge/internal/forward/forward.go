// Package forward forwards publishes made to the edge to an origin.
//
// The origin comes from the OCM (AssignOrigin); the forward is an RTMP
// publish to it with lc_forwarded_by=<edge node id> on the URL, so the origin
// records the stream as FORWARDED. The publisher is accepted only once the
// origin accepted, so an origin's refusal (the stream is owned elsewhere)
// reaches the publisher as the origin's own onStatus error, and the
// publisher never learns which origin it reached.
//
// The publisher's packets go into a private hub; each origin connection (a
// "leg") is a reader of it. When the origin starts DRAINING or its
// connection breaks, the forward moves make-before-break: it asks
// AssignOrigin for another origin (the OCM skips a DRAINING or excluded
// owner), opens a leg to it first (the new origin takes the stream over with
// TransferStream and starts from the hub's GOP cache), then closes the old
// leg. The publisher notices nothing.
//
// The drain is learnt from the edge's one WatchStreams (the directory): each
// forwarded key is subscribed there, and the OCM sends a PUT carrying the
// DRAINING owner when the owner's state changes. A re-established watch
// resends the current owner, so a drain missed while it was down is seen
// then. A slow ListNodes poll (Settings.PollInterval, 10 s by default) is
// kept only as a safety net; it also catches an origin that left the
// cluster while its connection stayed up.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/edge/internal/directory"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/media/stream"
	"github.com/livecluster/livecluster/node/backoff"
	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

// redial paces reconnecting a forward to an origin: short, because the
// publisher is live and waiting.
var redial = backoff.Policy{Min: 100 * time.Millisecond, Max: time.Second}

// Settings are read per use, so they reload live.
type Settings struct {
	// WaitTimeout bounds finding an origin for a new publish.
	WaitTimeout time.Duration
	// PollInterval is how often the origins' states are polled (ListNodes)
	// as a safety net behind the watch.
	PollInterval time.Duration
	// RetryTimeout is how long a publisher whose origin connection broke is
	// kept while a new origin is sought.
	RetryTimeout time.Duration
	// DialTimeout bounds connecting to an origin until it accepted the
	// publish (5 s).
	DialTimeout time.Duration
}

// Metrics of the forwarder.
type Metrics struct {
	Active prometheus.Gauge
	Total  *prometheus.CounterVec // result
	Moves  *prometheus.CounterVec // reason, result
}

// NewMetrics registers the forwarder's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livecluster_edge_forwarded_publishes", Help: "Publishes being forwarded to an origin.",
		}),
		Total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livecluster_edge_forwarded_publishes_total", Help: "Publishes forwarded, by result.",
		}, []string{"result"}),
		Moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livecluster_edge_forward_moves_total", Help: "Forwarded publishes moved to another origin.",
		}, []string{"reason", "result"}),
	}
	reg.MustRegister(m.Active, m.Total, m.Moves)
	return m
}

// Watcher is the edge's stream watch (a *directory.Directory): subscribing
// a key puts it in the edge's WatchStreams key set.
type Watcher interface {
	Subscribe(key streamkey.Key) *directory.Sub
}

// Options configure a Forwarder.
type Options struct {
	OCM *ocmclient.Client
	// Dir tells the forward when its origin starts DRAINING.
	Dir      Watcher
	NodeID   string // this edge, sent as streamkey.ForwardedByParam
	Zone     string
	Settings func() Settings
	RTMP     rtmp.Config
	// LegQuery returns the credential query a forwarded publish of key
	// carries (authz.Manager.LegQuery); nil or an empty result: none.
	LegQuery func(key streamkey.Key) (url.Values, error)
	// Hub bounds the per-publish buffer each origin leg reads from.
	Hub     hub.Config
	Logger  *slog.Logger
	Metrics *Metrics
}

// Forwarder serves publishes.
type Forwarder struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	forwards map[*forward]struct{}
}

// New returns a Forwarder; Run must run to follow origin drains.
func New(opts Options) *Forwarder {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Forwarder{opts: opts, log: opts.Logger.With("component", "forward"), forwards: map[*forward]struct{}{}}
}

func (f *Forwarder) settings() Settings {
	s := f.opts.Settings()
	if s.WaitTimeout <= 0 {
		s.WaitTimeout = 5 * time.Second
	}
	if s.PollInterval <= 0 {
		s.PollInterval = 10 * time.Second
	}
	if s.RetryTimeout <= 0 {
		s.RetryTimeout = 30 * time.Second
	}
	if s.DialTimeout <= 0 {
		s.DialTimeout = 5 * time.Second
	}
	return s
}

// Active returns the number of publishes being forwarded.
func (f *Forwarder) Active() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.forwards)
}

// Info describes one forward for the API.
type Info struct {
	Key    string    `json:"key"`
	Origin string    `json:"origin"`
	Moves  int       `json:"moves"`
	Since  time.Time `json:"since"`
}

// List describes the forwards.
func (f *Forwarder) List() []Info {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Info, 0, len(f.forwards))
	for fw := range f.forwards {
		fw.mu.Lock()
		out = append(out, Info{Key: fw.key.String(), Origin: fw.leg.origin.GetId(), Moves: fw.moves, Since: fw.since})
		fw.mu.Unlock()
	}
	return out
}

// Run polls the origins' states while publishes are forwarded and moves
// those whose origin is DRAINING or gone. The watch normally moves them
// first; this is the safety net. It returns when ctx ends.
func (f *Forwarder) Run(ctx context.Context) {
	for {
		if !backoff.Sleep(ctx, f.settings().PollInterval) {
			return
		}
		if f.Active() == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		nodes, err := f.opts.OCM.Nodes(cctx, ocmv1.NodeRole_NODE_ROLE_ORIGIN)
		cancel()
		if err != nil {
			// The OCM is unreachable: keep forwarding where we are.
			f.log.Debug("list origins failed", "err", err.Error())
			continue
		}
		states := map[string]ocmv1.NodeState{}
		for _, n := range nodes {
			states[n.GetId()] = n.GetState()
		}
		f.mu.Lock()
		for fw := range f.forwards {
			id := fw.originID()
			st, ok := states[id]
			switch {
			case !ok:
				fw.requestMove("origin " + id + " left the cluster (poll)")
			case st == ocmv1.NodeState_NODE_STATE_DRAINING:
				fw.requestMove("origin " + id + " is draining (poll)")
			}
		}
		f.mu.Unlock()
	}
}

// Refused is why a publish cannot be forwarded; Msg is meant for the
// publisher. Err is the cause: an origin's refusal is its *rtmp.StatusError,
// which the RTMP adapter passes on with the origin's own code.
type Refused struct {
	Msg string
	Err error
}

func (r *Refused) Error() string { return r.Msg }
func (r *Refused) Unwrap() error { return r.Err }

// Serve forwards one publish of src (the publisher's connection; key is its
// stream, remote its address for the logs). It returns:
//   - a *Refused before anything was read from src when no origin takes the
//     stream (none available, unreachable, or the origin refused it): the
//     adapter refuses the publish in its protocol;
//   - nil when the publisher ended the stream or left;
//   - the reason when the forward failed for good (no origin left within
//     Settings.RetryTimeout after the connection broke): src is closed;
//   - any other error that ended it.
func (f *Forwarder) Serve(ctx context.Context, key streamkey.Key, remote string, src stream.Source) error {
	log := f.log.With("stream", key.String(), "remote", remote)
	// Find an origin and have it accept the publish before the publisher
	// is accepted (its codecs read), so a refusal reaches the publisher.
	origin, conn, err := f.open(ctx, key, log)
	if err != nil {
		return err
	}
	h := hub.New(key.String(), f.opts.Hub)
	defer h.Close()
	pump, err := stream.Start(h, src, stream.Options{}) // accepts the publisher
	if err != nil {
		conn.Close()
		f.total("publisher_failed")
		return fmt.Errorf("forward %s: %w", key, err)
	}
	fctx, fcancel := context.WithCancelCause(ctx)
	defer fcancel(nil)
	fw, err := f.start(fctx, fcancel, key, h, origin, conn, log)
	if err != nil {
		conn.Close()
		return fmt.Errorf("forward %s: %w", key, err)
	}
	defer fw.stop()
	f.total("ok")
	log.Info("forwarding publish", "origin", origin.GetId())

	// A forward that fails (supervise gave up) ends the pump with its cause,
	// closing the publisher's connection at once.
	err = pump.Run(fctx)
	if cause := context.Cause(fctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if err == nil || errors.Is(err, context.Canceled) {
		log.Info("publisher finished")
		return nil
	}
	return err
}

// open finds an origin for key and opens the forward to it, waiting for its
// accept. The error is a *Refused.
func (f *Forwarder) open(ctx context.Context, key streamkey.Key, log *slog.Logger) (*ocmv1.Node, *originConn, error) {
	actx, cancel := context.WithTimeout(ctx, f.settings().WaitTimeout)
	origin, err := f.assign(actx, key, nil)
	cancel()
	if err != nil {
		f.total("no_origin")
		log.Warn("publish refused: no origin", "err", err.Error())
		return nil, nil, &Refused{Msg: "no origin available for " + key.String() + ": " + err.Error(), Err: err}
	}
	conn, err := f.dialOrigin(ctx, key, origin)
	if err != nil {
		f.total("refused")
		var se *rtmp.StatusError
		if errors.As(err, &se) {
			log.Info("publish refused by the origin", "origin", origin.GetId(), "code", se.Code, "err", se.Description)
			return nil, nil, &Refused{Msg: se.Description, Err: se}
		}
		log.Warn("publish refused: origin unreachable", "origin", origin.GetId(), "err", err.Error())
		return nil, nil, &Refused{Msg: "origin unreachable for " + key.String(), Err: err}
	}
	return origin, conn, nil
}

// start runs the forward of h to origin over conn: its first leg and its
// supervisor, which moves it when the origin drains or the leg breaks.
func (f *Forwarder) start(ctx context.Context, fail context.CancelCauseFunc, key streamkey.Key, h *hub.Hub,
	origin *ocmv1.Node, conn *originConn, log *slog.Logger) (*forward, error) {
	fw := &forward{
		f: f, key: key, h: h, log: log, since: time.Now(),
		moveReq: make(chan string, 1), ctx: ctx, fail: fail, supervised: make(chan struct{}),
	}
	// Watch the key before the forward runs, so a drain from here on is
	// seen (a new watch starts with the current owner, DRAINING or not).
	if f.opts.Dir != nil {
		fw.sub = f.opts.Dir.Subscribe(key)
	}
	leg, err := fw.startLeg(origin, conn)
	if err != nil {
		if fw.sub != nil {
			fw.sub.Close()
		}
		return nil, err
	}
	fw.leg = leg
	f.mu.Lock()
	f.forwards[fw] = struct{}{}
	f.mu.Unlock()
	f.gauge(1)
	go func() {
		defer close(fw.supervised)
		fw.supervise()
	}()
	return fw, nil
}

// stop ends the forward: its supervisor, then its current leg.
func (fw *forward) stop() {
	f := fw.f
	fw.fail(nil)
	<-fw.supervised
	fw.mu.Lock()
	l := fw.leg
	fw.mu.Unlock()
	l.stop()
	if fw.sub != nil {
		fw.sub.Close()
	}
	f.mu.Lock()
	delete(f.forwards, fw)
	f.mu.Unlock()
	f.gauge(-1)
}

func (f *Forwarder) gauge(d float64) {
	if f.opts.Metrics != nil {
		f.opts.Metrics.Active.Add(d)
	}
}

func (f *Forwarder) total(result string) {
	if f.opts.Metrics != nil {
		f.opts.Metrics.Total.WithLabelValues(result).Inc()
	}
}

func (f *Forwarder) moved(reason, result string) {
	if f.opts.Metrics != nil {
		f.opts.Metrics.Moves.WithLabelValues(reason, result).Inc()
	}
}

// assign asks the OCM where key should go, retrying transient failures
// until ctx ends. exclude lists origins not to use (the one being left).
// The OCM never names a DRAINING or excluded origin (for an owned stream it
// then places the stream elsewhere and the new origin takes it over); an
// answer that does anyway (an OCM older than that contract) is retried.
func (f *Forwarder) assign(ctx context.Context, key streamkey.Key, exclude []string) (*ocmv1.Node, error) {
	var lastErr error
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		o, _, err := f.opts.OCM.Assign(cctx, key, f.opts.Zone, exclude)
		cancel()
		if err == nil {
			switch {
			case o.GetAddresses().GetRtmp() == "":
				err = fmt.Errorf("assigned origin %q has no RTMP address", o.GetId())
			case slices.Contains(exclude, o.GetId()) || o.GetState() == ocmv1.NodeState_NODE_STATE_DRAINING:
				err = fmt.Errorf("assigned origin %q is excluded or DRAINING", o.GetId())
			default:
				return o, nil
			}
		}
		lastErr = err
		if errors.Is(err, ocmclient.ErrInvalidArgument) || errors.Is(err, ocmclient.ErrRefused) {
			return nil, err
		}
		if !backoff.Sleep(ctx, redial.Delay(attempt)) {
			return nil, fmt.Errorf("assign origin for %s: %w", key, lastErr)
		}
	}
}

// dialOrigin opens the forward publish to origin and waits for its accept,
// for at most Settings.DialTimeout (an origin that accepts the TCP
// connection and then says nothing must not hold the publisher for the RTMP
// read timeout). ctx bounds the connection's life.
func (f *Forwarder) dialOrigin(ctx context.Context, key streamkey.Key, origin *ocmv1.Node) (*originConn, error) {
	q := key.ForwardQuery(f.opts.NodeID)
	if f.opts.LegQuery != nil {
		lq, err := f.opts.LegQuery(key)
		if err != nil {
			return nil, fmt.Errorf("forward %s: %w", key, err)
		}
		for k, v := range lq {
			q[k] = v
		}
	}
	u := "rtmp://" + origin.GetAddresses().GetRtmp() + "/" + key.App + "/" + key.Name + "?" + q.Encode()
	timeout := f.settings().DialTimeout
	cctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(timeout, func() {
		cancel(fmt.Errorf("origin %s did not accept the publish within %v", origin.GetId(), timeout))
	})
	fail := func(err error) (*originConn, error) {
		timer.Stop()
		if cause := context.Cause(cctx); cause != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w (%v)", cause, err)
		}
		cancel(nil)
		return nil, err
	}
	c, err := rtmp.Dial(cctx, u, f.opts.RTMP)
	if err != nil {
		return fail(err)
	}
	if err := c.Publish(); err != nil {
		c.Close()
		return fail(err)
	}
	if !timer.Stop() {
		// The timeout fired just as the origin accepted: the connection is
		// being closed under us.
		c.Close()
		return fail(errors.New("accepted too late"))
	}
	return &originConn{Conn: c, release: cancel}, nil
}

// originConn is a forward's connection to an origin; Close also releases
// the context it was dialed with.
type originConn struct {
	*rtmp.Conn
	release context.CancelCauseFunc
}

func (c *originConn) Close() error {
	err := c.Conn.Close()
	c.release(nil)
	return err
}

// forward is one publish being forwarded.
type forward struct {
	f     *Forwarder
	key   streamkey.Key
	h     *hub.Hub
	log   *slog.Logger
	since time.Time
	ctx   context.Context
	fail  context.CancelCauseFunc
	// supervised is closed when supervise returned.
	supervised chan struct{}

	moveReq chan string
	sub     *directory.Sub // nil without a Watcher

	mu    sync.Mutex
	leg   *leg
	moves int
}

func (fw *forward) originID() string {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.leg.origin.GetId()
}

func (fw *forward) requestMove(reason string) {
	select {
	case fw.moveReq <- reason:
	default:
	}
}

// leg is one connection to an origin, fed by a hub reader.
type leg struct {
	origin *ocmv1.Node
	conn   *originConn
	rd     *hub.Reader
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (fw *forward) startLeg(origin *ocmv1.Node, conn *originConn) (*leg, error) {
	rd, err := fw.h.NewReader()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(fw.ctx)
	l := &leg{origin: origin, conn: conn, rd: rd, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.err = rd.CopyTo(ctx, conn.WriteTags)
	}()
	return l, nil
}

func (l *leg) stop() {
	l.cancel()
	l.rd.Close()
	_ = l.conn.Close()
	<-l.done
}

// ownerDraining reports whether the watch says origin, the forward's
// current origin, owns the stream and is DRAINING.
func (fw *forward) ownerDraining(origin string) bool {
	if fw.sub == nil {
		return false
	}
	o, ok := fw.sub.Owner()
	return ok && o.NodeID == origin && o.State == ocmv1.NodeState_NODE_STATE_DRAINING
}

// reasonOwnerDraining is the move reason logged when the watch reported the
// drain.
const reasonOwnerDraining = "owner draining"

// supervise moves the forward when the watch says the origin is DRAINING,
// when asked (the poll), or when the current leg breaks; it returns when the
// forward ends.
func (fw *forward) supervise() {
	f := fw.f
	var brokenSince time.Time
	// failedDial is the origin the last attempt could not reach: passed
	// over on the next attempt only, so a READY origin is never excluded
	// for good.
	var failedDial string
	var changed <-chan struct{}
	if fw.sub != nil {
		changed = fw.sub.Changed()
	}
	// retry re-checks a drain whose move failed while the leg still works.
	var retry *time.Timer
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		fw.mu.Lock()
		cur := fw.leg
		fw.mu.Unlock()
		var reason string
		select {
		case <-fw.ctx.Done():
			return
		case reason = <-fw.moveReq:
		case <-changed:
			if !fw.ownerDraining(cur.origin.GetId()) {
				continue
			}
			reason = reasonOwnerDraining
		case <-retryC:
			retryC = nil
			if !fw.ownerDraining(cur.origin.GetId()) {
				continue
			}
			reason = reasonOwnerDraining + " (retry)"
		case <-cur.done:
			if fw.ctx.Err() != nil {
				return
			}
			reason = "connection to origin " + cur.origin.GetId() + " lost"
			if cur.err != nil {
				reason += ": " + cur.err.Error()
			}
			if brokenSince.IsZero() {
				brokenSince = time.Now()
			}
		}
		broken := isDone(cur.done)
		fw.log.Info("moving forwarded publish", "from", cur.origin.GetId(), "reason", reason)
		start := time.Now()
		next, conn, err := fw.connectNew(fw.exclude(cur.origin.GetId(), broken, failedDial))
		failedDial = ""
		if err != nil && next != nil {
			failedDial = next.GetId()
		}
		if err == nil {
			var l *leg
			l, err = fw.startLeg(next, conn)
			if err == nil {
				fw.mu.Lock()
				fw.leg = l
				fw.moves++
				fw.mu.Unlock()
				cur.stop() // break only after make
				brokenSince = time.Time{}
				f.moved(kind(broken), "ok")
				fw.log.Info("forwarded publish moved", "from", cur.origin.GetId(), "to", next.GetId(),
					"move_ms", time.Since(start).Milliseconds())
				continue
			}
			conn.Close()
		}
		f.moved(kind(broken), "error")
		if !broken {
			fw.log.Warn("moving forwarded publish failed; staying", "from", cur.origin.GetId(), "err", err.Error())
			// Try again while the watch still says the origin drains (the
			// poll, or the leg breaking, also lead here).
			if retry == nil {
				retry = time.NewTimer(time.Second)
			} else {
				retry.Reset(time.Second)
			}
			retryC = retry.C
			continue
		}
		if time.Since(brokenSince) > f.settings().RetryTimeout {
			fw.log.Warn("no origin for the forwarded publish; closing the publisher", "err", err.Error())
			fw.fail(fmt.Errorf("forward %s: origin lost and no other origin: %w", fw.key, err))
			return
		}
		fw.log.Info("no origin for the forwarded publish yet; retrying", "err", err.Error())
		if !backoff.Sleep(fw.ctx, 500*time.Millisecond) {
			return
		}
		// Loop: cur.done is closed, so the next round retries at once.
	}
}

func kind(broken bool) string {
	if broken {
		return "connection_lost"
	}
	return "origin_draining"
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// exclude lists the origins the next AssignOrigin must pass over. A move
// away from an origin that drains or left (!broken) never lands on it again.
// A broken connection to an origin that is still READY may go back to it:
// the leg broke, not necessarily the origin, and excluding it would leave a
// stream with one READY origin unowned for good while its publisher is
// still connected. Only an origin whose dial just failed is passed over
// once more.
func (fw *forward) exclude(from string, broken bool, failedDial string) []string {
	var ex []string
	if !broken || fw.ownerDraining(from) {
		ex = append(ex, from)
	}
	if failedDial != "" && !slices.Contains(ex, failedDial) {
		ex = append(ex, failedDial)
	}
	return ex
}

// connectNew finds an origin not in exclude and opens a forward to it. When
// the origin was found but the dial failed, it returns that origin with the
// error, so the caller can pass over it next time.
func (fw *forward) connectNew(exclude []string) (*ocmv1.Node, *originConn, error) {
	f := fw.f
	ctx, cancel := context.WithTimeout(fw.ctx, f.settings().WaitTimeout)
	defer cancel()
	next, err := f.assign(ctx, fw.key, exclude)
	if err != nil {
		return nil, nil, err
	}
	conn, err := f.dialOrigin(fw.ctx, fw.key, next)
	if err != nil {
		return next, nil, fmt.Errorf("forward %s to %s: %w", fw.key, next.GetId(), err)
	}
	return next, conn, nil
}
