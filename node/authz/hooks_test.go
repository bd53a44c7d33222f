package authz

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/streamkey"
)

// hookServer is a real HTTP hook: it records every body and answers what
// answer returns for it.
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []HookBody
	calls  atomic.Int64
}

func newHookServer(t *testing.T, answer func(b HookBody, w http.ResponseWriter)) *hookServer {
	h := &hookServer{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var b HookBody
		if err := json.Unmarshal(raw, &b); err != nil || r.Method != http.MethodPost ||
			r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("hook got %s %q", r.Method, raw)
		}
		h.calls.Add(1)
		h.mu.Lock()
		h.bodies = append(h.bodies, b)
		h.mu.Unlock()
		answer(b, w)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) last() HookBody {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bodies[len(h.bodies)-1]
}

func hooksConfig(u string) config.Auth {
	a := config.DefaultAuth()
	a.Hooks.OnConnect, a.Hooks.OnPublish, a.Hooks.OnPlay = u+"/on_connect", u+"/on_publish", u+"/on_play"
	a.Hooks.OnUnpublish, a.Hooks.OnStop = u+"/on_unpublish", u+"/on_stop"
	a.Hooks.Timeout = config.Duration(300 * time.Millisecond)
	return a
}

func newManager(t *testing.T, cfg config.Auth, now func() time.Time) *Manager {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, Options{ServerID: "origin-0", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func req(a Action, name, ip, query string) *Request {
	q, _ := url.ParseQuery(query)
	return &Request{Action: a, Key: withName(name), Protocol: "rtmp", ClientID: "c9", IP: ip, Query: q, TcURL: "rtmp://h/live"}
}

func TestHooksAnswers(t *testing.T) {
	hs := newHookServer(t, func(b HookBody, w http.ResponseWriter) {
		switch b.Stream {
		case "zero":
			io.WriteString(w, "0\n")
		case "json0":
			io.WriteString(w, `{"code":0,"msg":"ok"}`)
		case "json403":
			io.WriteString(w, `{"code":403,"msg":"banned user"}`)
		case "one":
			io.WriteString(w, "1")
		case "empty":
		case "500":
			http.Error(w, "boom", 500)
		}
	})
	cfg := hooksConfig(hs.URL)
	cfg.Hooks.CacheTTL = 0
	m := newManager(t, cfg, time.Now)
	ctx := context.Background()
	for _, c := range []struct {
		stream  string
		allowed bool
		reason  string
	}{
		{"zero", true, ""}, {"json0", true, ""},
		{"json403", false, "banned user"}, {"one", false, "answer 1"}, {"empty", false, "answer )"},
		{"500", false, "authorization service unavailable"},
	} {
		err := m.Check(ctx, req(Publish, c.stream, "10.0.0.1", "token=abc&x=1"))
		if (err == nil) != c.allowed {
			t.Errorf("%s: err %v, want allowed=%v", c.stream, err, c.allowed)
		}
		if err != nil && !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: %q does not say %q", c.stream, err, c.reason)
		}
	}
	b := hs.last()
	want := HookBody{Action: "on_publish", ServerID: "origin-0", ClientID: "c9", IP: "10.0.0.1", Vhost: "default",
		App: "live", Stream: "500", Param: "?token=abc&x=1", TcURL: "rtmp://h/live", Protocol: "rtmp"}
	if b != want {
		t.Errorf("body %+v\nwant %+v", b, want)
	}
	// Notifications reach their hooks; their answer changes nothing.
	m.Notify(ctx, req(Unpublish, "one", "10.0.0.1", ""))
	if got := hs.last().Action; got != "on_unpublish" {
		t.Errorf("notify sent %q", got)
	}
	// Connect: no stream in the body.
	if err := m.Check(ctx, &Request{Action: Connect, Key: withName(""), IP: "10.0.0.2"}); err == nil {
		t.Error("connect with an empty answer allowed")
	}
	if b := hs.last(); b.Action != "on_connect" || b.Stream != "" || b.App != "live" {
		t.Errorf("connect body %+v", b)
	}
}

func TestHooksTimeoutFailOpenClosed(t *testing.T) {
	release := make(chan struct{})
	hs := newHookServer(t, func(b HookBody, w http.ResponseWriter) {
		<-release
		io.WriteString(w, "0")
	})
	defer close(release)
	cfg := hooksConfig(hs.URL)
	m := newManager(t, cfg, time.Now)
	start := time.Now()
	err := m.Check(context.Background(), req(Play, "s1", "10.0.0.1", ""))
	if d, ok := IsDenied(err); !ok || d.HTTPStatus() != 403 || !strings.Contains(d.Reason, "unavailable") {
		t.Fatalf("fail-closed: got %v", err)
	}
	if el := time.Since(start); el < 250*time.Millisecond || el > 2*time.Second {
		t.Errorf("timeout 300ms took %v", el)
	}
	cfg.Hooks.FailOpen = true
	if err := m.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if err := m.Check(context.Background(), req(Play, "s1", "10.0.0.1", "")); err != nil {
		t.Fatalf("fail-open: got %v", err)
	}
	// A hook nobody listens on: a failure too.
	cfg.Hooks.OnPlay = "http://127.0.0.1:1/on_play"
	cfg.Hooks.FailOpen = false
	m.Update(cfg)
	if err := m.Check(context.Background(), req(Play, "s1", "10.0.0.1", "")); err == nil {
		t.Fatal("unreachable hook, fail-closed: allowed")
	}
}

func TestHooksCache(t *testing.T) {
	var deny atomic.Bool
	hs := newHookServer(t, func(b HookBody, w http.ResponseWriter) {
		if deny.Load() {
			io.WriteString(w, "1")
			return
		}
		io.WriteString(w, "0")
	})
	now := t0
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	cfg := hooksConfig(hs.URL)
	cfg.Hooks.CacheTTL = config.Duration(10 * time.Second)
	cfg.Hooks.CacheSize = 2
	m := newManager(t, cfg, clock)
	ctx := context.Background()
	check := func(name, ip string) error { return m.Check(ctx, req(Play, name, ip, "token=t")) }
	if err := check("a", "1.1.1.1"); err != nil {
		t.Fatal(err)
	}
	deny.Store(true)
	if err := check("a", "1.1.1.1"); err != nil {
		t.Fatalf("cached allow not used: %v", err)
	}
	if n := hs.calls.Load(); n != 1 {
		t.Fatalf("%d hook calls, want 1 (cached)", n)
	}
	// Another IP or query is another entry.
	if err := check("a", "2.2.2.2"); err == nil {
		t.Fatal("another IP used the cached answer")
	}
	// A refusal is cached too.
	if err := check("a", "2.2.2.2"); err == nil || hs.calls.Load() != 2 {
		t.Fatalf("cached refusal: err %v, calls %d", err, hs.calls.Load())
	}
	// Size 2: a third entry pushes out the least recently used ("a" from 1.1.1.1).
	check("b", "1.1.1.1")
	deny.Store(false)
	if err := check("a", "1.1.1.1"); err != nil || hs.calls.Load() != 4 {
		t.Fatalf("evicted entry: err %v, calls %d (want 4)", err, hs.calls.Load())
	}
	if n := m.cur.Load().hooks.CacheLen(); n != 2 {
		t.Fatalf("cache holds %d, bound 2", n)
	}
	// TTL: after 10 s the hook is asked again.
	deny.Store(true)
	mu.Lock()
	now = now.Add(11 * time.Second)
	mu.Unlock()
	if err := check("a", "1.1.1.1"); err == nil {
		t.Fatal("expired cache entry used")
	}
	// Failures are not cached: a hook back up answers at once.
	calls := hs.calls.Load()
	hs.Close()
	if err := check("c", "1.1.1.1"); err == nil {
		t.Fatal("down hook allowed (fail-closed)")
	}
	if m.cur.Load().hooks.CacheLen() > 2 || hs.calls.Load() != calls {
		t.Fatal("failure cached or counted")
	}
}

func withName(n string) streamkey.Key { k := s1; k.Name = n; return k }
