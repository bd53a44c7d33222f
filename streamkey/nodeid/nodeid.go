// Package nodeid holds the rule for node ids, the one place every binary
// checks them: origins and edges at start (a bad host name fails before it
// reaches the OCM), the origin on a forwarded publish's marker, and the OCM
// on every call that names a node.
package nodeid

import (
	"errors"
	"fmt"
)

// MaxLen bounds a node id (a Kubernetes pod name fits; so does a DNS label).
const MaxLen = 63

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid node id")

// Validate checks a node id: 1-63 characters of [A-Za-z0-9._-], starting
// with a letter or digit. The error wraps ErrInvalid and names the id
// (truncated) and what is wrong with it.
func Validate(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(id) > MaxLen {
		return fmt.Errorf("%w %q: %d characters long, at most %d allowed", ErrInvalid, truncate(id), len(id), MaxLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("%w %q: must start with a letter or digit", ErrInvalid, id)
		}
		if !alnum && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("%w %q: character %q at offset %d not in [A-Za-z0-9._-]", ErrInvalid, id, c, i)
		}
	}
	return nil
}

// truncate keeps hostile input from flooding error messages and logs.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
