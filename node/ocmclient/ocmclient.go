// Package ocmclient is the OCM client of origins and edges, the only way
// they reach the OCM: it holds the node session (Register, then a heartbeat
// loop that renews the lease and reports load; a Session's Done channel
// closes when its lease is lost, as etcd's concurrency.Session does), and
// makes the stream calls (Claim, Release, Transfer, Lookup, Assign, Nodes,
// Watch) with typed Go errors (ErrNotFound, *AlreadyOwnedError,
// ErrStaleEpoch, ErrDraining, ErrUnavailable, ...: see errors.go) so that no
// caller reads gRPC codes. Claims and transfers retry the OCM's "concurrent
// change" answer themselves; Watch keeps a WatchStreams subscription open
// with a backoff that starts over after a healthy stream.
//
// It never blocks its caller: Start returns at once and registration
// proceeds in the background, retrying with capped exponential backoff
// and jitter. Each session also holds a KeepSession stream (session.go),
// so that the OCM frees the node's streams within its sessionGrace when
// the process dies, not after the lease TTL. The connection uses the dns resolver and round_robin, so
// through a Kubernetes Service ("ocm:7000") it reaches, and fails over to,
// any OCM replica.
//
// Readiness: per ARCHITECTURE.md the data plane keeps serving when the OCM
// blips, so Registered stays true once the node has registered, whatever
// later heartbeats do; only Deregister makes it false. When a heartbeat
// gets NOT_FOUND (the lease expired while the OCM was unreachable) the
// client registers again and calls Options.OnReregistered with the new
// session, so an origin can re-claim its streams.
package ocmclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/livecluster/livecluster/node/authn"
	"github.com/livecluster/livecluster/node/backoff"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/lifecycle"
	"github.com/livecluster/livecluster/node/tlsfiles"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// Defaults for Options.
const (
	DefaultMinBackoff  = 200 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
	DefaultCallTimeout = 5 * time.Second
	// DefaultHeartbeat is used when the OCM gives no interval.
	DefaultHeartbeat = 5 * time.Second
)

// Options configure a Client.
type Options struct {
	// Address of the OCM, "host:port" (resolved with DNS) or any gRPC
	// target with a scheme ("dns:///ocm:7000").
	Address string
	// Node is the record to register: id, role and addresses are required.
	Node *ocmv1.Node
	// Load returns the current load for each heartbeat; nil sends none.
	Load func() *ocmv1.Load
	// OnReregistered is called, on its own goroutine, after the session was
	// re-created because the old lease expired; the node must re-claim what
	// it owned. ctx ends when the client stops.
	OnReregistered func(ctx context.Context, s Session)
	Logger         *slog.Logger
	// MinBackoff and MaxBackoff bound the retry delays (registration and
	// the gRPC reconnects).
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds each Register / Heartbeat call.
	CallTimeout time.Duration
	// Security is how the node proves who it is: a client certificate
	// (mTLS; the files are re-read as they rotate, for each new connection)
	// and/or a bearer token sent on every call. Zero: plaintext, no token.
	Security config.OCMSecurity
	// DialOptions are added to the defaults (Security's credentials,
	// round_robin).
	DialOptions []grpc.DialOption
	// Registerer, if set, gets the session stream's metrics
	// (ocm_session_stream_up, ocm_session_stream_breaks_total).
	Registerer prometheus.Registerer
	// History, if set, records every Register, Deregister, lost session,
	// claim, transfer, release and lookup with its times and result (for
	// the drills' linearizability check; see HistoryEnv).
	History *History
}

// Session is the node's registration at the OCM: node id and lease, present
// on every call. Like etcd's concurrency.Session, it ends when its lease is
// lost: Done is closed when a heartbeat finds the lease expired (the client
// then registers a new session and calls Options.OnReregistered with it),
// and when the client deregisters or closes. Every stream claimed under a
// session is gone once its Done is closed.
type Session struct {
	NodeID  string
	LeaseID int64
	done    chan struct{}
}

// Done is closed when the session's lease is lost or the session ends. A
// zero Session's Done is nil (never closes).
func (s Session) Done() <-chan struct{} { return s.done }

// Lease returns the session's lease id.
func (s Session) Lease() int64 { return s.LeaseID }

// Status is a snapshot of the session's health, for logs and the API.
type Status struct {
	Registered          bool
	Session             Session
	LastHeartbeat       time.Time
	ConsecutiveFailures int
	Registrations       int
	// LeaseDeadline is the local lease deadline (see Client.LeaseDeadline).
	LeaseDeadline time.Time
}

// Client holds the node session with the OCM.
type Client struct {
	opts Options
	log  *slog.Logger
	conn *grpc.ClientConn
	api  ocmv1.OCMServiceClient

	registered atomic.Bool
	draining   atomic.Bool

	mu       sync.Mutex
	session  Session
	interval time.Duration
	ttl      time.Duration // the lease TTL the OCM last gave
	deadline time.Time     // see LeaseDeadline
	status   Status
	cancel   context.CancelFunc
	done     chan struct{}
	started  bool

	streamUp     prometheus.Gauge
	streamBreaks prometheus.Counter

	// sleep waits between retries; tests replace it to observe delays.
	sleep func(ctx context.Context, d time.Duration) bool
}

// New validates opts and creates the connection object; it does not dial
// (gRPC connects lazily, in the background), so an unreachable OCM is not
// an error here. It fails on a missing address or node id, a target gRPC
// cannot parse, or certificate or token files that do not load.
func New(opts Options) (*Client, error) {
	if opts.Address == "" {
		return nil, errors.New("ocmclient: no OCM address")
	}
	if opts.Node == nil || opts.Node.GetId() == "" {
		return nil, errors.New("ocmclient: node id is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	target := opts.Address
	if !strings.Contains(target, "://") {
		target = "dns:///" + target
	}
	creds, err := security(opts.Security, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("ocm client for %s: %w", opts.Address, err)
	}
	dial := append(creds, []grpc.DialOption{
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: grpcbackoff.Config{
				BaseDelay: opts.MinBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: opts.MaxBackoff,
			},
			MinConnectTimeout: opts.CallTimeout,
		}),
	}...)
	dial = append(dial, opts.DialOptions...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("ocm client for %s: %w", opts.Address, err)
	}
	c := &Client{
		opts:  opts,
		log:   opts.Logger.With("component", "ocmclient", "ocm", opts.Address),
		conn:  conn,
		api:   ocmv1.NewOCMServiceClient(conn),
		done:  make(chan struct{}),
		sleep: backoff.Sleep,
		streamUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ocm_session_stream_up",
			Help: "1 while the node's session stream (KeepSession) to the OCM is open."}),
		streamBreaks: prometheus.NewCounter(prometheus.CounterOpts{Name: "ocm_session_stream_breaks_total",
			Help: "Session streams to the OCM that broke (each is reopened at once; the OCM revokes the lease if it stays broken longer than its sessionGrace)."}),
	}
	if opts.Registerer != nil {
		for _, col := range []prometheus.Collector{c.streamUp, c.streamBreaks} {
			if err := opts.Registerer.Register(col); err != nil {
				_ = conn.Close()
				return nil, fmt.Errorf("ocm client metrics: %w", err)
			}
		}
	}
	return c, nil
}

// endSession closes s's Done channel once.
func (c *Client) endSession(s Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.done == nil {
		return
	}
	if c.session.LeaseID == s.LeaseID {
		c.deadline = time.Time{} // that lease is gone
	}
	select {
	case <-s.done:
	default:
		close(s.done)
	}
}

// Registered reports whether the node has a session: true from the first
// successful Register until Deregister, heartbeat failures included.
func (c *Client) Registered() bool { return c.registered.Load() }

// ReadinessCheck suits lifecycle.AddCheck: nil once registered.
func (c *Client) ReadinessCheck() error {
	if c.registered.Load() {
		return nil
	}
	return errors.New("not registered with the OCM yet")
}

// Session returns the current session; ok is false before registration.
// The session may already be lost (its Done closed) while a new one is
// being registered.
func (c *Client) Session() (s Session, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session, c.session.LeaseID != 0
}

// Status returns a snapshot of the session's health.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status
	st.Registered = c.registered.Load()
	st.Session = c.session
	st.LeaseDeadline = c.deadline
	return st
}

// FenceMargin is how much of a lease TTL the local lease deadline keeps in
// hand against the OCM's clock running at another rate than ours: TTL/5,
// at least 1 s, at most TTL/2.
func FenceMargin(ttl time.Duration) time.Duration {
	return min(max(ttl/5, time.Second), ttl/2)
}

// LeaseDeadline returns the time before which the node's lease certainly
// still exists at the OCM: the send time of the last Register or Heartbeat
// that succeeded, plus the lease TTL it was answered with, minus
// FenceMargin. The OCM grants or renews the lease after that send, and the
// lease lives TTL from then, so a node that stops acting as owner at this
// deadline has stopped before the OCM can hand its streams to anyone (see
// docs/ocm.md, "Fencing"). It is zero before the first registration, after
// Deregister/Close, and when the OCM gives no TTL (then nothing fences).
// It may lie in the past while the OCM is unreachable; a later successful
// heartbeat or registration moves it forward. It does not cover a lease
// the OCM revoked early (a session stream seen broken): the session's Done
// then closes when the node learns of it.
func (c *Client) LeaseDeadline() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline
}

// renewed records a successful Register or Heartbeat sent at sent with the
// lease TTL the OCM answered (0: keep the last known TTL).
func (c *Client) renewed(sent time.Time, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ttl > 0 {
		c.ttl = ttl
	}
	if c.ttl <= 0 {
		return
	}
	if d := sent.Add(c.ttl - FenceMargin(c.ttl)); d.After(c.deadline) {
		c.deadline = d
	}
}

// Start begins registration and heartbeats in the background and returns
// at once; it cannot fail: registration is retried with backoff for as
// long as the OCM is unreachable, and a lost lease registers a new session.
// The loop stops when ctx ends or on Close/Deregister.
func (c *Client) Start(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return
	}
	c.started = true
	ctx, c.cancel = context.WithCancel(ctx)
	go func() {
		defer close(c.done)
		c.run(ctx)
	}()
}

// stop ends the background loop and waits for it.
func (c *Client) stop() {
	c.mu.Lock()
	cancel, started := c.cancel, c.started
	c.started = true // a later Start must not restart a stopped client
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if started && cancel != nil {
		<-c.done
	}
}

// Close stops the loop and closes the connection without a Deregister: the
// session stream ends, so the OCM revokes the lease after its sessionGrace
// (after the lease TTL if it is unreachable). The session's Done is closed.
func (c *Client) Close() error {
	c.stop()
	s, _ := c.Session()
	c.endSession(s)
	return c.conn.Close()
}

// Drain tells the OCM the node is DRAINING. If the session is re-created
// later (lease expiry), the client marks it DRAINING again. Before the node
// registered it stops trying: a draining node must not appear as READY.
// Failures (typed, see errors.go): ErrUnavailable, ErrSessionLost (the
// re-registration marks the new session DRAINING).
func (c *Client) Drain(ctx context.Context) error {
	c.draining.Store(true)
	s, ok := c.Session()
	if !ok {
		c.stop()
		return nil
	}
	if _, err := c.api.Drain(ctx, &ocmv1.DrainRequest{NodeId: s.NodeID, LeaseId: s.LeaseID}); err != nil {
		return mapSessionErr("Drain "+s.NodeID, err)
	}
	c.log.Info("marked DRAINING at the OCM")
	return nil
}

// Deregister stops heartbeating and ends the session (the OCM revokes the
// lease, freeing every stream the node owns); the session's Done is closed
// either way. Failures: ErrUnavailable (the lease then expires after its
// TTL), ErrSessionLost (it had expired already).
func (c *Client) Deregister(ctx context.Context) error {
	c.stop()
	s, ok := c.Session()
	c.registered.Store(false)
	if !ok {
		return nil
	}
	defer c.endSession(s)
	call := c.opts.History.Now()
	_, err := c.api.Deregister(ctx, &ocmv1.DeregisterRequest{NodeId: s.NodeID, LeaseId: s.LeaseID})
	err = mapSessionErr("Deregister "+s.NodeID, err)
	c.record(HistoryEvent{Op: HistDeregister, Lease: s.LeaseID}, call, err)
	if err != nil {
		return err
	}
	c.log.Info("deregistered from the OCM")
	return nil
}

func (c *Client) run(ctx context.Context) {
	var hooks sync.WaitGroup
	defer hooks.Wait()
	first := true
	for {
		s, err := c.register(ctx)
		if err != nil {
			return // ctx ended
		}
		if !first {
			if c.draining.Load() {
				if _, err := c.api.Drain(ctx, &ocmv1.DrainRequest{NodeId: s.NodeID, LeaseId: s.LeaseID}); err != nil {
					c.log.Warn("re-mark DRAINING after re-registration", "err", err.Error())
				}
			}
			if c.opts.OnReregistered != nil {
				hooks.Add(1)
				go func() {
					defer hooks.Done()
					c.opts.OnReregistered(ctx, s)
				}()
			}
		}
		first = false
		// The liveness stream lives exactly as long as this session's
		// heartbeat loop; a session it finds lost ends the loop early.
		sctx, scancel := context.WithCancel(ctx)
		lost := make(chan struct{})
		kept := make(chan struct{})
		go func() {
			defer close(kept)
			c.keepSession(sctx, s, lost)
		}()
		again := c.heartbeat(ctx, s, lost)
		scancel()
		<-kept
		if !again {
			return
		}
	}
}

// register retries until it succeeds or ctx ends.
func (c *Client) register(ctx context.Context) (Session, error) {
	for attempt := 0; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
		call := c.opts.History.Now()
		sent := time.Now()
		resp, err := c.api.Register(callCtx, &ocmv1.RegisterRequest{Node: c.opts.Node})
		cancel()
		c.record(HistoryEvent{Op: HistRegister, Lease: resp.GetLeaseId()}, call, mapErr("Register", err))
		if err == nil {
			s := Session{NodeID: c.opts.Node.GetId(), LeaseID: resp.GetLeaseId(), done: make(chan struct{})}
			iv := time.Duration(resp.GetHeartbeatIntervalMs()) * time.Millisecond
			if iv <= 0 {
				iv = time.Duration(resp.GetLeaseTtlSeconds()) * time.Second / 3
			}
			if iv <= 0 {
				iv = DefaultHeartbeat
			}
			c.mu.Lock()
			c.session, c.interval = s, iv
			c.deadline = time.Time{} // a new lease: counted from this Register
			c.mu.Unlock()
			c.renewed(sent, time.Duration(resp.GetLeaseTtlSeconds())*time.Second)
			c.mu.Lock()
			c.status.Registrations++
			c.status.ConsecutiveFailures = 0
			c.status.LastHeartbeat = time.Now()
			c.mu.Unlock()
			c.registered.Store(true)
			c.log.Info("registered with the OCM", "lease_id", s.LeaseID, "heartbeat_interval", iv.String(),
				"lease_ttl_s", resp.GetLeaseTtlSeconds(), "attempts", attempt+1)
			return s, nil
		}
		if ctx.Err() != nil {
			return Session{}, ctx.Err()
		}
		d := backoff.Policy{Min: c.opts.MinBackoff, Max: c.opts.MaxBackoff}.Delay(attempt)
		lvl := slog.LevelWarn
		if attempt == 0 {
			lvl = slog.LevelInfo // the OCM may simply not be up yet
		}
		c.log.Log(ctx, lvl, "register with the OCM failed; retrying", "err", mapErr("Register", err).Error(),
			"attempt", attempt+1, "retry_in", d.String())
		if !c.sleep(ctx, d) {
			return Session{}, ctx.Err()
		}
	}
}

// heartbeat runs until the lease is lost (returns true: register again) or
// ctx ends (false).
func (c *Client) heartbeat(ctx context.Context, s Session, lost <-chan struct{}) bool {
	c.mu.Lock()
	iv := c.interval
	c.mu.Unlock()
	// A timer, not a ticker: after a failed heartbeat the next one comes
	// sooner (the replica that failed it may be gone, and the lease keeps
	// counting down), paced by the backoff, never later than the interval.
	t := time.NewTimer(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-lost:
			// keepSession recorded the loss.
			c.log.Warn("OCM lost the node's session (found by the session stream); registering again", "lease_id", s.LeaseID)
			c.endSession(s)
			return true
		case <-t.C:
		}
		req := &ocmv1.HeartbeatRequest{NodeId: s.NodeID, LeaseId: s.LeaseID}
		if c.opts.Load != nil {
			req.Load = c.opts.Load()
		}
		callCtx, cancel := context.WithTimeout(ctx, min(c.opts.CallTimeout, iv))
		call := c.opts.History.Now()
		sent := time.Now() // the renewal at the OCM happens after this
		resp, rerr := c.api.Heartbeat(callCtx, req)
		cancel()
		err := mapSessionErr("Heartbeat "+s.NodeID, rerr)
		switch {
		case err == nil:
			c.record(HistoryEvent{Op: HistHeartbeat, Lease: s.LeaseID}, call, nil)
		case errors.Is(err, ErrSessionLost):
			c.record(HistoryEvent{Op: HistSessionLost, Lease: s.LeaseID}, call, nil)
		}
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			c.renewed(sent, time.Duration(resp.GetLeaseTtlSeconds())*time.Second)
		}
		c.mu.Lock()
		if err == nil {
			if c.status.ConsecutiveFailures > 0 {
				c.log.Info("heartbeats to the OCM recovered", "failures", c.status.ConsecutiveFailures)
			}
			c.status.ConsecutiveFailures = 0
			c.status.LastHeartbeat = time.Now()
		} else {
			c.status.ConsecutiveFailures++
		}
		failures := c.status.ConsecutiveFailures
		c.mu.Unlock()
		if failures == 0 {
			t.Reset(max(0, iv-time.Since(sent))) // every interval from send to send, as a ticker
		} else {
			t.Reset(backoff.Policy{Min: c.opts.MinBackoff, Max: iv}.Delay(failures - 1))
		}
		switch {
		case err == nil:
		case errors.Is(err, ErrSessionLost):
			c.log.Warn("OCM lost the node's lease; registering again", "lease_id", s.LeaseID, "err", err.Error())
			c.endSession(s)
			return true
		default:
			// Readiness is unaffected on purpose (see the package doc).
			c.log.Warn("heartbeat to the OCM failed; still serving", "err", err.Error(), "consecutive_failures", failures)
		}
	}
}

// Bind wires the session into a node's lifecycle: readiness waits for the
// first registration ("ocm-registered"), the drain marks the node DRAINING
// at step 1, and the final step deregisters and closes the connection (and
// the history log, if any). A
// failed Drain or Deregister is reported to the lifecycle (logged); the
// lease then expires by itself after its TTL.
func (c *Client) Bind(lc *lifecycle.Lifecycle) {
	lc.AddCheck("ocm-registered", c.ReadinessCheck)
	lc.OnDraining("ocm-drain", c.Drain)
	lc.OnFinal("ocm-deregister", func(ctx context.Context) error {
		err := c.Deregister(ctx)
		_ = c.conn.Close()
		// After the Deregister, so that its record is the log's last.
		return errors.Join(err, c.opts.History.Close())
	})
}

// security returns the dial options of sec: TLS (with the certificate and
// CA files re-read as they change) or plaintext, and the bearer token.
func security(sec config.OCMSecurity, log *slog.Logger) ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	switch t := sec.TLS; {
	case !t.On():
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	case t.CAFile == "" && t.CertFile == "":
		// Server verified against the system roots, no client certificate.
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName})))
	default:
		st, err := tlsfiles.New(tlsfiles.Options{Name: "ocm client", CertFile: t.CertFile, KeyFile: t.KeyFile, CAFile: t.CAFile, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("ocm.tls: %w", err)
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(st.ClientConfig(t.ServerName))))
	}
	tok, err := authn.NewToken("ocm", sec.Token, 0, log)
	if err != nil {
		return nil, fmt.Errorf("ocm.token: %w", err)
	}
	if tok != nil {
		// Sent over plaintext too when TLS is off: the operator chose a
		// token without TLS (docs/security.md says what that exposes).
		opts = append(opts, grpc.WithPerRPCCredentials(authn.PerRPC(tok, false)))
	}
	return opts, nil
}
