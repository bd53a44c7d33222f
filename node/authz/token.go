package authz

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/streamkey"
)

// TokenVersion starts every token; a later format gets a new prefix.
const TokenVersion = "v1"

// Token errors, matched with errors.Is.
var (
	ErrTokenMalformed  = errors.New("malformed token")
	ErrTokenUnknownKey = errors.New("token signed with an unknown key id")
	ErrTokenExpired    = errors.New("token expired")
	ErrTokenSignature  = errors.New("token signature does not match (wrong key, stream or action)")
)

// Keyring holds the keys of one token scheme by id. The zero value has no
// key: it verifies nothing and cannot mint.
type Keyring struct {
	keys  map[string][]byte
	first string
}

// NewKeyring builds a keyring from parsed keys; the first one mints.
func NewKeyring(keys []config.Key) *Keyring {
	k := &Keyring{keys: make(map[string][]byte, len(keys))}
	for i, key := range keys {
		if i == 0 {
			k.first = key.ID
		}
		k.keys[key.ID] = key.Secret
	}
	return k
}

// Len is the number of keys.
func (k *Keyring) Len() int { return len(k.keys) }

// payload is the signed text: every field on its own line. None of them
// can contain a newline: the stream key parts, the action and the kid are
// checked against small character sets, exp is digits.
func payload(action string, key streamkey.Key, exp int64, kid string) []byte {
	return []byte("lc1\n" + action + "\n" + key.Vhost + "\n" + key.App + "\n" + key.Name + "\n" +
		strconv.FormatInt(exp, 10) + "\n" + kid)
}

func sign(secret, msg []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(msg)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Mint returns a token for action on key, valid until exp, signed with kid
// ("" : the keyring's first key). It fails when the keyring has no such
// key or the key is invalid.
func (k *Keyring) Mint(kid string, action string, key streamkey.Key, exp time.Time) (string, error) {
	if kid == "" {
		kid = k.first
	}
	secret, ok := k.keys[kid]
	if !ok {
		return "", fmt.Errorf("mint: %w %q", ErrTokenUnknownKey, kid)
	}
	if key.Vhost == "" {
		key.Vhost = streamkey.DefaultVhost
	}
	if err := key.Validate(); err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	e := exp.Unix()
	return TokenVersion + "." + kid + "." + strconv.FormatInt(e, 10) + "." + sign(secret, payload(action, key, e, kid)), nil
}

// Verify checks tok for action on key at time now. The error wraps
// ErrTokenMalformed, ErrTokenUnknownKey, ErrTokenExpired or
// ErrTokenSignature; it never contains a secret.
func (k *Keyring) Verify(tok, action string, key streamkey.Key, now time.Time) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 4 || parts[0] != TokenVersion {
		return fmt.Errorf("%w: want %s.<kid>.<expiry>.<signature>", ErrTokenMalformed, TokenVersion)
	}
	kid, expS, sig := parts[1], parts[2], parts[3]
	if config.ValidKeyID(kid) != nil {
		return fmt.Errorf("%w: bad key id", ErrTokenMalformed)
	}
	exp, err := strconv.ParseInt(expS, 10, 64)
	if err != nil || exp <= 0 || strconv.FormatInt(exp, 10) != expS {
		return fmt.Errorf("%w: bad expiry", ErrTokenMalformed)
	}
	secret, ok := k.keys[kid]
	if !ok {
		return fmt.Errorf("%w %q", ErrTokenUnknownKey, kid)
	}
	want := sign(secret, payload(action, key, exp, kid))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return ErrTokenSignature
	}
	// After the signature: an attacker learns nothing from which check failed.
	if now.Unix() >= exp {
		return fmt.Errorf("%w at %s", ErrTokenExpired, time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	return nil
}
