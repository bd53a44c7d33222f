// Package relay pulls streams from their owners for the edge's players:
// one upstream per stream however many players watch it, fanned out
// through a media hub.
//
// A session starts with its first player. It finds the owner (waiting up to
// the wait timeout for the stream to be published), opens the upstream (RTMP
// or HTTP-FLV at the owner's advertised address) and splices it into the
// hub. When the owner changes (the directory's watch says so) it opens the
// new upstream first and splices it under the running players, then closes
// the old one, so players keep their connection: the hub resends codec
// headers and keeps timestamps monotonic. When an upstream ends without a
// new owner in sight, players stay attached (silent) while the session looks
// for the stream again, for up to the owner-loss hold (the wait timeout
// applies only to a stream never seen playing). A session with no player for the
// idle timeout closes its upstream.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nareix/joy4/av"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/edge/internal/directory"
	"github.com/livecluster/livecluster/media/httpflv"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/media/stream"
	"github.com/livecluster/livecluster/streamkey"
)

// Upstream protocols.
const (
	ProtocolRTMP = "rtmp"
	ProtocolFLV  = "flv"
)

// DefaultStallTimeout is the default Settings.StallTimeout: a live stream
// carries audio and video many times a second, so a few seconds without a
// packet means the leg is stuck, not the stream quiet.
const DefaultStallTimeout = 5 * time.Second

// errStalled is why a stalled upstream was dropped.
var errStalled = errors.New("upstream stalled: no media arrived within the stall timeout")

// DefaultOwnerLossHold is the default Settings.OwnerLossHold: the default
// lease TTL (10 s) plus a few seconds for the publisher to come back.
const DefaultOwnerLossHold = 15 * time.Second

// ErrNotFound is returned to a player of a stream that did not appear
// within the wait timeout.
var ErrNotFound = errors.New("stream not found")

// Settings are read for every new session or upstream, so they reload live.
type Settings struct {
	IdleTimeout time.Duration
	// WaitTimeout is how long a new session waits for a stream never seen
	// playing here to be published.
	WaitTimeout time.Duration
	// OwnerLossHold is how long a session whose stream was playing keeps its
	// players (silent, connected) while it has no upstream, so that the
	// owner can come back anywhere (lease TTL plus the publisher's retry);
	// then they are closed. Default DefaultOwnerLossHold.
	OwnerLossHold time.Duration
	Protocol      string // ProtocolRTMP or ProtocolFLV
	// DialTimeout bounds opening an upstream until its codecs are known.
	DialTimeout time.Duration
	// StallTimeout drops an upstream that delivered no packet for this
	// long (a cut link to its owner, a frozen origin: TCP may take many
	// minutes to notice, an HTTP-FLV pull never does) and pulls again from
	// the owner the OCM names, maybe the same origin, holding the players
	// as for an owner loss. 0: never.
	StallTimeout time.Duration
}

// Metrics of the relay; NewMetrics registers them.
type Metrics struct {
	Upstreams   prometheus.Gauge
	Stalls      prometheus.Counter
	Switches    *prometheus.CounterVec // reason
	Starts      *prometheus.CounterVec // protocol, result
	SwitchDelay prometheus.Histogram
	// PlayerWait is how long media waits in the edge before it is written
	// to a player (hub.Config.WriteDelay of every pulled stream's hub), by
	// until: "taken" (by the player's writer) or "written".
	PlayerWait *prometheus.HistogramVec
}

// NewMetrics registers the relay's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Upstreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livecluster_edge_upstreams", Help: "Open upstream pulls (one per stream served).",
		}),
		Stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livecluster_edge_upstream_stalls_total",
			Help: "Upstreams dropped because no media arrived within edge.upstream.stallTimeout (then pulled again).",
		}),
		Switches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livecluster_edge_upstream_switches_total",
			Help: "Upstreams replaced under running players (owner_changed: make-before-break; reconnect: after the old one ended).",
		}, []string{"reason"}),
		Starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livecluster_edge_upstream_dials_total", Help: "Upstream connection attempts.",
		}, []string{"protocol", "result"}),
		SwitchDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "livecluster_edge_upstream_switch_seconds",
			Help:    "Time from noticing an owner change or upstream loss to splicing the new upstream.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10},
		}),
		PlayerWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "livecluster_edge_player_wait_seconds",
			Help: "Time media waits in the edge before it is written to a player, once per write for its oldest tag, from its " +
				"arrival from upstream (so edge.mergeWindow included) until the player's writer took it (until=taken: the edge's " +
				"part) and until the write ended (until=written: taken plus the write, which waits for a player whose socket is full).",
			// Fine steps around the default 50 ms window and the 150 ms
			// latency budget on top of it, where an operator reads p99.
			Buckets: []float64{.01, .02, .03, .04, .05, .06, .07, .08, .09, .1, .125, .15, .175, .2, .25, .3, .4, .5, .75, 1, 1.5, 2, 3, 5},
		}, []string{"until"}),
	}
	reg.MustRegister(m.Upstreams, m.Stalls, m.Switches, m.Starts, m.SwitchDelay, m.PlayerWait)
	return m
}

// Options configure a Manager.
type Options struct {
	Dir      *directory.Directory
	Settings func() Settings
	// Hub bounds the per-stream buffers.
	Hub        hub.Config
	RTMP       rtmp.Config
	HTTPClient *http.Client
	Logger     *slog.Logger
	// LegQuery returns the credential query an upstream pull of key
	// carries (authz.Manager.LegQuery); nil or an empty result: none.
	LegQuery func(key streamkey.Key) (url.Values, error)
	Metrics  *Metrics
}

// Manager owns the pull sessions.
type Manager struct {
	opts Options
	log  *slog.Logger
	ctx  context.Context
	stop context.CancelFunc

	mu       sync.Mutex
	sessions map[string]*session
	wg       sync.WaitGroup
}

// New returns a Manager; Close stops every session.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.HTTPClient == nil {
		// One connection per pull, never a pooled one: a pull lives long,
		// so pooling saves nothing, and a pooled connection may sit on a
		// link that was cut meanwhile (the re-pull after a stall would
		// then stall on it until its dial timeout).
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DisableKeepAlives = true
		opts.HTTPClient = &http.Client{Transport: tr}
	}
	if opts.Metrics != nil && opts.Hub.WriteDelay == nil {
		// Resolved once: this runs per player per window.
		taken, written := opts.Metrics.PlayerWait.WithLabelValues("taken"), opts.Metrics.PlayerWait.WithLabelValues("written")
		opts.Hub.WriteDelay = func(t, w time.Duration) {
			taken.Observe(t.Seconds())
			written.Observe(w.Seconds())
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{
		opts: opts, log: opts.Logger.With("component", "relay"),
		ctx: ctx, stop: cancel, sessions: map[string]*session{},
	}
}

// Close ends every session (players get EOF) and waits for them.
func (m *Manager) Close() {
	m.stop()
	m.wg.Wait()
}

// Acquire returns the hub of key for a new player, starting the upstream if
// this is the stream's first player. It waits until the upstream delivers
// codecs, at most the wait timeout (and ctx). The player attaches with
// hub.NewReader; the session closes when the hub has had no reader for the
// idle timeout.
func (m *Manager) Acquire(ctx context.Context, key streamkey.Key) (*hub.Hub, error) {
	m.mu.Lock()
	if m.ctx.Err() != nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("%s: %w (edge shutting down)", key, ErrNotFound)
	}
	s := m.sessions[key.String()]
	if s == nil {
		s = m.newSession(key)
		m.sessions[key.String()] = s
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			s.run()
		}()
	}
	s.touch()
	m.mu.Unlock()
	select {
	case <-s.ready:
		return s.hub, nil
	case <-s.failed:
		return nil, s.err
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for %s: %w", key, ctx.Err())
	}
}

// StreamInfo describes one session for the API.
type StreamInfo struct {
	Key   string `json:"key"`
	Owner string `json:"owner,omitempty"` // "node@epoch"
	// OwnerNode and Epoch name the origin and the ownership epoch of the
	// upstream playing now (the drills check that one stream never has
	// two at once).
	OwnerNode string    `json:"owner_node,omitempty"`
	Epoch     int64     `json:"epoch,omitempty"`
	Upstream  string    `json:"upstream,omitempty"`
	Players   int       `json:"players"`
	Switches  int       `json:"switches"`
	Since     time.Time `json:"since"`
	Connected bool      `json:"connected"`
	// Hub holds the stream's fan-out counters: packets and bytes in and
	// out, players skipped or dropped for falling behind, and how their
	// batches were written (by the flushers whole, handed off, or by the
	// players' own goroutines).
	Hub hub.Stats `json:"hub"`
}

// Streams lists the sessions.
func (m *Manager) Streams() []StreamInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]StreamInfo, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s.info())
	}
	return out
}

// Upstreams returns the number of open upstreams.
func (m *Manager) Upstreams() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, s := range m.sessions {
		s.mu.Lock()
		if s.cur != nil {
			n++
		}
		s.mu.Unlock()
	}
	return n
}

func (m *Manager) newSession(key streamkey.Key) *session {
	return &session{
		m: m, key: key, hub: hub.New(key.String(), m.opts.Hub),
		ready: make(chan struct{}), failed: make(chan struct{}),
		log: m.log.With("stream", key.String()), since: time.Now(),
	}
}

// session is one stream's upstream and hub.
type session struct {
	m     *Manager
	key   streamkey.Key
	hub   *hub.Hub
	log   *slog.Logger
	since time.Time

	ready, failed chan struct{}
	readyOnce     sync.Once
	failOnce      sync.Once
	err           error // set before failed is closed

	mu          sync.Mutex
	lastAcquire time.Time
	cur         *upstream
	switches    int
}

func (s *session) touch() {
	s.mu.Lock()
	s.lastAcquire = time.Now()
	s.mu.Unlock()
}

func (s *session) info() StreamInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.hub.Stats()
	in := StreamInfo{Key: s.key.String(), Players: st.Readers, Switches: s.switches, Since: s.since, Hub: st}
	if s.cur != nil {
		in.Owner, in.Upstream, in.Connected = s.cur.owner.String(), s.cur.url, true
		in.OwnerNode, in.Epoch = s.cur.owner.NodeID, s.cur.owner.Epoch
	}
	return in
}

// Playing returns the origin and epoch key's upstream plays from now
// (ok false: no session, or no upstream at the moment).
func (m *Manager) Playing(key streamkey.Key) (node string, epoch int64, ok bool) {
	m.mu.Lock()
	s := m.sessions[key.String()]
	m.mu.Unlock()
	if s == nil {
		return "", 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return "", 0, false
	}
	return s.cur.owner.NodeID, s.cur.owner.Epoch, true
}

// upstream is one open pull.
type upstream struct {
	owner  *directory.Owner
	url    string
	conn   stream.Source
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the pump ended
	err    error         // why it ended (nil: the stream ended or was replaced); read after done
	dialed time.Duration // dial until codecs known
	// spliced is when the upstream was spliced under the players;
	// lastPacket when it last delivered a packet (unix nanos), from then on.
	spliced    time.Time
	lastPacket atomic.Int64
	stalled    atomic.Bool
}

// stall drops an upstream that delivered nothing for too long; its pump
// ends with errStalled.
func (u *upstream) stall() {
	u.stalled.Store(true)
	u.stop()
}

// idle returns how long the upstream has delivered no packet.
func (u *upstream) idle(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, u.lastPacket.Load()))
}

type dialResult struct {
	up  *upstream
	err error
	gen int
}

func (s *session) settings() Settings {
	st := s.m.opts.Settings()
	if st.DialTimeout <= 0 {
		st.DialTimeout = 10 * time.Second
	}
	if st.WaitTimeout <= 0 {
		st.WaitTimeout = 5 * time.Second
	}
	if st.OwnerLossHold <= 0 {
		st.OwnerLossHold = DefaultOwnerLossHold
	}
	return st
}

// missingLimit is how long the session may stay without an upstream: the
// owner-loss hold once the stream has played here (its players are held,
// silent), the wait timeout before (nobody is attached yet).
func (l *loop) missingLimit() time.Duration {
	st := l.s.settings()
	select {
	case <-l.s.ready:
		return st.OwnerLossHold
	default:
		return st.WaitTimeout
	}
}

// loop is the state of a session's owner goroutine (run): which upstream
// plays, which dial is under way, and since when the stream is missing.
type loop struct {
	s   *session
	ctx context.Context
	sub *directory.Sub

	cur     *upstream
	dialing context.CancelFunc // non-nil while a dial runs
	dialGen int
	dialCh  chan dialResult
	dialFor *directory.Owner // owner being dialed (nil: unknown, look up)
	// lostSince is when we last had no upstream (zero while one plays);
	// changeAt when the switch under way was triggered.
	lostSince, changeAt time.Time
	retry               *time.Timer
	retryC              <-chan time.Time
	attempt             int
	idleSince           time.Time
	// stalls counts the stalls in a row of upstreams that never played
	// for a whole stall timeout (a publisher that paused: each re-pull
	// gets the origin's cached GOP, then nothing); each doubles the next
	// stall timeout, up to 8 times the setting, so such a stream is not
	// pulled again every few seconds.
	stalls int
}

// stallTimeout is the stall timeout of the current upstream (0: none).
func (l *loop) stallTimeout() time.Duration {
	st := l.s.settings().StallTimeout
	return st << min(l.stalls, 3)
}

// run is the session's owner goroutine: it decides when to dial, splices
// what was dialed, and ends the session.
func (s *session) run() {
	ctx, cancel := context.WithCancel(s.m.ctx)
	defer cancel()
	l := &loop{s: s, ctx: ctx, sub: s.m.opts.Dir.Subscribe(s.key), dialCh: make(chan dialResult, 1), lostSince: time.Now()}
	defer l.sub.Close()
	defer l.end()
	defer s.fail(fmt.Errorf("%s: %w", s.key, ErrNotFound)) // no-op once ready or failed

	l.startDial(nil)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var curDone <-chan struct{}
		if l.cur != nil {
			curDone = l.cur.done
		}
		var more bool
		select {
		case <-ctx.Done():
			s.fail(fmt.Errorf("%s: %w (edge shutting down)", s.key, ErrNotFound))
			return
		case <-l.sub.Changed():
			more = l.ownerChanged()
		case r := <-l.dialCh:
			more = l.dialed(r)
		case <-curDone:
			more = l.upstreamEnded()
		case <-l.retryC:
			more = l.retried()
		case <-tick.C:
			more = l.ticked()
		}
		if !more {
			return
		}
	}
}

// fail ends the wait of the players that are not attached yet with err.
func (s *session) fail(err error) {
	s.failOnce.Do(func() {
		s.err = err
		close(s.failed)
	})
}

// end stops the dial and the upstream and closes the hub (players get EOF).
func (l *loop) end() {
	s, m := l.s, l.s.m
	if l.dialing != nil {
		l.dialing()
	}
	if l.retry != nil {
		l.retry.Stop()
	}
	m.mu.Lock()
	if m.sessions[s.key.String()] == s {
		delete(m.sessions, s.key.String())
	}
	m.mu.Unlock()
	if l.cur != nil {
		l.cur.stop()
		m.gauge(-1)
	}
	s.setCur(nil)
	s.hub.Close()
}

func (s *session) setCur(up *upstream) {
	s.mu.Lock()
	s.cur = up
	s.mu.Unlock()
}

// startDial opens an upstream from o (nil: look the owner up) in the
// background, replacing a dial under way; the result arrives on dialCh.
func (l *loop) startDial(o *directory.Owner) {
	if l.dialing != nil {
		l.dialing()
	}
	l.dialGen++
	gen := l.dialGen
	dctx, dcancel := context.WithCancel(l.ctx)
	l.dialing, l.dialFor = dcancel, o
	go func() {
		up, err := l.s.dial(dctx, o)
		if err != nil {
			dcancel()
		} else {
			// The upstream's context derives from dctx; releasing dctx
			// with the upstream keeps a long session from piling up one
			// child context per owner change.
			cancelUp := up.cancel
			up.cancel = func() { cancelUp(); dcancel() }
		}
		select {
		case l.dialCh <- dialResult{up: up, err: err, gen: gen}:
		case <-l.ctx.Done():
			if up != nil {
				up.stop()
			}
		}
	}()
}

func (l *loop) scheduleRetry() {
	l.attempt++
	d := min(100*time.Millisecond<<min(l.attempt-1, 4), time.Second)
	if l.retry == nil {
		l.retry = time.NewTimer(d)
	} else {
		l.retry.Reset(d)
	}
	l.retryC = l.retry.C
}

// ownerChanged dials a new owner the watch reported (make-before-break:
// the current upstream plays on until the new one is spliced).
func (l *loop) ownerChanged() bool {
	o, ok := l.sub.Owner()
	if !ok {
		return true // unpublished: the running upstream ends by itself
	}
	if l.cur != nil && l.cur.owner.Same(o) || l.dialing != nil && l.dialFor.Same(o) {
		return true
	}
	l.s.log.Info("stream owner changed; opening the new upstream", "from", ownerName(l.cur), "to", o.String())
	l.changeAt = time.Now()
	l.attempt = 0
	l.stalls = 0 // a new owner starts with the stall timeout as set
	l.startDial(o)
	return true
}

// dialed splices a dialed upstream under the players, or schedules a retry;
// it ends the session when the stream stayed missing past the wait timeout.
func (l *loop) dialed(r dialResult) bool {
	s, m := l.s, l.s.m
	if r.gen != l.dialGen {
		if r.up != nil {
			r.up.stop()
		}
		return true
	}
	l.dialing, l.dialFor = nil, nil
	if r.err != nil {
		m.count(r.err)
		if l.lostSince.IsZero() {
			// The running upstream still plays; try the new owner again.
			s.log.Info("new upstream not ready yet; keeping the current one", "err", r.err.Error())
		} else if limit := l.missingLimit(); time.Since(l.lostSince) > limit {
			s.log.Info("stream not available; closing its players", "err", r.err.Error(), "waited", limit.String())
			s.fail(notFound(s.key, r.err, limit))
			return false
		}
		l.scheduleRetry()
		return true
	}
	m.count(nil)
	up := r.up
	if o, ok := l.sub.Owner(); ok && o.Epoch > up.owner.Epoch {
		// A newer ownership became known while this dial ran: never
		// splice the old one in; open the new owner instead.
		s.log.Info("dialed upstream is older than the stream's current owner; dropping it",
			"dialed", up.owner.String(), "owner", o.String())
		up.stop()
		l.startDial(o)
		return true
	}
	up.spliced = time.Now()
	up.lastPacket.Store(up.spliced.UnixNano())
	pump, err := stream.Start(s.hub, up.conn, stream.Options{Splice: true,
		OnPacket: func(av.Packet) { up.lastPacket.Store(time.Now().UnixNano()) }})
	if err != nil {
		up.stop()
		return false
	}
	go up.run(pump)
	reason := "owner_changed"
	if l.cur != nil {
		l.cur.stop()
	} else {
		m.gauge(1)
		reason = "reconnect"
	}
	first := false
	s.readyOnce.Do(func() {
		s.failOnce.Do(func() {}) // ready wins: later failures close players instead
		close(s.ready)
		first = true
	})
	trigger := l.changeAt
	if trigger.IsZero() || !l.lostSince.IsZero() && l.lostSince.After(trigger) {
		trigger = l.lostSince
	}
	if first {
		s.log.Info("upstream opened", "owner", up.owner.String(), "url", up.url, "dial_ms", up.dialed.Milliseconds())
	} else {
		delay := time.Since(trigger)
		m.switched(reason, delay)
		s.mu.Lock()
		s.switches++
		s.mu.Unlock()
		s.log.Info("upstream switched", "reason", reason, "from", ownerName(l.cur), "to", up.owner.String(),
			"url", up.url, "dial_ms", up.dialed.Milliseconds(), "switch_ms", delay.Milliseconds())
	}
	l.cur = up
	s.setCur(up)
	l.lostSince, l.changeAt, l.attempt = time.Time{}, time.Time{}, 0
	return true
}

// upstreamEnded looks for the stream again; players stay attached.
func (l *loop) upstreamEnded() bool {
	s := l.s
	s.log.Info("upstream ended", "owner", l.cur.owner.String(), "err", errString(l.cur.err))
	l.cur.stop()
	l.cur = nil
	s.m.gauge(-1)
	s.setCur(nil)
	l.lostSince = time.Now()
	l.attempt = 0
	if l.dialing == nil {
		// Look the owner up again; if it is the same one, the origin just
		// dropped us and a new pull fixes it.
		l.startDial(nil)
	}
	return true
}

func (l *loop) retried() bool {
	l.retryC = nil
	if l.dialing != nil {
		return true
	}
	o, ok := l.sub.Owner()
	if !ok || l.cur != nil && l.cur.owner.Same(o) {
		o = nil
	}
	if l.cur != nil && o == nil {
		return true // nothing new to switch to
	}
	l.startDial(o)
	return true
}

// ticked ends a session whose stream stayed missing past the wait timeout,
// or which had no player for the idle timeout, and drops an upstream that
// stalled (its end then pulls again, as for any upstream that ended).
func (l *loop) ticked() bool {
	s := l.s
	if l.cur == nil {
		return l.dialing != nil || l.retryC != nil || time.Since(l.lostSince) <= l.missingLimit()
	}
	if st := l.stallTimeout(); st > 0 && !l.cur.stalled.Load() {
		now := time.Now()
		if idle := l.cur.idle(now); idle >= st {
			s.log.Warn("upstream stalled: no media; dropping it and pulling again", "owner", l.cur.owner.String(),
				"url", l.cur.url, "idle_ms", idle.Milliseconds(), "stall_timeout", st.String(), "stalls_in_a_row", l.stalls+1)
			s.m.stalled()
			if now.Sub(l.cur.spliced)-idle < s.settings().StallTimeout {
				l.stalls++
			} else {
				l.stalls = 0
			}
			l.cur.stall()
			return true
		}
	}
	if s.hub.NumReaders() > 0 {
		l.idleSince = time.Time{}
		return true
	}
	s.mu.Lock()
	last := s.lastAcquire
	s.mu.Unlock()
	if l.idleSince.IsZero() {
		l.idleSince = time.Now()
	}
	from := l.idleSince
	if last.After(from) {
		from = last
	}
	if idle := s.settings().IdleTimeout; time.Since(from) >= idle {
		s.log.Info("no players; closing the upstream", "idle", idle.String())
		return false
	}
	return true
}

func notFound(key streamkey.Key, cause error, waited time.Duration) error {
	switch {
	case errors.Is(cause, directory.ErrUnavailable):
		return fmt.Errorf("stream %s: %w", key, cause)
	case errors.Is(cause, directory.ErrNotFound):
		return fmt.Errorf("%s: %w: not published within %s", key, ErrNotFound, waited.Round(time.Millisecond))
	}
	return fmt.Errorf("%s: %w: %v", key, ErrNotFound, cause)
}

func ownerName(u *upstream) string {
	if u == nil {
		return "<none>"
	}
	return u.owner.String()
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func (m *Manager) gauge(d float64) {
	if m.opts.Metrics != nil {
		m.opts.Metrics.Upstreams.Add(d)
	}
}

func (m *Manager) stalled() {
	if m.opts.Metrics != nil {
		m.opts.Metrics.Stalls.Inc()
	}
}

func (m *Manager) count(err error) {
	if m.opts.Metrics == nil {
		return
	}
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.opts.Metrics.Starts.WithLabelValues(m.opts.Settings().Protocol, res).Inc()
}

func (m *Manager) switched(reason string, d time.Duration) {
	if m.opts.Metrics == nil {
		return
	}
	m.opts.Metrics.Switches.WithLabelValues(reason).Inc()
	m.opts.Metrics.SwitchDelay.Observe(d.Seconds())
}

// dial resolves the owner (when o is nil or lacks addresses) and opens the
// upstream until its codecs are known.
func (s *session) dial(ctx context.Context, o *directory.Owner) (*upstream, error) {
	st := s.settings()
	if o == nil || o.RTMP == "" || o.HTTP == "" {
		lctx, cancel := context.WithTimeout(ctx, st.WaitTimeout)
		owner, err := s.m.opts.Dir.Lookup(lctx, s.key)
		cancel()
		if err != nil {
			return nil, err
		}
		o = owner
	}
	start := time.Now()
	uctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(st.DialTimeout, cancel)
	defer timer.Stop()
	var (
		conn stream.Source
		u    string
		err  error
	)
	// The epoch goes along: the origin serves the pull only while it owns
	// the stream at exactly that epoch (a fenced or replaced owner refuses,
	// and the session looks the owner up again). The relay marker: the
	// origin does not hold this pull for its merge window, only the edge's
	// own window applies end to end.
	q := s.key.RelayQuery(o.Epoch)
	if s.m.opts.LegQuery != nil {
		lq, err := s.m.opts.LegQuery(s.key)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("pull %s from %s: %w", s.key, o.NodeID, err)
		}
		if len(lq) > 0 {
			sep := "?"
			if q != "" {
				sep = "&"
			}
			q += sep + lq.Encode()
		}
	}
	switch st.Protocol {
	case ProtocolFLV:
		u = "http://" + o.HTTP + "/" + s.key.App + "/" + s.key.Name + ".flv" + q
		var c *httpflv.Conn
		c, err = httpflv.Dial(uctx, u, s.m.opts.HTTPClient)
		if err == nil {
			conn = c
		}
	default:
		u = "rtmp://" + o.RTMP + "/" + s.key.App + "/" + s.key.Name + q
		var c *rtmp.Conn
		c, err = rtmp.Dial(uctx, u, s.m.opts.RTMP)
		if err == nil {
			if err = c.Play(); err != nil {
				c.Close()
			} else {
				conn = c
			}
		}
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("pull %s from %s: %w", s.key, o.NodeID, err)
	}
	up := &upstream{owner: o, url: u, conn: conn, ctx: uctx, cancel: cancel, done: make(chan struct{})}
	if _, err := conn.Streams(); err != nil {
		up.stop()
		return nil, fmt.Errorf("pull %s from %s: read codecs: %w", s.key, o.NodeID, err)
	}
	up.dialed = time.Since(start)
	return up, nil
}

// run pumps the upstream into the hub until it ends, is replaced by a newer
// upstream (not an error) or is stopped.
func (u *upstream) run(p *stream.Pump) {
	defer close(u.done)
	err := p.Run(u.ctx)
	if u.stalled.Load() {
		u.err = errStalled
		return
	}
	if errors.Is(err, hub.ErrSourceReplaced) || errors.Is(err, hub.ErrClosed) || errors.Is(err, context.Canceled) {
		err = nil
	}
	u.err = err
}

// stop closes the upstream; its pump ends.
func (u *upstream) stop() {
	u.cancel()
	_ = u.conn.Close()
}
