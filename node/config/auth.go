package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Auth is the publish and play authorization of origins and edges (the
// `auth` section of both; docs/security.md, "Publish and play
// authorization"). Every key is live: a reload swaps the keys, the hooks and
// the switches for requests that arrive afterwards (sessions already
// running are not re-checked).
type Auth struct {
	Token    AuthToken    `yaml:"token"`
	Hooks    AuthHooks    `yaml:"hooks"`
	Internal AuthInternal `yaml:"internal"`
}

// AuthToken configures signed URL tokens.
type AuthToken struct {
	// Publish requires a valid token (query parameter "token") to publish.
	Publish bool `yaml:"publish"`
	// Play requires a valid token to play (RTMP, HTTP-FLV, HLS).
	Play bool `yaml:"play"`
	// Keys are the signing keys, "kid:secret" each. Every listed key
	// verifies; the first one mints (the token subcommand). Rotate by
	// adding the new key first, reloading, then removing the old one once
	// the tokens it signed have expired.
	Keys []string `yaml:"keys"`
}

// AuthHooks configures SRS-style HTTP hooks: each non-empty URL is POSTed a
// JSON body on that event.
type AuthHooks struct {
	OnConnect   string `yaml:"onConnect"`
	OnPublish   string `yaml:"onPublish"`
	OnUnpublish string `yaml:"onUnpublish"`
	OnPlay      string `yaml:"onPlay"`
	OnStop      string `yaml:"onStop"`
	// Timeout bounds one hook call.
	Timeout Duration `yaml:"timeout"`
	// CacheTTL keeps a hook's answer (allow or refuse) this long for the
	// same action, stream, client IP and query; 0 disables the cache.
	CacheTTL Duration `yaml:"cacheTTL"`
	// CacheSize bounds the number of cached answers (least recently used
	// dropped first).
	CacheSize int `yaml:"cacheSize"`
	// FailOpen allows the request when a hook cannot be reached, times out
	// or answers a non-2xx status; false (the default) refuses it.
	FailOpen bool `yaml:"failOpen"`
}

// AuthInternal is the credential of the edge→origin legs (pulls and
// forwarded publishes), so they need no user token: an edge signs each leg
// with the first key, an origin accepts any listed key.
type AuthInternal struct {
	// Keys are "kid:secret" as for auth.token.keys, but a separate set:
	// a user token never passes as an internal one.
	Keys []string `yaml:"keys"`
	// TTL is the validity of a leg's credential (a leg is checked when it
	// opens; an HLS leg on every request).
	TTL Duration `yaml:"ttl"`
}

// AuthLive: the whole auth section reloads without a restart.
const AuthLive = "auth.*"

// DefaultAuth returns the defaults: nothing required, no hooks.
func DefaultAuth() Auth {
	return Auth{
		Hooks: AuthHooks{
			Timeout:   Duration(3 * time.Second),
			CacheTTL:  Duration(30 * time.Second),
			CacheSize: 10000,
		},
		Internal: AuthInternal{TTL: Duration(5 * time.Minute)},
	}
}

// MinSecretLen is the shortest accepted key secret, in bytes.
const MinSecretLen = 16

// Key is one parsed signing key.
type Key struct {
	ID     string
	Secret []byte
}

// ParseKeys parses "kid:secret" entries: kid is 1-32 of [A-Za-z0-9_-],
// secret at least MinSecretLen bytes; ids must be unique. The error names
// the entry by index, never the secret.
func ParseKeys(entries []string) ([]Key, error) {
	keys := make([]Key, 0, len(entries))
	seen := map[string]bool{}
	for i, e := range entries {
		id, secret, ok := strings.Cut(e, ":")
		if !ok {
			return nil, fmt.Errorf("[%d]: want \"kid:secret\"", i)
		}
		if err := ValidKeyID(id); err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		if len(secret) < MinSecretLen {
			return nil, fmt.Errorf("[%d] (kid %s): secret must be at least %d bytes, got %d", i, id, MinSecretLen, len(secret))
		}
		if seen[id] {
			return nil, fmt.Errorf("[%d]: kid %s listed twice", i, id)
		}
		seen[id] = true
		keys = append(keys, Key{ID: id, Secret: []byte(secret)})
	}
	return keys, nil
}

// ValidKeyID checks a key id: 1-32 characters of [A-Za-z0-9_-] (it appears
// in tokens, between dots).
func ValidKeyID(id string) error {
	if id == "" || len(id) > 32 {
		return fmt.Errorf("kid %q: must be 1-32 characters", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("kid %q: forbidden character %q (allowed: A-Z a-z 0-9 _ -)", id, c)
		}
	}
	return nil
}

// Validate checks the auth keys; each error names its key.
func (a *Auth) Validate() error {
	var errs []error
	add := func(key string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	tk, err := ParseKeys(a.Token.Keys)
	add("auth.token.keys", err)
	if err == nil && (a.Token.Publish || a.Token.Play) && len(tk) == 0 {
		add("auth.token.keys", errors.New("auth.token.publish or auth.token.play is set: at least one key is required"))
	}
	_, err = ParseKeys(a.Internal.Keys)
	add("auth.internal.keys", err)
	if a.Internal.TTL.D() < 10*time.Second {
		add("auth.internal.ttl", fmt.Errorf("must be >= 10s, got %s", a.Internal.TTL))
	}
	for _, h := range []struct{ key, u string }{
		{"auth.hooks.onConnect", a.Hooks.OnConnect}, {"auth.hooks.onPublish", a.Hooks.OnPublish},
		{"auth.hooks.onUnpublish", a.Hooks.OnUnpublish}, {"auth.hooks.onPlay", a.Hooks.OnPlay},
		{"auth.hooks.onStop", a.Hooks.OnStop},
	} {
		if h.u == "" {
			continue
		}
		u, err := url.Parse(h.u)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(h.key, fmt.Errorf("must be an http:// or https:// URL, got %q", h.u))
		}
	}
	if a.Hooks.Timeout <= 0 {
		add("auth.hooks.timeout", fmt.Errorf("must be > 0, got %s", a.Hooks.Timeout))
	}
	if a.Hooks.CacheTTL < 0 {
		add("auth.hooks.cacheTTL", fmt.Errorf("must be >= 0, got %s", a.Hooks.CacheTTL))
	}
	if a.Hooks.CacheSize < 1 {
		add("auth.hooks.cacheSize", fmt.Errorf("must be >= 1, got %d", a.Hooks.CacheSize))
	}
	return errors.Join(errs...)
}
