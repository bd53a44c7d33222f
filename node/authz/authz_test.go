package authz

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/livecluster/livecluster/node/config"
)

func tokenConfig(keys ...string) config.Auth {
	a := config.DefaultAuth()
	a.Token.Publish, a.Token.Play, a.Token.Keys = true, true, keys
	a.Internal.Keys = []string{"i1:internal-secret-0123456789"}
	return a
}

// Rotation through Update, as a config reload does: old and new key valid
// together, then the old one gone; no new Manager.
func TestManagerTokensAndRotation(t *testing.T) {
	now := func() time.Time { return t0 }
	m := newManager(t, tokenConfig("k1:0123456789abcdef-one"), now)
	ctx := context.Background()
	oldTok, _ := NewKeyring([]config.Key{k1}).Mint("", "play", s1, t0.Add(time.Hour))
	newTok, _ := NewKeyring([]config.Key{k2}).Mint("", "play", s1, t0.Add(time.Hour))
	play := func(tok string) error { return m.Check(ctx, req(Play, "s1", "1.2.3.4", "token="+url.QueryEscape(tok))) }

	if err := m.Check(ctx, req(Play, "s1", "1.2.3.4", "")); err == nil {
		t.Fatal("no token: allowed")
	} else if d, _ := IsDenied(err); d.HTTPStatus() != 401 || !strings.Contains(d.Reason, "token is required") {
		t.Fatalf("no token: %v", err)
	}
	if err := play(oldTok); err != nil {
		t.Fatal(err)
	}
	if err := play(newTok); err == nil {
		t.Fatal("k2 valid before it was configured")
	} else if d, _ := IsDenied(err); d.HTTPStatus() != 403 {
		t.Fatalf("bad token status %d", d.HTTPStatus())
	}
	if err := m.Update(tokenConfig("k2:0123456789abcdef-two", "k1:0123456789abcdef-one")); err != nil {
		t.Fatal(err)
	}
	if err := play(oldTok); err != nil {
		t.Fatalf("during rotation old: %v", err)
	}
	if err := play(newTok); err != nil {
		t.Fatalf("during rotation new: %v", err)
	}
	m.Update(tokenConfig("k2:0123456789abcdef-two"))
	if err := play(oldTok); err == nil {
		t.Fatal("old key still valid after its removal")
	}
	// A publish token does not play, and the other way round.
	pub, _ := NewKeyring([]config.Key{k2}).Mint("", "publish", s1, t0.Add(time.Hour))
	if err := play(pub); err == nil {
		t.Fatal("publish token plays")
	}
	// A bad update keeps the running policy.
	if err := m.Update(tokenConfig("broken")); err == nil {
		t.Fatal("bad keys accepted")
	}
	if err := play(newTok); err != nil {
		t.Fatalf("after a refused update: %v", err)
	}
	// Nothing configured for an action: allowed.
	cfg := tokenConfig("k2:0123456789abcdef-two")
	cfg.Token.Play = false
	m.Update(cfg)
	if m.Active(Play) || !m.Active(Publish) {
		t.Fatal("Active wrong")
	}
	if err := play(""); err != nil {
		t.Fatalf("play not required: %v", err)
	}
}

func TestManagerInternalLegs(t *testing.T) {
	now := func() time.Time { return t0 }
	origin := newManager(t, tokenConfig("k1:0123456789abcdef-one"), now)
	edge := newManager(t, tokenConfig("k1:0123456789abcdef-one"), now)
	ctx := context.Background()
	q, err := edge.LegQuery(Publish, s1)
	if err != nil || q.Get(InternalParam) == "" {
		t.Fatalf("LegQuery: %v %v", q, err)
	}
	r := req(Publish, "s1", "10.1.1.1", q.Encode())
	if err := origin.Check(ctx, r); err != nil {
		t.Fatalf("edge leg refused: %v", err)
	}
	// Bound to action and stream.
	if err := origin.Check(ctx, req(Play, "s1", "10.1.1.1", q.Encode())); err == nil {
		t.Fatal("publish leg credential plays")
	}
	if err := origin.Check(ctx, req(Publish, "s2", "10.1.1.1", q.Encode())); err == nil {
		t.Fatal("leg credential of s1 publishes s2")
	}
	// A user token is never an internal credential, even with the same secret.
	shared := tokenConfig("k1:internal-secret-0123456789")
	shared.Internal.Keys = []string{"k1:internal-secret-0123456789"}
	o2 := newManager(t, shared, now)
	user, _ := NewKeyring([]config.Key{{ID: "k1", Secret: []byte("internal-secret-0123456789")}}).Mint("", "publish", s1, t0.Add(time.Hour))
	if err := o2.Check(ctx, req(Publish, "s1", "1.1.1.1", InternalParam+"="+user)); err == nil {
		t.Fatal("user token accepted as an internal credential")
	}
	// An origin without internal keys judges a leg like any client: refused
	// here (tokens required), allowed where nothing is checked.
	noInt := tokenConfig("k1:0123456789abcdef-one")
	noInt.Internal.Keys = nil
	o3 := newManager(t, noInt, now)
	if err := o3.Check(ctx, r); err == nil {
		t.Fatal("leg accepted without internal keys")
	}
	open := newManager(t, config.DefaultAuth(), now)
	if err := open.Check(ctx, r); err != nil {
		t.Fatalf("leg refused where nothing is checked: %v", err)
	}
	// Expired leg credential.
	late := newManager(t, tokenConfig("k1:0123456789abcdef-one"), func() time.Time { return t0.Add(10 * time.Minute) })
	if err := late.Check(ctx, r); err == nil {
		t.Fatal("expired leg credential accepted")
	}
}

func TestRewritePlaylist(t *testing.T) {
	in := "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\ns1-3.ts\n#EXTINF:2.000,\ns1-4.ts?vhost=v\r\n\n"
	got := string(RewritePlaylist([]byte(in), CarriedQuery(url.Values{"token": {"a b"}, "vhost": {"v"}})))
	want := "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\ns1-3.ts?token=a+b\n#EXTINF:2.000,\ns1-4.ts?vhost=v&token=a+b\r\n\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if string(RewritePlaylist([]byte(in), CarriedQuery(url.Values{"vhost": {"v"}}))) != in {
		t.Fatal("rewritten without a credential")
	}
}

func TestRTMPQuery(t *testing.T) {
	q := RTMPQuery("vhost=v", "rtmp://h/live?token=T&vhost=other")
	if q.Get("token") != "T" || q.Get("vhost") != "v" {
		t.Fatalf("got %v", q)
	}
}

// A reload replaces the configuration pointer (cli.Runtime.Config); the
// next request runs under the new keys.
func TestManagerSourceReload(t *testing.T) {
	var cur atomic.Pointer[config.Auth]
	a := tokenConfig("k1:0123456789abcdef-one")
	cur.Store(&a)
	m, err := New(config.Auth{}, Options{Source: cur.Load, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	newTok, _ := NewKeyring([]config.Key{k2}).Mint("", "play", s1, t0.Add(time.Hour))
	r := func() error {
		return m.Check(context.Background(), req(Play, "s1", "1.1.1.1", "token="+url.QueryEscape(newTok)))
	}
	if r() == nil {
		t.Fatal("k2 valid before the reload")
	}
	b := tokenConfig("k2:0123456789abcdef-two", "k1:0123456789abcdef-one")
	cur.Store(&b)
	if err := r(); err != nil {
		t.Fatalf("after the reload: %v", err)
	}
}

// AuthorizeHTTP (every HLS request at an edge): with nothing checked it
// allows without allocating and counts the allowed play; with tokens it
// decides as CheckHTTP, answering the refusal itself.
func TestAuthorizeHTTP(t *testing.T) {
	now := func() time.Time { return t0 }
	key := withName("s1")
	open := newManager(t, config.DefaultAuth(), now)
	r := httptest.NewRequest("GET", "/live/s1.m3u8", nil)
	w := httptest.NewRecorder()
	if !open.AuthorizeHTTP(w, r, key, "hls") {
		t.Fatalf("nothing checked: refused, %d %s", w.Code, w.Body)
	}
	if n := testutil.ToFloat64(open.allowedCounter(Play, "hls")); n != 1 {
		t.Fatalf("allowed count = %v, want 1", n)
	}
	if a := testing.AllocsPerRun(100, func() { open.AuthorizeHTTP(w, r, key, "hls") }); a != 0 {
		t.Fatalf("nothing checked: %v allocations per request, want 0", a)
	}

	m := newManager(t, tokenConfig("k1:0123456789abcdef-one"), now)
	w = httptest.NewRecorder()
	if m.AuthorizeHTTP(w, r, key, "hls") || w.Code != http.StatusUnauthorized {
		t.Fatalf("tokens required, none given: %d %s", w.Code, w.Body)
	}
	tok, _ := NewKeyring([]config.Key{k1}).Mint("", "play", s1, t0.Add(time.Hour))
	w = httptest.NewRecorder()
	if !m.AuthorizeHTTP(w, httptest.NewRequest("GET", "/live/s1.m3u8?token="+url.QueryEscape(tok), nil), key, "hls") {
		t.Fatalf("valid token refused: %d %s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	if m.AuthorizeHTTP(w, httptest.NewRequest("GET", "/live/s1.m3u8?token=bad", nil), key, "hls") || w.Code != http.StatusForbidden {
		t.Fatalf("bad token: %d %s", w.Code, w.Body)
	}
}
