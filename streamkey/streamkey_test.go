package streamkey

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	k, err := New("", "live", "s1-A_b~.x")
	if err != nil {
		t.Fatal(err)
	}
	if k.String() != "default/live/s1-A_b~.x" {
		t.Fatalf("got %q", k.String())
	}
	k, err = Parse("v1/app/name")
	if err != nil || k.Vhost != "v1" || k.App != "app" || k.Name != "name" {
		t.Fatalf("parse: %+v %v", k, err)
	}
	if _, err := New("", "a", strings.Repeat("x", 128)); err != nil {
		t.Fatal(err)
	}
}

func TestInvalid(t *testing.T) {
	cases := []struct{ app, name, want string }{
		{"live", "", "name is empty"},
		{"", "s", "app is empty"},
		{"live", "..", `name ".." is not allowed`},
		{"live", ".", `name "." is not allowed`},
		{"live", "a..b", `name "a..b" is not allowed`},
		{"..x", "s", `app "..x" is not allowed`},
		{"live", "a/b", "forbidden character '/'"},
		{"live", "a\x00b", `forbidden character '\x00'`},
		{"live", "a b", "forbidden character ' '"},
		{"live", "a?b", "forbidden character '?'"},
		{"live", strings.Repeat("x", 129), "129 bytes long"},
		{"li%ve", "s", "app"},
	}
	for _, c := range cases {
		_, err := New("", c.app, c.name)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%q,%q): err=%v, want containing %q", c.app, c.name, err, c.want)
		}
	}
	for _, s := range []string{"a", "a/b/c/d", "../a/b"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}

func TestURLForm(t *testing.T) {
	def, _ := New("", "live", "s")
	if q := def.Query(); q != "" {
		t.Errorf("default vhost query %q, want none", q)
	}
	v, _ := New("v-1", "live", "s")
	if q := v.Query(); q != "?vhost=v-1" {
		t.Errorf("query %q", q)
	}
	u, err := url.Parse("rtmp://h/live/s" + v.Query())
	if err != nil {
		t.Fatal(err)
	}
	back, err := FromURL("live", "s", u.Query())
	if err != nil || back != v {
		t.Errorf("round trip: %+v %v, want %+v", back, err, v)
	}
	if k, err := FromURL("live", "s", url.Values{}); err != nil || k != def {
		t.Errorf("no vhost: %+v %v", k, err)
	}
	if _, err := FromURL("live", "s", url.Values{VhostParam: {"a/b"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad vhost accepted: %v", err)
	}

	q := v.ForwardQuery("edge-1")
	if got := q.Encode(); got != "lc_forwarded_by=edge-1&vhost=v-1" {
		t.Errorf("forward query %q", got)
	}
	if id, err := ForwardedBy(q); err != nil || id != "edge-1" {
		t.Errorf("forwarded by %q %v", id, err)
	}
	if id, err := ForwardedBy(def.ForwardQuery("e")); err != nil || id != "e" {
		t.Errorf("forwarded by %q %v", id, err)
	}
	if q := def.ForwardQuery("e"); q.Has(VhostParam) {
		t.Errorf("default vhost in the forward query: %v", q)
	}
	if id, err := ForwardedBy(url.Values{}); err != nil || id != "" {
		t.Errorf("direct publish: %q %v", id, err)
	}
	if _, err := ForwardedBy(url.Values{ForwardedByParam: {"-bad id"}}); err == nil || !strings.Contains(err.Error(), ForwardedByParam) {
		t.Errorf("bad marker accepted: %v", err)
	}
}

func TestEpochParam(t *testing.T) {
	k := Key{Vhost: "v1", App: "live", Name: "s"}
	q := k.PullQuery(4711)
	if q != "?lc_epoch=4711&vhost=v1" {
		t.Fatalf("PullQuery = %q", q)
	}
	if got := (Key{Vhost: DefaultVhost, App: "live", Name: "s"}).PullQuery(0); got != "" {
		t.Fatalf("PullQuery(0) of the default vhost = %q, want empty", got)
	}
	vals, _ := url.ParseQuery(q[1:])
	if e, err := Epoch(vals); err != nil || e != 4711 {
		t.Fatalf("Epoch = %d, %v", e, err)
	}
	if e, err := Epoch(url.Values{}); err != nil || e != 0 {
		t.Fatalf("Epoch of no param = %d, %v", e, err)
	}
	for _, bad := range []string{"0", "-3", "x", "1e3", "99999999999999999999"} {
		if _, err := Epoch(url.Values{EpochParam: {bad}}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Epoch(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestRelayQuery(t *testing.T) {
	k := Key{Vhost: "v1", App: "live", Name: "s"}
	q, err := url.ParseQuery(strings.TrimPrefix(k.RelayQuery(4711), "?"))
	if err != nil {
		t.Fatal(err)
	}
	if !IsRelay(q) || q.Get(EpochParam) != "4711" || q.Get(VhostParam) != "v1" {
		t.Fatalf("RelayQuery(4711) = %v: want the relay marker, the epoch and the vhost", q)
	}
	if IsRelay(url.Values{}) {
		t.Fatal("a query without the marker is a relay")
	}
}
