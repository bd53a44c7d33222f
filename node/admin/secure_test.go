package admin

import (
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/livecluster/livecluster/node/authn"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/tlsfiles"
	"github.com/livecluster/livecluster/node/tlsfiles/tlstest"
)

// TestHTTPSAndToken: with a certificate the port speaks HTTPS only; with a
// token the drain (and any route that changes something) needs it, while
// the probes, metrics and reads stay open.
func TestHTTPSAndToken(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	f := ca.Write(t, filepath.Join(t.TempDir(), "admin"), ca.Issue(t, tlstest.Leaf{CommonName: "admin", Hosts: []string{"127.0.0.1"}}))
	st, err := tlsfiles.New(tlsfiles.Options{Name: "admin", CertFile: f.Cert, KeyFile: f.Key})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := authn.NewToken("admin", config.Token{Token: "admin-token-0123456789"}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var drained, kicked atomic.Int32
	s, base := start(t, Options{TLS: st.ServerConfig(), Token: tok, Drain: func(string) { drained.Add(1) }})
	s.Mux.HandleFunc("DELETE /api/v1/clients/{id}", func(w http.ResponseWriter, r *http.Request) { kicked.Add(1) })
	s.Mux.HandleFunc("GET /api/v1/clients", func(w http.ResponseWriter, r *http.Request) {})

	// Go's TLS server answers a plain HTTP request with 400.
	if resp, err := http.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP on an HTTPS admin port: %d", resp.StatusCode)
		}
	}
	hs := "https" + base[len("http"):]
	roots, err := tlsfiles.New(tlsfiles.Options{Name: "client", CAFile: f.CA})
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: roots.ClientConfig("")}}
	do := func(method, path, token string) int {
		t.Helper()
		req, _ := http.NewRequest(method, hs+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/api/v1/clients"} {
		if code := do("GET", p, ""); code != 200 {
			t.Errorf("GET %s without a token: %d", p, code)
		}
	}
	if code := do("POST", DrainPath, ""); code != 401 || drained.Load() != 0 {
		t.Errorf("drain without a token: %d, drained %d", code, drained.Load())
	}
	if code := do("POST", DrainPath, "wrong-token-0123456789"); code != 403 || drained.Load() != 0 {
		t.Errorf("drain with a wrong token: %d, drained %d", code, drained.Load())
	}
	if code := do("DELETE", "/api/v1/clients/7", ""); code != 401 || kicked.Load() != 0 {
		t.Errorf("kick without a token: %d, kicked %d", code, kicked.Load())
	}
	if code := do("DELETE", "/api/v1/clients/7", "admin-token-0123456789"); code != 200 || kicked.Load() != 1 {
		t.Errorf("kick with the token: %d, kicked %d", code, kicked.Load())
	}
	if code := do("POST", DrainPath, "admin-token-0123456789"); code != 202 || drained.Load() != 1 {
		t.Errorf("drain with the token: %d, drained %d", code, drained.Load())
	}
}
