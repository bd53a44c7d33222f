// Package streamkey is the one home of the stream key (vhost/app/name): its
// validation, its string form ("vhost/app/name", also its etcd key suffix),
// its URL form (the app and name in the path, a non-default vhost in the
// "vhost" query parameter) and the forwarded-by marker an edge puts on a
// forwarded publish's URL. media, node, ocm, origin and edge all import it,
// and it imports nothing of the project but its own nodeid package, so the
// rule is the same on every node: a key valid on one node is valid on every
// node. The proto form lives next to the generated code (ocmv1.NewStreamKey,
// (*ocmv1.StreamKey).Key), which imports this package.
//
// Each part is 1-128 characters of [A-Za-z0-9._~-], is not "." and contains
// no "..": a name that could mean "the parent" to any path handling is
// refused outright, before it reaches etcd, a file path or a log line.
package streamkey

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultVhost is the vhost used when a client names none.
const DefaultVhost = "default"

// MaxPartLen bounds each part of a key.
const MaxPartLen = 128

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid stream key")

// ErrMissing is returned where a key is required and none was given; it
// wraps ErrInvalid.
var ErrMissing = fmt.Errorf("%w: stream key is required", ErrInvalid)

// Key identifies a stream.
type Key struct {
	Vhost, App, Name string
}

// New validates the parts and returns the key; an empty vhost means
// DefaultVhost. An invalid part is an error wrapping ErrInvalid that names
// the part.
func New(vhost, app, name string) (Key, error) {
	if vhost == "" {
		vhost = DefaultVhost
	}
	k := Key{Vhost: vhost, App: app, Name: name}
	if err := k.Validate(); err != nil {
		return Key{}, err
	}
	return k, nil
}

// Parse accepts "vhost/app/name" or "app/name" (default vhost). A malformed
// or invalid key is an error wrapping ErrInvalid.
func Parse(s string) (Key, error) {
	parts := strings.Split(s, "/")
	switch len(parts) {
	case 2:
		return New("", parts[0], parts[1])
	case 3:
		return New(parts[0], parts[1], parts[2])
	default:
		return Key{}, fmt.Errorf("%w %q: want vhost/app/name or app/name", ErrInvalid, truncate(s))
	}
}

// Validate checks every part; the error wraps ErrInvalid.
func (k Key) Validate() error {
	if err := ValidatePart("vhost", k.Vhost); err != nil {
		return err
	}
	if err := ValidatePart("app", k.App); err != nil {
		return err
	}
	return ValidatePart("name", k.Name)
}

// String returns "vhost/app/name".
func (k Key) String() string { return k.Vhost + "/" + k.App + "/" + k.Name }

// ValidatePart checks one part (or any name that must follow the same rule,
// such as an HLS file name); what names it in the error ("app", "name",
// ...). The error wraps ErrInvalid.
func ValidatePart(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(s) > MaxPartLen {
		return fmt.Errorf("%w: %s is %d bytes long, at most %d allowed", ErrInvalid, what, len(s), MaxPartLen)
	}
	if s == "." || strings.Contains(s, "..") {
		return fmt.Errorf("%w: %s %q is not allowed (\".\" alone or \"..\" anywhere)", ErrInvalid, what, truncate(s))
	}
	for i := 0; i < len(s); i++ {
		if !allowed(s[i]) {
			return fmt.Errorf("%w: %s %q has a forbidden character %q at offset %d (allowed: A-Z a-z 0-9 . _ ~ -)",
				ErrInvalid, what, truncate(s), s[i], i)
		}
	}
	return nil
}

func allowed(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c == '.', c == '_', c == '~', c == '-':
		return true
	}
	return false
}

// truncate keeps hostile input from flooding error messages and logs.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
