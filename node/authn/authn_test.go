package authn_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livecluster/livecluster/node/authn"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/tlsfiles/tlstest"
)

func TestFromCert(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	for _, c := range []struct {
		name string
		leaf tlstest.Leaf
		want string // "" : an error
	}{
		{"uri", tlstest.Leaf{URIs: []string{"livecluster://origin/origin-0"}}, "origin:origin-0"},
		{"uri wins over cn", tlstest.Leaf{CommonName: "edge:e1", URIs: []string{"livecluster://origin/o1"}}, "origin:o1"},
		{"other uri schemes ignored", tlstest.Leaf{CommonName: "edge:e1", URIs: []string{"spiffe://cluster/ns/x"}}, "edge:e1"},
		{"cn", tlstest.Leaf{CommonName: "edge:edge-7f9c"}, "edge:edge-7f9c"},
		{"role wide", tlstest.Leaf{URIs: []string{"livecluster://origin/*"}}, "origin:*"},
		{"admin uri", tlstest.Leaf{URIs: []string{"livecluster://admin"}}, "admin"},
		{"admin cn", tlstest.Leaf{CommonName: "admin"}, "admin"},
		{"bad uri does not fall back", tlstest.Leaf{CommonName: "origin:o1", URIs: []string{"livecluster://ocm/o1"}}, ""},
		{"bad node id", tlstest.Leaf{URIs: []string{"livecluster://origin/..%2f"}}, ""},
		{"plain cn", tlstest.Leaf{CommonName: "origin-0.livecluster.svc"}, ""},
		{"nothing", tlstest.Leaf{}, ""},
	} {
		p := ca.Issue(t, c.leaf)
		id, err := authn.FromCert(p.Cert)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%s: got %s, want an error", c.name, id)
		case c.want != "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && id.String() != c.want:
			t.Errorf("%s: got %s, want %s", c.name, id, c.want)
		}
	}
}

func TestActsFor(t *testing.T) {
	must := func(s string) authn.Identity {
		id, err := authn.ParseIdentity(s)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	for _, c := range []struct {
		id   string
		role authn.Role
		node string
		want bool
	}{
		{"origin:a", authn.RoleOrigin, "a", true},
		{"origin:a", authn.RoleOrigin, "b", false},
		{"origin:a", authn.RoleEdge, "a", false},
		{"origin:*", authn.RoleOrigin, "b", true},
		{"origin:*", authn.RoleEdge, "b", false},
		{"edge:e", authn.RoleEdge, "e", true},
		{"admin", authn.RoleOrigin, "x", true},
	} {
		if got := must(c.id).ActsFor(c.role, c.node); got != c.want {
			t.Errorf("%s acts for %s %s: %v, want %v", c.id, c.role, c.node, got, c.want)
		}
	}
	for _, bad := range []string{"", "origin", "ocm:x", "origin:", "origin:-x", "edge:a/b", "admin:x"} {
		if _, err := authn.ParseIdentity(bad); err == nil {
			t.Errorf("ParseIdentity(%q): no error", bad)
		}
	}
}

func TestTokenFileReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("first-token-0123456789\n")
	tok, err := authn.NewToken("test", config.Token{TokenFile: path}, -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Matches("first-token-0123456789") || tok.Matches("first-token-012345678") || tok.Matches("") {
		t.Fatal("first token: wrong matches")
	}
	write("second-token-0123456789")
	if tok.Matches("first-token-0123456789") || !tok.Matches("second-token-0123456789") {
		t.Fatal("the rotated token file was not picked up")
	}
	// An empty file (a rotation half written) keeps the token in use.
	write("")
	if !tok.Matches("second-token-0123456789") {
		t.Fatal("an empty token file replaced the token")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if tok.Value() != "second-token-0123456789" {
		t.Fatal("a missing token file replaced the token")
	}

	if _, err := authn.NewToken("short", config.Token{Token: "short"}, 0, nil); err == nil {
		t.Error("a short token was accepted")
	}
	if tk, err := authn.NewToken("none", config.Token{}, 0, nil); tk != nil || err != nil {
		t.Errorf("no token configured: %v, %v", tk, err)
	}
}

func TestRequireForChanges(t *testing.T) {
	tok, err := authn.NewToken("admin", config.Token{Token: "admin-token-0123456789"}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	reached := 0
	h := authn.RequireForChanges(tok, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ }))
	for _, c := range []struct {
		method, auth string
		code         int
	}{
		{"GET", "", 200},
		{"HEAD", "", 200},
		{"POST", "", 401},
		{"DELETE", "Basic YWRtaW46eA==", 401},
		{"DELETE", "Bearer wrong-token-0123456789", 403},
		{"PUT", "Bearer admin-token-0123456789", 200},
		{"POST", "bearer  admin-token-0123456789 ", 200},
	} {
		before := reached
		r := httptest.NewRequest(c.method, "/api/v1/drain", nil)
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.code {
			t.Errorf("%s %q: %d, want %d", c.method, c.auth, w.Code, c.code)
		}
		if passed := reached > before; passed != (c.code == 200) {
			t.Errorf("%s %q: handler reached %v", c.method, c.auth, passed)
		}
		if c.code == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s %q: no WWW-Authenticate", c.method, c.auth)
		}
	}
}
