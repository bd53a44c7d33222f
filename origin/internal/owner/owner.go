// Package owner holds the origin's stream ownership at the OCM: it claims a
// stream before its publish is accepted, keeps the ownership epoch (the
// fencing token), releases it on unpublish, re-claims after the node's
// lease was lost, takes streams over from a DRAINING origin for forwarded
// publishes (make-before-break), and, while this origin drains, notices
// streams transferred away from it.
//
// No publish is accepted without a successful claim: while the OCM is
// unreachable or the node is not registered, new publishes are refused;
// streams already owned keep flowing while the node's lease certainly
// lives. Fence stops them (every claim lost, publishers closed) once the
// local lease deadline passes without a renewal, or the OCM says the lease
// is gone, so that this origin has stopped acting as owner before the OCM
// can give its streams to another origin (docs/ocm.md, "Fencing").
package owner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/node/backoff"
	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

// retry paces OCM calls that must eventually succeed (release, re-claim).
var retry = backoff.Policy{Min: 200 * time.Millisecond, Max: 10 * time.Second}

// Results counted by livecluster_origin_claims_total{result}.
const (
	ResultClaimed        = "claimed"
	ResultAdopted        = "adopted"     // already ours (a lost reply, a pending release)
	ResultTransferred    = "transferred" // taken over from a DRAINING origin
	ResultReclaimed      = "reclaimed"   // after re-registration
	ResultOwnedElsewhere = "owned_elsewhere"
	ResultUnavailable    = "ocm_unavailable"
	ResultNotRegistered  = "not_registered"
	ResultDraining       = "draining"
	ResultBusy           = "busy" // already published on this origin
	ResultError          = "error"
	ResultLost           = "lost"   // ownership lost while publishing
	ResultFenced         = "fenced" // the lease may be gone: refused, or let go
)

// fencePoll paces the fence loop while the node is fenced (waiting for a
// renewal or a new session).
const fencePoll = 200 * time.Millisecond

// Refused is why a publish cannot be owned here; Msg is meant for the
// publisher (ffmpeg prints it).
type Refused struct {
	Result string
	Msg    string
	Err    error
}

func (r *Refused) Error() string { return r.Msg }
func (r *Refused) Unwrap() error { return r.Err }

// Options configure a Manager.
type Options struct {
	// OCM makes the stream calls (typed errors, conflict retries).
	OCM    *ocmclient.Client
	NodeID string
	// Session returns the node's current OCM session.
	Session func() (ocmclient.Session, bool)
	// LeaseDeadline returns the local lease deadline
	// (ocmclient.Client.LeaseDeadline); nil or a zero time: never fence on
	// time.
	LeaseDeadline func() time.Time
	// Draining reports whether this node drains (new publishes refused).
	Draining func() bool
	// Timeout returns the bound of each call made while a publisher waits.
	Timeout func() time.Duration
	Logger  *slog.Logger
	// Claims counts claim results by "result".
	Claims *prometheus.CounterVec
}

// Claim is the ownership of one stream by this origin.
type Claim struct {
	Key         streamkey.Key
	Path        ocmv1.PublishPath
	ForwardedBy string
	// OnLost is called (once, on its own goroutine) when this origin no
	// longer owns the stream while it is published: re-claimed by another
	// origin after a lease loss, or transferred away during the drain.
	onLost func(error)

	mu       sync.Mutex
	session  ocmclient.Session
	epoch    int64 // 0: not owned (lost)
	last     int64 // the last epoch owned, kept after a loss for Release
	since    time.Time
	active   bool
	lost     bool
	lostOnce sync.Once
	// release retry loop of an ended publish
	releaseCancel context.CancelFunc
	releaseDone   chan struct{}
}

// Epoch returns the current ownership epoch (0 when ownership was lost).
func (c *Claim) Epoch() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// Since returns when the current ownership began.
func (c *Claim) Since() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.since
}

func (c *Claim) isLost() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lost
}

func (c *Claim) set(s ocmclient.Session, epoch int64) {
	c.mu.Lock()
	c.session, c.epoch, c.last, c.since = s, epoch, epoch, time.Now()
	c.mu.Unlock()
}

// lose ends the ownership; err is given to OnLost. The claim is not
// released at the OCM (another origin owns it, or the lease took it).
func (c *Claim) lose(err error) { c.loseAs(err, false) }

// loseAs ends the ownership; with mayOwn the OCM may still hold the claim
// (fenced on the local deadline while the lease lives on), so Release
// still frees it with its last epoch.
func (c *Claim) loseAs(err error, mayOwn bool) {
	c.mu.Lock()
	if !mayOwn {
		c.last = 0
	}
	c.epoch, c.lost = 0, true
	c.mu.Unlock()
	c.lostOnce.Do(func() {
		if c.onLost != nil {
			go c.onLost(err)
		}
	})
}

// Manager owns the origin's claims.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	claims map[string]*Claim // by key; active ones and pending releases
}

// New returns a Manager.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout == nil {
		opts.Timeout = func() time.Duration { return 5 * time.Second }
	}
	if opts.Draining == nil {
		opts.Draining = func() bool { return false }
	}
	return &Manager{opts: opts, log: opts.Logger.With("component", "owner"), claims: map[string]*Claim{}}
}

func (m *Manager) count(result string) {
	if m.opts.Claims != nil {
		m.opts.Claims.WithLabelValues(result).Inc()
	}
}

func (m *Manager) refuse(result, msg string, err error) *Refused {
	m.count(result)
	return &Refused{Result: result, Msg: msg, Err: err}
}

func unreachable(err error) bool { return errors.Is(err, ocmclient.ErrUnavailable) }

// Acquire claims key for a publish arriving by path (forwardedBy: the edge
// of a FORWARDED publish). onLost is called if the ownership is lost later
// while the claim is active. The error is a *Refused whose Result says
// why: ocm_unavailable (the OCM or its etcd unreachable), not_registered
// (no session, or it was lost), draining (this origin, per the OCM's
// NODE_DRAINING), owned_elsewhere, busy (published here already) or error
// (anything else, e.g. refused as not an origin). A concurrent change at
// the OCM is retried by the client and never refuses the publish.
func (m *Manager) Acquire(ctx context.Context, key streamkey.Key, path ocmv1.PublishPath, forwardedBy string, onLost func(error)) (*Claim, error) {
	ks := key.String()
	if m.opts.Draining() {
		return nil, m.refuse(ResultDraining, fmt.Sprintf("origin %s is draining and takes no new streams; publish again to reach another origin", m.opts.NodeID), nil)
	}
	s, ok := m.opts.Session()
	if !ok {
		return nil, m.refuse(ResultNotRegistered, fmt.Sprintf("origin %s is not registered with the cluster master (OCM) yet, so it cannot own %s; try again later", m.opts.NodeID, ks), nil)
	}
	if why := m.fenced(s, time.Now()); why != "" {
		return nil, m.refuse(ResultFenced, fmt.Sprintf("origin %s cannot own %s: %s; publish again to reach another origin", m.opts.NodeID, ks, why), nil)
	}
	m.mu.Lock()
	old := m.claims[ks]
	if old != nil {
		old.mu.Lock()
		active := old.active
		old.mu.Unlock()
		if active {
			m.mu.Unlock()
			return nil, m.refuse(ResultBusy, fmt.Sprintf("stream %s is already being published on origin %s", ks, m.opts.NodeID), nil)
		}
	}
	c := &Claim{Key: key, Path: path, ForwardedBy: forwardedBy, onLost: onLost, active: true}
	m.claims[ks] = c // reserves the key on this origin while we ask the OCM
	m.mu.Unlock()
	if old != nil {
		// A release of the previous publish may still be retrying; stop it
		// so it cannot free the claim we are about to adopt.
		old.stopRelease()
	}
	result, err := m.claim(ctx, c, s)
	if err != nil {
		m.mu.Lock()
		if m.claims[ks] == c {
			delete(m.claims, ks)
		}
		m.mu.Unlock()
		return nil, err
	}
	m.count(result)
	m.log.Info("stream owned", "stream", ks, "epoch", c.Epoch(), "how", result, "path", path.String(), "forwarded_by", forwardedBy)
	return c, nil
}

// claim asks the OCM for ownership, taking over from a DRAINING owner when
// the publish is forwarded. Each typed failure of the OCM maps to one
// result: unreachable, session lost (not registered), this node draining,
// owned elsewhere, anything else an error.
func (m *Manager) claim(ctx context.Context, c *Claim, s ocmclient.Session) (string, error) {
	ks := c.Key.String()
	ctx, cancel := context.WithTimeout(ctx, m.opts.Timeout())
	defer cancel()
	req := ocmclient.ClaimRequest{Key: c.Key, Path: c.Path, ForwardedBy: c.ForwardedBy}
	st, err := m.opts.OCM.Claim(ctx, s, req)
	if err == nil {
		c.set(s, st.GetEpoch())
		return ResultClaimed, nil
	}
	var owned *ocmclient.AlreadyOwnedError
	switch {
	case unreachable(err):
		return "", m.refuse(ResultUnavailable, fmt.Sprintf("cannot claim stream %s: the cluster master (OCM) is unreachable; try again later", ks), err)
	case errors.Is(err, ocmclient.ErrSessionLost):
		return "", m.refuse(ResultNotRegistered, fmt.Sprintf("cannot claim stream %s: origin %s's session with the cluster master (OCM) was lost and is being renewed; try again later", ks, m.opts.NodeID), err)
	case errors.Is(err, ocmclient.ErrDraining):
		return "", m.refuse(ResultDraining, fmt.Sprintf("origin %s is draining and takes no new streams; publish again to reach another origin", m.opts.NodeID), err)
	case !errors.As(err, &owned):
		return "", m.refuse(ResultError, fmt.Sprintf("cannot claim stream %s: %v", ks, err), err)
	}
	if owned.Owner == m.opts.NodeID {
		// Ours already, under this session (a reply lost, or a release not
		// done yet); nobody else publishes it here, so take the epoch.
		c.set(s, owned.Epoch)
		return ResultAdopted, nil
	}
	elsewhere := func() error {
		return m.refuse(ResultOwnedElsewhere, fmt.Sprintf("stream %s is already published on origin %s", ks, owned.Owner), err)
	}
	if c.Path != ocmv1.PublishPath_PUBLISH_PATH_FORWARDED {
		return "", elsewhere()
	}
	// A forwarded publish for a stream whose owner drains: the edge is moving
	// the stream here (make-before-break).
	cur, curOwner, lerr := m.opts.OCM.Lookup(ctx, c.Key)
	if lerr != nil {
		if errors.Is(lerr, ocmclient.ErrNotFound) {
			// Released meanwhile: claim it plainly, once.
			return m.retryClaimOnce(ctx, c, s)
		}
		return "", elsewhere()
	}
	if curOwner.GetState() != ocmv1.NodeState_NODE_STATE_DRAINING || cur.GetOwnerNodeId() == m.opts.NodeID {
		return "", elsewhere()
	}
	tr, terr := m.opts.OCM.Transfer(ctx, s, ocmclient.TransferRequest{
		Key: c.Key, Epoch: cur.GetEpoch(), To: m.opts.NodeID, Path: c.Path, ForwardedBy: c.ForwardedBy,
	})
	if terr != nil {
		if unreachable(terr) {
			return "", m.refuse(ResultUnavailable, fmt.Sprintf("cannot take over stream %s: the cluster master (OCM) is unreachable; try again later", ks), terr)
		}
		return "", m.refuse(ResultOwnedElsewhere, fmt.Sprintf("cannot take over stream %s from draining origin %s: %v",
			ks, cur.GetOwnerNodeId(), terr), terr)
	}
	m.log.Info("stream taken over from a draining origin", "stream", ks, "from", cur.GetOwnerNodeId(),
		"old_epoch", cur.GetEpoch(), "epoch", tr.GetEpoch())
	c.set(s, tr.GetEpoch())
	return ResultTransferred, nil
}

func (m *Manager) retryClaimOnce(ctx context.Context, c *Claim, s ocmclient.Session) (string, error) {
	st, err := m.opts.OCM.Claim(ctx, s, ocmclient.ClaimRequest{Key: c.Key, Path: c.Path, ForwardedBy: c.ForwardedBy})
	if err != nil {
		msg := err.Error()
		var owned *ocmclient.AlreadyOwnedError
		if errors.As(err, &owned) {
			msg = fmt.Sprintf("stream %s is already published on origin %s", c.Key, owned.Owner)
		}
		return "", m.refuse(ResultOwnedElsewhere, msg, err)
	}
	c.set(s, st.GetEpoch())
	return ResultClaimed, nil
}

// Release ends the claim of an ended publish: ReleaseStream with its
// epoch, retried in the background while the OCM is unreachable (until it
// succeeds, the stream is found owned by someone else, a new publish of the
// key on this origin adopts the claim, or ctx ends).
func (m *Manager) Release(ctx context.Context, c *Claim) {
	ks := c.Key.String()
	c.mu.Lock()
	c.active = false
	// A claim lost by fencing may still exist at the OCM (the lease may
	// have been renewed meanwhile): release it with the epoch it had. A
	// claim lost to another owner gets STALE_EPOCH or NOT_FOUND, harmless.
	s, epoch := c.session, c.last
	c.mu.Unlock()
	forget := func() {
		m.mu.Lock()
		if m.claims[ks] == c {
			delete(m.claims, ks)
		}
		m.mu.Unlock()
	}
	if epoch == 0 {
		forget() // not ours any more: nothing to release
		return
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c.mu.Lock()
	c.releaseCancel, c.releaseDone = cancel, done
	c.mu.Unlock()
	go func() {
		defer close(done)
		defer cancel()
		for attempt := 0; ; attempt++ {
			callCtx, ccancel := context.WithTimeout(rctx, m.opts.Timeout())
			err := m.opts.OCM.Release(callCtx, s, c.Key, epoch)
			ccancel()
			if rctx.Err() != nil {
				return // adopted by a new publish, or shutting down
			}
			switch {
			case err == nil:
				m.log.Info("stream released", "stream", ks, "epoch", epoch)
				forget()
				return
			case !unreachable(err):
				// Owned by someone else now (stale epoch, transferred), not
				// owned at all, or our lease is gone and took the claim
				// with it: nothing to release. Only an unreachable OCM is
				// worth retrying.
				m.log.Info("stream not released: no longer ours", "stream", ks, "epoch", epoch, "reason", err.Error())
				forget()
				return
			}
			d := retry.Delay(attempt)
			m.log.Warn("release stream failed; retrying", "stream", ks, "epoch", epoch, "err", err.Error(), "retry_in", d.String())
			if !backoff.Sleep(rctx, d) {
				return
			}
		}
	}()
}

func (c *Claim) stopRelease() {
	c.mu.Lock()
	cancel, done := c.releaseCancel, c.releaseDone
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Active returns the claims of streams being published.
func (m *Manager) Active() []*Claim {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Claim
	for _, c := range m.claims {
		c.mu.Lock()
		a := c.active
		c.mu.Unlock()
		if a {
			out = append(out, c)
		}
	}
	return out
}

func (m *Manager) isActive(c *Claim) bool {
	m.mu.Lock()
	cur := m.claims[c.Key.String()]
	m.mu.Unlock()
	if cur != c {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active
}

// Reclaim re-claims, under the new session s, every stream still being
// published (ocmclient's OnReregistered hook: the old lease expired and took
// our claims with it). A stream now owned by another origin is lost: its
// publisher is let go.
//
// With fencing on (Options.LeaseDeadline set) nothing is re-claimed: the
// lost lease's claims are let go (Fence does the same), since another
// origin may have owned a stream meanwhile.
func (m *Manager) Reclaim(ctx context.Context, s ocmclient.Session) {
	if m.opts.LeaseDeadline != nil {
		m.fenceClaims("", false) // those of ended sessions only
		return
	}
	var wg sync.WaitGroup
	for _, c := range m.Active() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.reclaim(ctx, c, s)
		}()
	}
	wg.Wait()
}

func (m *Manager) reclaim(ctx context.Context, c *Claim, s ocmclient.Session) {
	ks := c.Key.String()
	for attempt := 0; m.isActive(c); attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, m.opts.Timeout())
		st, err := m.opts.OCM.Claim(callCtx, s, ocmclient.ClaimRequest{Key: c.Key, Path: c.Path, ForwardedBy: c.ForwardedBy})
		cancel()
		if ctx.Err() != nil {
			return
		}
		var owned *ocmclient.AlreadyOwnedError
		switch {
		case err == nil:
			c.set(s, st.GetEpoch())
			m.count(ResultReclaimed)
			m.log.Info("stream re-claimed after re-registration", "stream", ks, "epoch", c.Epoch())
			return
		case errors.As(err, &owned):
			if owned.Owner == m.opts.NodeID {
				c.set(s, owned.Epoch)
				m.count(ResultReclaimed)
				return
			}
			owner := "another origin"
			if owned.Owner != "" {
				owner = "origin " + owned.Owner
			}
			m.count(ResultLost)
			m.log.Warn("stream lost while the lease was gone; letting its publisher go", "stream", ks, "owner", owner)
			c.lose(fmt.Errorf("stream %s is now owned by %s", ks, owner))
			return
		case errors.Is(err, ocmclient.ErrDraining):
			// This node drains: the OCM takes nothing new from it. Keep
			// serving unowned until the drain ends; another origin may claim
			// it and the drain's watch then lets the publisher go.
			m.log.Warn("stream not re-claimed: node is draining", "stream", ks, "err", err.Error())
			c.mu.Lock()
			c.epoch = 0
			c.mu.Unlock()
			return
		case errors.Is(err, ocmclient.ErrSessionLost):
			return // this session is gone too; the next re-registration retries
		case !unreachable(err) && !errors.Is(err, ocmclient.ErrConflict):
			// Refused for good (not an origin any more, a bad key): retrying
			// cannot help; the publish keeps flowing unowned.
			m.log.Warn("stream not re-claimed", "stream", ks, "err", err.Error())
			return
		}
		d := retry.Delay(attempt)
		m.log.Warn("re-claim failed; retrying", "stream", ks, "err", err.Error(), "retry_in", d.String())
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

// WatchTransfers watches the streams being published until ctx ends and
// lets go of those another origin takes over (TransferStream during this
// origin's drain). Call it when the drain starts: no new publish is
// accepted then, so the set of keys is fixed. While the OCM is unreachable
// the watch is re-established with backoff (ocmclient's Watch).
func (m *Manager) WatchTransfers(ctx context.Context) {
	claims := m.Active()
	if len(claims) == 0 {
		return
	}
	byKey := map[string]*Claim{}
	w := ocmclient.Watch{InitialState: true}
	for _, c := range claims {
		byKey[c.Key.String()] = c
		w.Keys = append(w.Keys, c.Key)
	}
	w.Event = func(ev *ocmv1.WatchStreamsResponse) {
		if ev.GetType() != ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT {
			return
		}
		st := ev.GetStream()
		c := byKey[st.GetKey().KeyString()]
		if c == nil || st.GetOwnerNodeId() == m.opts.NodeID || !m.isActive(c) {
			return
		}
		m.count(ResultLost)
		m.log.Info("stream transferred to another origin; letting the old publisher go",
			"stream", c.Key.String(), "to", st.GetOwnerNodeId(), "epoch", st.GetEpoch())
		c.lose(fmt.Errorf("stream %s was handed over to origin %s", c.Key, st.GetOwnerNodeId()))
	}
	w.End = func(err error, retryIn time.Duration, _ int) {
		m.log.Warn("watch of owned streams ended; retrying", "err", err.Error(), "retry_in", retryIn.String())
	}
	m.opts.OCM.Watch(ctx, w)
}

// fenced says why this origin must not act as owner under session s at
// now ("" when it may): the OCM said the lease is gone (s is done), or the
// local lease deadline passed without a renewal.
func (m *Manager) fenced(s ocmclient.Session, now time.Time) string {
	select {
	case <-s.Done():
		return "its lease with the cluster master (OCM) was lost and is being renewed"
	default:
	}
	if m.opts.LeaseDeadline == nil {
		return ""
	}
	if dl := m.opts.LeaseDeadline(); !dl.IsZero() && !now.Before(dl) {
		return fmt.Sprintf("its lease with the cluster master (OCM) was not renewed in time (deadline %s passed)", dl.Format(time.RFC3339Nano))
	}
	return ""
}

// Fenced reports whether this origin currently must not act as owner (the
// reason, or ""). The API shows it.
func (m *Manager) Fenced() string {
	s, ok := m.opts.Session()
	if !ok {
		return ""
	}
	return m.fenced(s, time.Now())
}

// Fence runs until ctx ends and lets go of every claim whenever this
// origin may no longer own its streams: the local lease deadline
// (Options.LeaseDeadline) passed without a renewal, or the session the
// claim was made under ended (the OCM lost the lease). Each such claim is
// lost (its OnLost closes the publisher with the reason; its players end
// with the hub); a claim that appears while fenced is lost at the next
// check. New publishes are refused by Acquire until a renewal or a new
// session. The OCM can grant the streams to another origin only after the
// lease expires there, which is later than the local deadline (docs/ocm.md,
// "Fencing").
func (m *Manager) Fence(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	was := ""
	for {
		var done <-chan struct{}
		wait := fencePoll
		why := ""
		if s, ok := m.opts.Session(); ok {
			now := time.Now()
			if why = m.fenced(s, now); why == "" {
				done = s.Done()
				if m.opts.LeaseDeadline != nil {
					if dl := m.opts.LeaseDeadline(); !dl.IsZero() {
						// Wake at the deadline, or at the next poll.
						wait = min(max(dl.Sub(now), time.Millisecond), fencePoll)
					}
				}
			}
		}
		m.fenceClaims(why, why != "" && was == "")
		if why == "" && was != "" {
			m.log.Info("lease renewed: taking new publishes again")
		}
		was = why
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-done:
		case <-t.C:
		}
	}
}

// fenceClaims loses every active claim when why is set, and otherwise
// those made under a session that has ended.
func (m *Manager) fenceClaims(why string, first bool) {
	n := 0
	for _, c := range m.Active() {
		if c.isLost() {
			continue
		}
		c.mu.Lock()
		done := c.session.Done() // nil (not claimed yet) never closes
		c.mu.Unlock()
		ended := false
		select {
		case <-done:
			ended = true
		default:
		}
		cwhy := why
		switch {
		case ended:
			cwhy = "its lease with the cluster master (OCM) was lost"
		case cwhy == "":
			continue
		}
		// Fenced on the deadline alone, the lease may live on at the OCM:
		// Release then frees the claim. An ended session took it along.
		mayOwn := !ended
		n++
		m.count(ResultFenced)
		c.loseAs(fmt.Errorf("origin %s stopped serving %s: %s; publish again to reach the stream's new origin", m.opts.NodeID, c.Key, cwhy), mayOwn)
	}
	if first || n > 0 {
		m.log.Warn("fenced: stopped acting as owner", "reason", why, "streams_let_go", n)
	}
}
