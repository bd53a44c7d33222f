package authz

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/livecluster/livecluster/node/config"
)

// HookOptions configure Hooks.
type HookOptions struct {
	// ServerID is sent as server_id.
	ServerID string
	Client   *http.Client
	Now      func() time.Time
	// Failed is told the hook name ("on_publish") of each failed call.
	Failed func(hook string)
}

// Hooks is the HTTP hook strategy, shaped like SRS's http_hooks: each event
// with a URL configured is POSTed a JSON body (HookBody). A check
// (on_connect, on_publish, on_play) is allowed when the hook answers a 2xx
// status with the body "0" or a JSON object whose "code" is 0; any other
// 2xx answer refuses it. No answer within the timeout, a transport error or
// a non-2xx status is a failure (auth.hooks.failOpen decides). Answers
// (allow or refuse, not failures) are cached for CacheTTL per action,
// stream, client IP and query, at most CacheSize of them.
// on_unpublish and on_stop are notifications: their answer is ignored.
type Hooks struct {
	cfg  config.AuthHooks
	opts HookOptions

	mu    sync.Mutex
	cache map[string]*list.Element
	lru   list.List // of *cached, most recent at the front
}

type cached struct {
	key     string
	denied  *Denied // nil: allowed
	expires time.Time
}

// HookBody is the JSON POSTed to a hook (SRS's field names).
type HookBody struct {
	Action   string `json:"action"` // on_connect, on_publish, ...
	ServerID string `json:"server_id"`
	ClientID string `json:"client_id"`
	IP       string `json:"ip"`
	Vhost    string `json:"vhost"`
	App      string `json:"app"`
	Stream   string `json:"stream,omitempty"`
	Param    string `json:"param"`
	TcURL    string `json:"tcUrl,omitempty"`
	// Protocol is rtmp, flv or hls (not in SRS).
	Protocol string `json:"protocol"`
}

// NewHooks returns the hook strategy of cfg.
func NewHooks(cfg config.AuthHooks, opts HookOptions) *Hooks {
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Hooks{cfg: cfg, opts: opts, cache: map[string]*list.Element{}}
}

func (h *Hooks) url(a Action) string {
	switch a {
	case Connect:
		return h.cfg.OnConnect
	case Publish:
		return h.cfg.OnPublish
	case Play:
		return h.cfg.OnPlay
	case Unpublish:
		return h.cfg.OnUnpublish
	case Stop:
		return h.cfg.OnStop
	}
	return ""
}

func (h *Hooks) body(r *Request) HookBody {
	return HookBody{
		Action: "on_" + string(r.Action), ServerID: h.opts.ServerID, ClientID: r.ClientID, IP: r.IP,
		Vhost: r.Key.Vhost, App: r.Key.App, Stream: r.Key.Name, Param: r.param(), TcURL: r.TcURL, Protocol: r.Protocol,
	}
}

// Authorize implements Authorizer for Connect, Publish and Play.
func (h *Hooks) Authorize(ctx context.Context, r *Request) error {
	u := h.url(r.Action)
	if u == "" || (r.Action != Connect && r.Action != Publish && r.Action != Play) {
		return nil
	}
	ck := strings.Join([]string{string(r.Action), r.Key.String(), r.IP, r.param()}, "\x00")
	if d, ok := h.lookup(ck); ok {
		if d != nil {
			return d
		}
		return nil
	}
	d, err := h.call(ctx, u, h.body(r))
	if err != nil {
		if h.opts.Failed != nil {
			h.opts.Failed("on_" + string(r.Action))
		}
		return err
	}
	h.store(ck, d)
	if d != nil {
		return d
	}
	return nil
}

// Notify implements Notifier for Unpublish and Stop.
func (h *Hooks) Notify(ctx context.Context, r *Request) {
	u := h.url(r.Action)
	if u == "" || (r.Action != Unpublish && r.Action != Stop) {
		return
	}
	if _, err := h.call(context.WithoutCancel(ctx), u, h.body(r)); err != nil && h.opts.Failed != nil {
		h.opts.Failed("on_" + string(r.Action))
	}
}

// call POSTs body to u within the timeout: (nil, nil) allows, (*Denied,
// nil) refuses, an error is a failure.
func (h *Hooks) call(ctx context.Context, u string, body HookBody) (*Denied, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout.D())
	defer cancel()
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s hook: %w", body.Action, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.opts.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s hook %s: %w", body.Action, u, err)
	}
	defer resp.Body.Close()
	ans, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("%s hook %s: read answer: %w", body.Action, u, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("%s hook %s: status %s", body.Action, u, resp.Status)
	}
	return verdict(body.Action, ans), nil
}

// verdict reads a 2xx answer: "0" or {"code":0} allows; anything else
// refuses, with the answer's "msg" (or its code) as the reason.
func verdict(hook string, ans []byte) *Denied {
	t := bytes.TrimSpace(ans)
	if string(t) == "0" {
		return nil
	}
	var v struct {
		Code *json.Number `json:"code"`
		Msg  string       `json:"msg"`
	}
	dec := json.NewDecoder(bytes.NewReader(t))
	dec.UseNumber()
	if err := dec.Decode(&v); err == nil && v.Code != nil {
		if v.Code.String() == "0" {
			return nil
		}
		reason := "refused by the " + hook + " hook (code " + v.Code.String() + ")"
		if v.Msg != "" {
			reason += ": " + truncate(v.Msg)
		}
		return &Denied{Reason: reason}
	}
	return &Denied{Reason: "refused by the " + hook + " hook (answer " + truncate(string(t)) + ")"}
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func (h *Hooks) lookup(k string) (*Denied, bool) {
	if h.cfg.CacheTTL <= 0 {
		return nil, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.cache[k]
	if !ok {
		return nil, false
	}
	c := e.Value.(*cached)
	if !h.opts.Now().Before(c.expires) {
		h.lru.Remove(e)
		delete(h.cache, k)
		return nil, false
	}
	h.lru.MoveToFront(e)
	return c.denied, true
}

func (h *Hooks) store(k string, d *Denied) {
	if h.cfg.CacheTTL <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	exp := h.opts.Now().Add(h.cfg.CacheTTL.D())
	if e, ok := h.cache[k]; ok {
		c := e.Value.(*cached)
		c.denied, c.expires = d, exp
		h.lru.MoveToFront(e)
		return
	}
	h.cache[k] = h.lru.PushFront(&cached{key: k, denied: d, expires: exp})
	for h.lru.Len() > max(h.cfg.CacheSize, 1) {
		last := h.lru.Back()
		h.lru.Remove(last)
		delete(h.cache, last.Value.(*cached).key)
	}
}

// CacheLen is the number of cached answers (tests, metrics).
func (h *Hooks) CacheLen() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lru.Len()
}
