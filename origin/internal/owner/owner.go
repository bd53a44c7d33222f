// Package owner holds the origin's stream ownership at the OCM: it claims a
// stream before its publish is accepted, keeps the ownership epoch (the
// fencing token), releases it on unpublish, re-claims after the node's
// lease was lost, takes streams over from a DRAINING origin for forwarded
// publishes (make-before-break), and, while this origin drains, notices
// streams transferred away from it.
//
// No publish is accepted without a successful claim: while the OCM is
// unreachable or the node is not registered, new publishes are refused;
// streams already owned keep flowing (their claims live as long as the
// node's lease).
package owner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	ResultLost           = "lost" // ownership lost while publishing
)

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
	API    ocmv1.OCMServiceClient
	NodeID string
	// Session returns the node's current OCM session.
	Session func() (ocmclient.Session, bool)
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
	since    time.Time
	active   bool
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

func (c *Claim) set(s ocmclient.Session, epoch int64) {
	c.mu.Lock()
	c.session, c.epoch, c.since = s, epoch, time.Now()
	c.mu.Unlock()
}

func (c *Claim) lose(err error) {
	c.mu.Lock()
	c.epoch = 0
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

func unreachable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// ownedBy extracts the current ownership record from an AlreadyExists
// error's details.
func ownedBy(err error) *ocmv1.Stream {
	for _, d := range status.Convert(err).Details() {
		if s, ok := d.(*ocmv1.Stream); ok {
			return s
		}
	}
	return nil
}

// Acquire claims key for a publish arriving by path (forwardedBy: the edge
// of a FORWARDED publish). onLost is called if the ownership is lost later
// while the claim is active. The error is a *Refused.
func (m *Manager) Acquire(ctx context.Context, key streamkey.Key, path ocmv1.PublishPath, forwardedBy string, onLost func(error)) (*Claim, error) {
	ks := key.String()
	if m.opts.Draining() {
		return nil, m.refuse(ResultDraining, fmt.Sprintf("origin %s is draining and takes no new streams; publish again to reach another origin", m.opts.NodeID), nil)
	}
	s, ok := m.opts.Session()
	if !ok {
		return nil, m.refuse(ResultNotRegistered, fmt.Sprintf("origin %s is not registered with the cluster master (OCM) yet, so it cannot own %s; try again later", m.opts.NodeID, ks), nil)
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
// the publish is forwarded.
func (m *Manager) claim(ctx context.Context, c *Claim, s ocmclient.Session) (string, error) {
	ks := c.Key.String()
	ctx, cancel := context.WithTimeout(ctx, m.opts.Timeout())
	defer cancel()
	resp, err := m.opts.API.ClaimStream(ctx, &ocmv1.ClaimStreamRequest{
		NodeId: s.NodeID, LeaseId: s.LeaseID, Key: ocmv1.NewStreamKey(c.Key),
		PublishPath: c.Path, ForwardedBy: c.ForwardedBy,
	})
	if err == nil {
		c.set(s, resp.GetStream().GetEpoch())
		return ResultClaimed, nil
	}
	switch code := status.Code(err); {
	case unreachable(err):
		return "", m.refuse(ResultUnavailable, fmt.Sprintf("cannot claim stream %s: the cluster master (OCM) is unreachable; try again later", ks), err)
	case code == codes.NotFound:
		return "", m.refuse(ResultNotRegistered, fmt.Sprintf("cannot claim stream %s: origin %s's session with the cluster master (OCM) was lost and is being renewed; try again later", ks, m.opts.NodeID), err)
	case code == codes.FailedPrecondition:
		return "", m.refuse(ResultDraining, fmt.Sprintf("cannot claim stream %s on origin %s: %s", ks, m.opts.NodeID, status.Convert(err).Message()), err)
	case code != codes.AlreadyExists:
		return "", m.refuse(ResultError, fmt.Sprintf("cannot claim stream %s: %s", ks, status.Convert(err).Message()), err)
	}
	cur := ownedBy(err)
	if cur == nil {
		return "", m.refuse(ResultError, fmt.Sprintf("cannot claim stream %s: %s", ks, status.Convert(err).Message()), err)
	}
	if cur.GetOwnerNodeId() == m.opts.NodeID {
		// Ours already, under this session (a reply lost, or a release not
		// done yet); nobody else publishes it here, so take the epoch.
		c.set(s, cur.GetEpoch())
		return ResultAdopted, nil
	}
	owned := func() error {
		return m.refuse(ResultOwnedElsewhere, fmt.Sprintf("stream %s is already published on origin %s", ks, cur.GetOwnerNodeId()), err)
	}
	if c.Path != ocmv1.PublishPath_PUBLISH_PATH_FORWARDED {
		return "", owned()
	}
	// A forwarded publish for a stream whose owner drains: the edge is moving
	// the stream here (make-before-break).
	lk, lerr := m.opts.API.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: ocmv1.NewStreamKey(c.Key)})
	if lerr != nil {
		if status.Code(lerr) == codes.NotFound {
			// Released meanwhile: claim it plainly, once.
			return m.retryClaimOnce(ctx, c, s)
		}
		return "", owned()
	}
	if lk.GetOwner().GetState() != ocmv1.NodeState_NODE_STATE_DRAINING || lk.GetStream().GetOwnerNodeId() == m.opts.NodeID {
		return "", owned()
	}
	tr, terr := m.opts.API.TransferStream(ctx, &ocmv1.TransferStreamRequest{
		NodeId: s.NodeID, LeaseId: s.LeaseID, Key: ocmv1.NewStreamKey(c.Key), Epoch: lk.GetStream().GetEpoch(),
		ToNodeId: m.opts.NodeID, PublishPath: c.Path, ForwardedBy: c.ForwardedBy,
	})
	if terr != nil {
		if unreachable(terr) {
			return "", m.refuse(ResultUnavailable, fmt.Sprintf("cannot take over stream %s: the cluster master (OCM) is unreachable; try again later", ks), terr)
		}
		return "", m.refuse(ResultOwnedElsewhere, fmt.Sprintf("cannot take over stream %s from draining origin %s: %s",
			ks, lk.GetStream().GetOwnerNodeId(), status.Convert(terr).Message()), terr)
	}
	m.log.Info("stream taken over from a draining origin", "stream", ks, "from", lk.GetStream().GetOwnerNodeId(),
		"old_epoch", lk.GetStream().GetEpoch(), "epoch", tr.GetStream().GetEpoch())
	c.set(s, tr.GetStream().GetEpoch())
	return ResultTransferred, nil
}

func (m *Manager) retryClaimOnce(ctx context.Context, c *Claim, s ocmclient.Session) (string, error) {
	resp, err := m.opts.API.ClaimStream(ctx, &ocmv1.ClaimStreamRequest{
		NodeId: s.NodeID, LeaseId: s.LeaseID, Key: ocmv1.NewStreamKey(c.Key), PublishPath: c.Path, ForwardedBy: c.ForwardedBy,
	})
	if err != nil {
		msg := status.Convert(err).Message()
		if cur := ownedBy(err); cur != nil {
			msg = fmt.Sprintf("stream %s is already published on origin %s", c.Key, cur.GetOwnerNodeId())
		}
		return "", m.refuse(ResultOwnedElsewhere, msg, err)
	}
	c.set(s, resp.GetStream().GetEpoch())
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
	s, epoch := c.session, c.epoch
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
			_, err := m.opts.API.ReleaseStream(callCtx, &ocmv1.ReleaseStreamRequest{
				NodeId: s.NodeID, LeaseId: s.LeaseID, Key: ocmv1.NewStreamKey(c.Key), Epoch: epoch,
			})
			ccancel()
			if rctx.Err() != nil {
				return // adopted by a new publish, or shutting down
			}
			switch {
			case err == nil:
				m.log.Info("stream released", "stream", ks, "epoch", epoch)
				forget()
				return
			case status.Code(err) == codes.FailedPrecondition || status.Code(err) == codes.NotFound:
				// Owned by someone else now (transferred), or our lease is
				// gone and took the claim with it.
				m.log.Info("stream not released: no longer ours", "stream", ks, "epoch", epoch, "reason", status.Convert(err).Message())
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
func (m *Manager) Reclaim(ctx context.Context, s ocmclient.Session) {
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
		resp, err := m.opts.API.ClaimStream(callCtx, &ocmv1.ClaimStreamRequest{
			NodeId: s.NodeID, LeaseId: s.LeaseID, Key: ocmv1.NewStreamKey(c.Key), PublishPath: c.Path, ForwardedBy: c.ForwardedBy,
		})
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch code := status.Code(err); {
		case err == nil:
			c.set(s, resp.GetStream().GetEpoch())
			m.count(ResultReclaimed)
			m.log.Info("stream re-claimed after re-registration", "stream", ks, "epoch", c.Epoch())
			return
		case code == codes.AlreadyExists:
			cur := ownedBy(err)
			if cur != nil && cur.GetOwnerNodeId() == m.opts.NodeID {
				c.set(s, cur.GetEpoch())
				m.count(ResultReclaimed)
				return
			}
			owner := "another origin"
			if cur != nil {
				owner = "origin " + cur.GetOwnerNodeId()
			}
			m.count(ResultLost)
			m.log.Warn("stream lost while the lease was gone; letting its publisher go", "stream", ks, "owner", owner)
			c.lose(fmt.Errorf("stream %s is now owned by %s", ks, owner))
			return
		case code == codes.FailedPrecondition:
			// This node drains: the OCM takes nothing new from it. Keep
			// serving unowned until the drain ends; another origin may claim
			// it and the drain's watch then lets the publisher go.
			m.log.Warn("stream not re-claimed: node is draining", "stream", ks, "err", status.Convert(err).Message())
			c.mu.Lock()
			c.epoch = 0
			c.mu.Unlock()
			return
		case code == codes.NotFound:
			return // this session is gone too; the next re-registration retries
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
// accepted then, so the set of keys is fixed.
func (m *Manager) WatchTransfers(ctx context.Context) {
	claims := m.Active()
	if len(claims) == 0 {
		return
	}
	byKey := map[string]*Claim{}
	req := &ocmv1.WatchStreamsRequest{InitialState: true}
	for _, c := range claims {
		byKey[c.Key.String()] = c
		req.Keys = append(req.Keys, ocmv1.NewStreamKey(c.Key))
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := m.watch(ctx, req, byKey)
		if ctx.Err() != nil {
			return
		}
		d := retry.Delay(attempt)
		m.log.Warn("watch of owned streams ended; retrying", "err", fmt.Sprint(err), "retry_in", d.String())
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

func (m *Manager) watch(ctx context.Context, req *ocmv1.WatchStreamsRequest, byKey map[string]*Claim) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ws, err := m.opts.API.WatchStreams(ctx, req)
	if err != nil {
		return err
	}
	for {
		ev, err := ws.Recv()
		if err != nil {
			return err
		}
		if ev.GetType() != ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT {
			continue
		}
		st := ev.GetStream()
		c := byKey[st.GetKey().KeyString()]
		if c == nil || st.GetOwnerNodeId() == m.opts.NodeID || !m.isActive(c) {
			continue
		}
		m.count(ResultLost)
		m.log.Info("stream transferred to another origin; letting the old publisher go",
			"stream", c.Key.String(), "to", st.GetOwnerNodeId(), "epoch", st.GetEpoch())
		c.lose(fmt.Errorf("stream %s was handed over to origin %s", c.Key, st.GetOwnerNodeId()))
	}
}
