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
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/edge/internal/directory"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/rtmp"
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

// ServePublish forwards one publish; it implements half of rtmp.Handler.
func (f *Forwarder) ServePublish(ctx context.Context, c *rtmp.Conn) error {
	key, err := c.Request().Key()
	if err != nil {
		return err
	}
	log := f.log.With("stream", key.String(), "remote", c.RemoteAddr().String())
	st := f.settings()

	// Find an origin and have it accept the publish before the publisher
	// is accepted, so a refusal reaches the publisher.
	actx, cancel := context.WithTimeout(ctx, st.WaitTimeout)
	origin, err := f.assign(actx, key, nil)
	cancel()
	if err != nil {
		f.total("no_origin")
		log.Warn("publish refused: no origin", "err", err.Error())
		return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: "no origin available for " + key.String() + ": " + err.Error()}
	}
	conn, err := f.dialOrigin(ctx, key, origin)
	if err != nil {
		f.total("refused")
		var se *rtmp.StatusError
		if errors.As(err, &se) {
			log.Info("publish refused by the origin", "origin", origin.GetId(), "code", se.Code, "err", se.Description)
			return &rtmp.StatusError{Code: se.Code, Description: se.Description}
		}
		log.Warn("publish refused: origin unreachable", "origin", origin.GetId(), "err", err.Error())
		return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: "origin unreachable for " + key.String()}
	}

	streams, err := c.Streams() // accepts the publisher
	if err != nil {
		conn.Close()
		f.total("publisher_failed")
		return fmt.Errorf("forward %s: read publisher codecs: %w", key, err)
	}
	h := hub.New(key.String(), f.opts.Hub)
	defer h.Close()
	src, err := h.Publish(streams, c.Metadata())
	if err != nil {
		conn.Close()
		return fmt.Errorf("forward %s: %w", key, err)
	}
	// Watch the key before the forward runs, so a drain from here on is
	// seen (a new watch starts with the current owner, DRAINING or not).
	var sub *directory.Sub
	if f.opts.Dir != nil {
		sub = f.opts.Dir.Subscribe(key)
		defer sub.Close()
	}
	fctx, fcancel := context.WithCancelCause(ctx)
	defer fcancel(nil)
	fw := &forward{
		f: f, key: key, h: h, log: log, since: time.Now(),
		moveReq: make(chan string, 1), sub: sub, ctx: fctx, fail: fcancel,
	}
	leg, err := fw.startLeg(origin, conn)
	if err != nil {
		conn.Close()
		return fmt.Errorf("forward %s: %w", key, err)
	}
	fw.leg = leg
	f.mu.Lock()
	f.forwards[fw] = struct{}{}
	f.mu.Unlock()
	f.gauge(1)
	f.total("ok")
	log.Info("forwarding publish", "origin", origin.GetId())
	defer func() {
		f.mu.Lock()
		delete(f.forwards, fw)
		f.mu.Unlock()
		f.gauge(-1)
	}()

	// A forward that fails (supervise gave up) ends the publisher's blocked
	// read at once instead of at its read timeout.
	stopClose := context.AfterFunc(fctx, func() { c.Close() })
	defer stopClose()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		fw.supervise()
	}()
	defer func() {
		fcancel(nil)
		wg.Wait()
		fw.mu.Lock()
		l := fw.leg
		fw.mu.Unlock()
		l.stop()
	}()

	for {
		pkt, err := c.ReadPacket()
		if errors.Is(err, rtmp.ErrCodecChanged) {
			streams, err = c.Streams()
			if err == nil {
				src, err = h.Splice(streams, c.Metadata())
			}
			if err != nil {
				return fmt.Errorf("forward %s: codec change: %w", key, err)
			}
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				log.Info("publisher finished")
				return nil
			}
			if cause := context.Cause(fctx); cause != nil && !errors.Is(cause, context.Canceled) {
				return cause
			}
			return err
		}
		if err := src.WritePacket(pkt); err != nil {
			return fmt.Errorf("forward %s: %w", key, err)
		}
	}
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

// dialOrigin opens the forward publish to origin and waits for its accept.
func (f *Forwarder) dialOrigin(ctx context.Context, key streamkey.Key, origin *ocmv1.Node) (*rtmp.Conn, error) {
	q := key.ForwardQuery(f.opts.NodeID)
	u := "rtmp://" + origin.GetAddresses().GetRtmp() + "/" + key.App + "/" + key.Name + "?" + q.Encode()
	// ctx is the publish's lifetime; the set-up is bounded by the RTMP
	// handshake and read timeouts.
	c, err := rtmp.Dial(ctx, u, f.opts.RTMP)
	if err != nil {
		return nil, err
	}
	if err := c.Publish(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
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
	conn   *rtmp.Conn
	rd     *hub.Reader
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (fw *forward) startLeg(origin *ocmv1.Node, conn *rtmp.Conn) (*leg, error) {
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
		next, conn, err := fw.connectNew(cur.origin.GetId())
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

// connectNew finds an origin other than from and opens a forward to it.
func (fw *forward) connectNew(from string) (*ocmv1.Node, *rtmp.Conn, error) {
	f := fw.f
	ctx, cancel := context.WithTimeout(fw.ctx, f.settings().WaitTimeout)
	defer cancel()
	next, err := f.assign(ctx, fw.key, []string{from})
	if err != nil {
		return nil, nil, err
	}
	conn, err := f.dialOrigin(fw.ctx, fw.key, next)
	if err != nil {
		return nil, nil, fmt.Errorf("forward %s to %s: %w", fw.key, next.GetId(), err)
	}
	return next, conn, nil
}
