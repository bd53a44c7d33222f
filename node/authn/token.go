package authn

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/livecluster/livecluster/node/config"
)

// DefaultInterval is how often, at most, a token file is checked for a
// change (on demand, when the token is used).
const DefaultInterval = 5 * time.Second

// MinTokenLen is the shortest token accepted: a token is a random secret,
// not a password (e.g. `openssl rand -hex 32`).
const MinTokenLen = 16

// Token is a bearer token from config: a value, or a file re-read when it
// changes (a mounted Secret that is rotated). A changed file that is empty,
// too short or unreadable is logged and the previous token stays.
type Token struct {
	name     string
	file     string
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	value   string
	sum     [32]byte // sha256 of value, compared in constant time
	checked time.Time
	bad     string // the last bad content reported, not to log it twice
}

// NewToken loads t (name says what it is for, in logs and errors);
// interval 0 is DefaultInterval, negative re-reads the file at every use.
// It fails when the file cannot be read or the token is shorter than
// MinTokenLen. It returns nil, nil when t is not set.
func NewToken(name string, t config.Token, interval time.Duration, log *slog.Logger) (*Token, error) {
	if !t.Set() {
		return nil, nil
	}
	if interval == 0 {
		interval = DefaultInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tk := &Token{name: name, file: t.TokenFile, interval: interval, log: log.With("component", "authn", "token", name)}
	v := t.Token
	if t.TokenFile != "" {
		var err error
		if v, err = tk.readFile(); err != nil {
			return nil, err
		}
	}
	if err := check(name, v); err != nil {
		return nil, err
	}
	tk.set(v)
	tk.checked = time.Now()
	return tk, nil
}

func check(name, v string) error {
	if len(v) < MinTokenLen {
		return fmt.Errorf("token %s: %d characters, at least %d wanted (a random secret, e.g. `openssl rand -hex 32`)", name, len(v), MinTokenLen)
	}
	if strings.ContainsAny(v, " \t\r\n") {
		return fmt.Errorf("token %s: contains white space", name)
	}
	return nil
}

func (t *Token) readFile() (string, error) {
	b, err := os.ReadFile(t.file)
	if err != nil {
		return "", fmt.Errorf("token %s: %w", t.name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (t *Token) set(v string) {
	t.value = v
	t.sum = sha256.Sum256([]byte(v))
}

// refresh re-reads the file once the interval has passed. Callers hold mu.
func (t *Token) refresh() {
	if t.file == "" || (t.interval > 0 && time.Since(t.checked) < t.interval) {
		return
	}
	t.checked = time.Now()
	v, err := t.readFile()
	if err == nil {
		err = check(t.name, v)
	}
	switch {
	case err == nil && v != t.value:
		t.set(v)
		t.bad = ""
		t.log.Info("token file changed on disk; new token in use", "file", t.file)
	case err != nil && err.Error() != t.bad:
		t.bad = err.Error()
		t.log.Error("token file changed but is not usable; keeping the previous token", "file", t.file, "err", err.Error())
	}
}

// Value returns the current token.
func (t *Token) Value() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refresh()
	return t.value
}

// Matches compares presented with the current token in constant time (of
// the token's length: both sides are hashed first).
func (t *Token) Matches(presented string) bool {
	p := sha256.Sum256([]byte(presented))
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refresh()
	return subtle.ConstantTimeCompare(p[:], t.sum[:]) == 1
}

// Bearer extracts the token of an "Bearer <token>" authorization value;
// ok is false when the value is not of that form.
func Bearer(header string) (token string, ok bool) {
	scheme, tok, found := strings.Cut(header, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// Safe reports whether an HTTP method only reads (GET, HEAD, OPTIONS).
func Safe(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// RequireForChanges guards next: a request whose method changes something
// (anything but GET, HEAD and OPTIONS) must carry "Authorization: Bearer
// <token>" matching tok; otherwise it gets 401 (no or malformed header, with
// WWW-Authenticate) or 403 (wrong token) and next never sees it. Reads pass.
// A nil tok passes everything (no token configured).
func RequireForChanges(tok *Token, log *slog.Logger, next http.Handler) http.Handler {
	if tok == nil {
		return next
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if Safe(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		p, ok := Bearer(r.Header.Get("Authorization"))
		if !ok {
			log.Warn("request refused: no bearer token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="livecluster"`)
			http.Error(w, "this endpoint needs Authorization: Bearer <admin token>", http.StatusUnauthorized)
			return
		}
		if !tok.Matches(p) {
			log.Warn("request refused: wrong bearer token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			http.Error(w, "bearer token refused", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// PerRPC returns gRPC per-call credentials that send tok as
// "authorization: Bearer <token>" (re-read from its file as it changes).
// requireTLS refuses to send it over a plaintext connection; without TLS
// the token crosses the network in clear (docs/security.md).
func PerRPC(tok *Token, requireTLS bool) *PerRPCToken {
	return &PerRPCToken{tok: tok, tls: requireTLS}
}

// PerRPCToken implements credentials.PerRPCCredentials.
type PerRPCToken struct {
	tok *Token
	tls bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (p *PerRPCToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if p.tok == nil {
		return nil, errors.New("no token")
	}
	return map[string]string{"authorization": "Bearer " + p.tok.Value()}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (p *PerRPCToken) RequireTransportSecurity() bool { return p.tls }
