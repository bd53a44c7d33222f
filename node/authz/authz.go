// Package authz decides who may publish and play a stream, at origins and
// edges alike (docs/security.md, "Publish and play authorization").
//
// A Manager holds the current policy, built from the `auth` configuration
// section and swapped whole on a reload (Update). A policy is a chain of
// Authorizers, one file per strategy, every configured one of which must
// allow a request:
//
//   - tokens.go: signed URL tokens (token.go: the format, HMAC-SHA256 over
//     action, vhost, app, stream, expiry and key id);
//   - hooks.go: SRS-style HTTP hooks (on_connect, on_publish, on_play; the
//     on_unpublish and on_stop notifications), with a bounded answer cache
//     and a fail-open/fail-closed switch.
//
// Before the chain, internal.go recognises the edge→origin legs: an edge
// signs each pull and forwarded publish with an internal key (query
// parameter lc_token); an origin that verifies it allows the leg without a
// user token or a hook, since the edge already checked its client. A leg
// whose internal credential does not verify is refused.
//
// A refusal is a *Denied carrying the reason the client is told and the
// HTTP status (401 without credentials, 403 with wrong ones).
package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/streamkey"
)

// Action is what a client asks for.
type Action string

// Actions checked (Connect, Publish, Play) and notified (Unpublish, Stop).
const (
	Connect   Action = "connect"
	Publish   Action = "publish"
	Play      Action = "play"
	Unpublish Action = "unpublish"
	Stop      Action = "stop"
)

// Query parameters read from client URLs.
const (
	// TokenParam carries a user token: rtmp://host/live/s1?token=...,
	// http://host/live/s1.flv?token=..., http://host/live/s1.m3u8?token=...
	TokenParam = "token"
	// InternalParam carries an edge→origin leg's credential.
	InternalParam = "lc_token"
)

// Request is one request to authorize or notify.
type Request struct {
	Action Action
	// Key is the stream; for Connect only Vhost and App are set.
	Key streamkey.Key
	// Protocol is rtmp, flv or hls.
	Protocol string
	// ClientID identifies the connection across its connect, publish or
	// play and unpublish or stop (hooks' client_id).
	ClientID string
	// IP is the client's address, without port.
	IP string
	// Query is the client's URL query (token, vhost, ...): for RTMP the
	// stream name's and the app's query joined, for HTTP the request's.
	Query url.Values
	// TcURL is RTMP's tcUrl ("" for HTTP).
	TcURL string
}

// param is the query as SRS's hooks send it: "?a=b&c=d", "" when empty.
func (r *Request) param() string {
	if len(r.Query) == 0 {
		return ""
	}
	return "?" + r.Query.Encode()
}

// Authorizer is one strategy: nil allows the request, a *Denied refuses it.
// Any other error (a hook unreachable) is a failure the Manager maps
// through auth.hooks.failOpen.
type Authorizer interface {
	Authorize(ctx context.Context, r *Request) error
}

// Notifier is told that an allowed publish or play ended (Unpublish, Stop);
// it cannot refuse anything.
type Notifier interface {
	Notify(ctx context.Context, r *Request)
}

// Denied is a refusal: Reason is what the client is told.
type Denied struct {
	Reason string
	// Unauthenticated: the client gave no credential where one is needed
	// (HTTP 401); otherwise the credential was wrong or refused (403).
	Unauthenticated bool
}

func (d *Denied) Error() string { return "not authorized: " + d.Reason }

// HTTPStatus is 401 or 403.
func (d *Denied) HTTPStatus() int {
	if d.Unauthenticated {
		return http.StatusUnauthorized
	}
	return http.StatusForbidden
}

// IsDenied returns the *Denied in err's chain.
func IsDenied(err error) (*Denied, bool) {
	var d *Denied
	ok := errors.As(err, &d)
	return d, ok
}

// Options configure a Manager.
type Options struct {
	// ServerID names this node in hook bodies (server_id).
	ServerID string
	Logger   *slog.Logger
	// Registerer receives livecluster_<Subsystem>_auth_* metrics; nil: none.
	Registerer prometheus.Registerer
	// Subsystem is the binary's name: "origin", "edge".
	Subsystem string
	// HTTPClient calls the hooks; nil: a client with no timeout of its own
	// (auth.hooks.timeout bounds each call).
	HTTPClient *http.Client
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Source, when set, returns the running configuration's auth section
	// (cli.Runtime.Config().Auth): the policy is rebuilt the first time a
	// request sees a new pointer, i.e. after a reload. A configuration
	// that fails to build keeps the old policy (logged); config
	// validation has refused it before, so that does not happen.
	Source func() *config.Auth
}

// Manager is the current authorization policy of a node; safe for
// concurrent use. Update replaces the policy atomically.
type Manager struct {
	opts    Options
	log     *slog.Logger
	cur     atomic.Pointer[policy]
	mu      sync.Mutex // serialises Update
	decided *prometheus.CounterVec
	// allowed holds decided{action, protocol, "allowed"} by allowedKey:
	// every HLS request is checked, and the label lookup was a few percent
	// of serving a cached playlist.
	allowed sync.Map
	hookErr *prometheus.CounterVec
	ids     atomic.Uint64
}

type allowedKey struct {
	action   Action
	protocol string
}

// allowedCounter returns the "allowed" counter of action and protocol.
func (m *Manager) allowedCounter(action Action, protocol string) prometheus.Counter {
	k := allowedKey{action, protocol}
	if c, ok := m.allowed.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := m.decided.WithLabelValues(string(action), protocol, "allowed")
	m.allowed.Store(k, c)
	return c
}

type policy struct {
	src      *config.Auth // the Source pointer this policy was built from
	cfg      config.Auth
	internal *Keyring
	chain    []Authorizer
	notify   []Notifier
	hooks    *Hooks
}

// New builds a Manager from cfg (validated by config.Auth.Validate); an
// invalid key list is an error.
func New(cfg config.Auth, opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	m := &Manager{opts: opts, log: opts.Logger.With("component", "authz")}
	sub := opts.Subsystem
	if sub == "" {
		sub = "node"
	}
	m.decided = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livecluster_" + sub + "_auth_decisions_total",
		Help: "Authorization decisions by action, protocol and result (allowed, internal, denied).",
	}, []string{"action", "protocol", "result"})
	m.hookErr = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livecluster_" + sub + "_auth_hook_failures_total",
		Help: "Hook calls that failed (unreachable, timeout, non-2xx), by hook; failOpen decides what follows.",
	}, []string{"hook"})
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(m.decided, m.hookErr)
	}
	if opts.Source != nil {
		src := opts.Source()
		cfg = *src
		if err := m.updateLocked(cfg, src); err != nil {
			return nil, err
		}
		return m, nil
	}
	if err := m.Update(cfg); err != nil {
		return nil, err
	}
	return m, nil
}

// policy returns the current policy, rebuilt first when Source names a new
// configuration.
func (m *Manager) policy() *policy {
	p := m.cur.Load()
	if m.opts.Source == nil {
		return p
	}
	src := m.opts.Source()
	if src == nil || src == p.src {
		return p
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if p = m.cur.Load(); p.src == src {
		return p
	}
	if err := m.updateLocked(*src, src); err != nil {
		m.log.Error("reloaded auth configuration not applied; the previous one stays", "err", err.Error())
		// Remember the pointer so the failure is logged once per reload.
		q := *p
		q.src = src
		m.cur.Store(&q)
		return &q
	}
	m.log.Info("auth configuration applied")
	return m.cur.Load()
}

// Update builds a new policy from cfg and swaps it in; requests already
// being checked finish under the old one. The hook answer cache is kept
// when the hook settings did not change. An error keeps the old policy.
func (m *Manager) Update(cfg config.Auth) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.updateLocked(cfg, nil)
}

func (m *Manager) updateLocked(cfg config.Auth, src *config.Auth) error {
	tk, err := config.ParseKeys(cfg.Token.Keys)
	if err != nil {
		return fmt.Errorf("auth.token.keys: %w", err)
	}
	ik, err := config.ParseKeys(cfg.Internal.Keys)
	if err != nil {
		return fmt.Errorf("auth.internal.keys: %w", err)
	}
	p := &policy{src: src, cfg: cfg, internal: NewKeyring(ik)}
	if cfg.Token.Publish || cfg.Token.Play {
		p.chain = append(p.chain, &Tokens{Keys: NewKeyring(tk), Publish: cfg.Token.Publish, Play: cfg.Token.Play, Now: m.opts.Now})
	}
	if h := cfg.Hooks; h.OnConnect != "" || h.OnPublish != "" || h.OnPlay != "" || h.OnUnpublish != "" || h.OnStop != "" {
		old := m.cur.Load()
		if old != nil && old.hooks != nil && old.cfg.Hooks == h {
			p.hooks = old.hooks
		} else {
			p.hooks = NewHooks(h, HookOptions{
				ServerID: m.opts.ServerID, Client: m.opts.HTTPClient, Now: m.opts.Now,
				Failed: func(hook string) { m.hookErr.WithLabelValues(hook).Inc() },
			})
		}
		p.chain = append(p.chain, p.hooks)
		p.notify = append(p.notify, p.hooks)
	}
	m.cur.Store(p)
	return nil
}

// Active reports whether anything is checked for action (a token or a
// hook); when false every request of that action is allowed.
func (m *Manager) Active(a Action) bool {
	p := m.policy()
	for _, z := range p.chain {
		switch z := z.(type) {
		case *Tokens:
			if (a == Publish && z.Publish) || (a == Play && z.Play) {
				return true
			}
		case *Hooks:
			if z.url(a) != "" {
				return true
			}
		}
	}
	return false
}

// Check authorizes r (Connect, Publish or Play): nil allows it, a *Denied
// refuses it. Where auth.internal.keys are set, an edge→origin leg with a
// valid internal credential is allowed at once and one with an invalid
// credential is refused. A hook that fails is
// allowed or refused by auth.hooks.failOpen; the refusal then says the
// authorization service is unavailable.
func (m *Manager) Check(ctx context.Context, r *Request) error {
	p := m.policy()
	if r.Key.Vhost == "" {
		r.Key.Vhost = streamkey.DefaultVhost
	}
	// An origin without internal keys ignores a leg credential: the leg is
	// then judged like any client (allowed when nothing is checked here).
	if tok := r.Query.Get(InternalParam); tok != "" && p.internal.Len() > 0 {
		err := p.checkInternal(r, tok, m.opts.Now())
		if err == nil {
			m.decided.WithLabelValues(string(r.Action), r.Protocol, "internal").Inc()
			return nil
		}
		m.decided.WithLabelValues(string(r.Action), r.Protocol, "denied").Inc()
		m.log.Info("refused: bad internal credential", "action", r.Action, "stream", r.Key.String(), "ip", r.IP, "err", err.Error())
		return err
	}
	for _, z := range p.chain {
		err := z.Authorize(ctx, r)
		if err == nil {
			continue
		}
		if d, ok := IsDenied(err); ok {
			m.decided.WithLabelValues(string(r.Action), r.Protocol, "denied").Inc()
			m.log.Info("refused", "action", r.Action, "protocol", r.Protocol, "stream", r.Key.String(),
				"ip", r.IP, "client", r.ClientID, "reason", d.Reason)
			return d
		}
		if p.cfg.Hooks.FailOpen {
			m.log.Warn("authorization hook failed; allowed (auth.hooks.failOpen)", "action", r.Action,
				"stream", r.Key.String(), "err", err.Error())
			continue
		}
		m.decided.WithLabelValues(string(r.Action), r.Protocol, "denied").Inc()
		m.log.Warn("authorization hook failed; refused (auth.hooks.failOpen is false)", "action", r.Action,
			"stream", r.Key.String(), "err", err.Error())
		return &Denied{Reason: "authorization service unavailable"}
	}
	m.allowedCounter(r.Action, r.Protocol).Inc()
	return nil
}

// Notify tells the hooks that an allowed publish or play ended (r.Action
// Unpublish or Stop). It blocks for at most auth.hooks.timeout; failures
// are logged and counted, never returned. Internal legs are not notified:
// the edge notifies for its own client.
func (m *Manager) Notify(ctx context.Context, r *Request) {
	if r.Query.Get(InternalParam) != "" {
		return
	}
	p := m.policy()
	for _, n := range p.notify {
		n.Notify(ctx, r)
	}
}

// NewClientID returns a process-unique client id for hooks ("c" + number)
// when the caller has none of its own.
func (m *Manager) NewClientID() string {
	return "c" + strconv.FormatUint(m.ids.Add(1), 10)
}

// TokenFrom returns the user token of a query.
func TokenFrom(q url.Values) string { return q.Get(TokenParam) }

// RTMPQuery returns the query of an RTMP request: rawQuery (the stream
// name's and the app's, as media/rtmp joins them), plus the tcUrl's query
// for the parameters rawQuery lacks, since some encoders (OBS with the
// token on the server URL) carry it only there. A malformed query counts
// as empty.
func RTMPQuery(rawQuery, tcURL string) url.Values {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		q = url.Values{}
	}
	if i := strings.IndexByte(tcURL, '?'); i >= 0 {
		if tq, err := url.ParseQuery(tcURL[i+1:]); err == nil {
			for k, v := range tq {
				if _, ok := q[k]; !ok {
					q[k] = v
				}
			}
		}
	}
	return q
}

// ClientIP returns the host part of a "host:port" remote address.
func ClientIP(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// AuthorizeHTTP authorizes a play over HTTP (protocol "hls") of key by r
// when nothing follows it (no Stop is notified, as for an HLS object). On
// a refusal it answers 401 or 403 with the reason and returns false, and
// the caller must do nothing more. When the policy checks nothing (no
// token, no hook) and r has no query (no internal credential), it allows
// at once, counted as CheckHTTP counts it, without building a Request:
// it runs for every playlist poll and segment of every HLS player.
func (m *Manager) AuthorizeHTTP(w http.ResponseWriter, r *http.Request, key streamkey.Key, protocol string) bool {
	if r.URL.RawQuery == "" && len(m.policy().chain) == 0 {
		m.allowedCounter(Play, protocol).Inc()
		return true
	}
	_, ok := m.CheckHTTP(w, r, key, protocol)
	return ok
}

// CheckHTTP authorizes a play over HTTP (protocol "flv" or "hls") of key by
// r. Allowed, it returns the request (to Notify its Stop with) and true; on
// a refusal it answers 401 or 403 with the reason and returns false, and
// the caller must do nothing more.
func (m *Manager) CheckHTTP(w http.ResponseWriter, r *http.Request, key streamkey.Key, protocol string) (*Request, bool) {
	ar := &Request{
		Action: Play, Key: key, Protocol: protocol, ClientID: m.NewClientID(),
		IP: ClientIP(r.RemoteAddr), Query: r.URL.Query(),
	}
	err := m.Check(r.Context(), ar)
	if err == nil {
		return ar, true
	}
	status := http.StatusForbidden
	if d, ok := IsDenied(err); ok {
		status = d.HTTPStatus()
	}
	w.Header().Del("Cache-Control")
	http.Error(w, err.Error(), status)
	return nil, false
}
