package store

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// DefaultVhost replaces an empty vhost.
const DefaultVhost = "default"

const maxPartLen = 128

// Key is a validated stream key.
type Key struct {
	Vhost, App, Name string
}

// String is "vhost/app/name", also the key's suffix in etcd and its sort
// order in listings.
func (k Key) String() string { return k.Vhost + "/" + k.App + "/" + k.Name }

// Proto returns the key as a message.
func (k Key) Proto() *ocmv1.StreamKey {
	return &ocmv1.StreamKey{Vhost: k.Vhost, App: k.App, Name: k.Name}
}

// ValidateKey checks a stream key and fills in the default vhost. The error is
// an InvalidArgument status.
func ValidateKey(k *ocmv1.StreamKey) (Key, error) {
	if k == nil {
		return Key{}, status.Error(codes.InvalidArgument, "stream key is required")
	}
	v := k.GetVhost()
	if v == "" {
		v = DefaultVhost
	}
	out := Key{Vhost: v, App: k.GetApp(), Name: k.GetName()}
	for _, p := range []struct{ what, s string }{{"vhost", out.Vhost}, {"app", out.App}, {"name", out.Name}} {
		if err := validatePart(p.s); err != nil {
			return Key{}, status.Errorf(codes.InvalidArgument, "stream key %s %q: %v", p.what, p.s, err)
		}
	}
	return out, nil
}

// ParseKey parses "vhost/app/name" (as used by the JSON API and page tokens).
func ParseKey(s string) (Key, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return Key{}, status.Errorf(codes.InvalidArgument, "stream key %q: want vhost/app/name", s)
	}
	return ValidateKey(&ocmv1.StreamKey{Vhost: parts[0], App: parts[1], Name: parts[2]})
}

func validatePart(s string) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	if len(s) > maxPartLen {
		return fmt.Errorf("longer than %d characters", maxPartLen)
	}
	if s == "." || strings.Contains(s, "..") {
		return fmt.Errorf("\".\" alone or \"..\" anywhere is not allowed")
	}
	for i := 0; i < len(s); i++ {
		if !keyChar(s[i]) {
			return fmt.Errorf("character %q at %d not in [A-Za-z0-9._~-]", s[i], i)
		}
	}
	return nil
}

func keyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '~' || c == '-'
}

// ValidateNodeID checks a node id: 1-63 characters of [A-Za-z0-9._-],
// starting with a letter or digit. The error is an InvalidArgument status.
func ValidateNodeID(id string) error {
	bad := func(why string) error {
		return status.Errorf(codes.InvalidArgument, "node id %q: %s", id, why)
	}
	if id == "" {
		return bad("empty")
	}
	if len(id) > 63 {
		return bad("longer than 63 characters")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return bad("must start with a letter or digit")
		}
		if !alnum && c != '.' && c != '_' && c != '-' {
			return bad(fmt.Sprintf("character %q not in [A-Za-z0-9._-]", c))
		}
	}
	return nil
}

// Schema names the etcd keys under a prefix:
//
//	<prefix>nodes/<id>               node record (binary ocmv1.Node), on the node's lease
//	<prefix>streams/<vhost>/<app>/<name>  stream record (binary ocmv1.Stream), on the owner's lease
//	<prefix>draining/<id>            empty marker, on the node's lease, present while DRAINING
//
// The draining marker exists so that a claim can check "the node is not
// draining" inside its transaction (etcd can only compare whole values).
type Schema struct{ Prefix string }

// Kind of an etcd key under the prefix.
type Kind int

// Kinds of keys.
const (
	KindOther Kind = iota
	KindNode
	KindStream
)

// Nodes is the node key prefix.
func (s Schema) Nodes() string { return s.Prefix + "nodes/" }

// Streams is the stream key prefix.
func (s Schema) Streams() string { return s.Prefix + "streams/" }

// NodeKey is a node record's key.
func (s Schema) NodeKey(id string) string { return s.Nodes() + id }

// StreamKey is a stream record's key.
func (s Schema) StreamKey(k Key) string { return s.Streams() + k.String() }

// DrainKey is a node's draining marker.
func (s Schema) DrainKey(id string) string { return s.Prefix + "draining/" + id }

// Classify tells what an etcd key is and returns its id (node id or
// "vhost/app/name").
func (s Schema) Classify(key string) (Kind, string) {
	switch {
	case strings.HasPrefix(key, s.Nodes()):
		return KindNode, key[len(s.Nodes()):]
	case strings.HasPrefix(key, s.Streams()):
		return KindStream, key[len(s.Streams()):]
	}
	return KindOther, ""
}
