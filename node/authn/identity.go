// Package authn is who a caller of the control plane is, and the bearer
// tokens that prove it: the identity convention of node certificates
// (shared by the OCM that reads it, the chart and the tests that issue
// certificates), token files re-read when they change, the constant-time
// comparison, the HTTP middleware that guards mutating admin endpoints and
// the gRPC per-call credentials nodes send. docs/security.md, "Control
// plane authentication", describes the model.
//
// # Identities
//
// An identity is a role and a node id, written "<role>:<node-id>":
//
//	origin:origin-0   the origin whose node id is origin-0
//	edge:edge-7f9c    an edge
//	origin:*          any origin (a certificate or token shared by a role)
//	admin             an operator (grpcurl, scripts): any call, any node
//
// A certificate carries it as a URI SAN livecluster://<role>/<node-id>
// (livecluster://admin for an operator), or, when it has no such URI, as
// its subject common name "<role>:<node-id>". The URI wins when both are
// present.
package authn

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/livecluster/livecluster/streamkey/nodeid"
)

// Role is what a caller is.
type Role string

// The roles. Admin is an operator, allowed everything.
const (
	RoleOrigin Role = "origin"
	RoleEdge   Role = "edge"
	RoleAdmin  Role = "admin"
)

// AnyNode is the node id of an identity shared by every node of a role.
const AnyNode = "*"

// URIScheme is the scheme of identity URI SANs.
const URIScheme = "livecluster"

// Identity is an authenticated caller.
type Identity struct {
	Role Role
	// Node is the node id the caller may act for; AnyNode for any node of
	// Role; empty for RoleAdmin.
	Node string
}

// String writes the identity as ParseIdentity reads it.
func (id Identity) String() string {
	if id.Role == RoleAdmin {
		return string(RoleAdmin)
	}
	return string(id.Role) + ":" + id.Node
}

// URI is the identity as a certificate URI SAN.
func (id Identity) URI() string {
	if id.Role == RoleAdmin {
		return URIScheme + "://" + string(RoleAdmin)
	}
	return URIScheme + "://" + string(id.Role) + "/" + id.Node
}

// ActsFor reports whether the caller may act as node (of role): an admin
// always; a node identity only for its own id (any id of its role with
// AnyNode) and only in its own role.
func (id Identity) ActsFor(role Role, node string) bool {
	if id.Role == RoleAdmin {
		return true
	}
	return id.Role == role && (id.Node == AnyNode || id.Node == node)
}

// ParseIdentity reads "origin:<node-id>", "edge:<node-id>" (node id
// possibly "*") or "admin".
func ParseIdentity(s string) (Identity, error) {
	if s == string(RoleAdmin) {
		return Identity{Role: RoleAdmin}, nil
	}
	role, node, ok := strings.Cut(s, ":")
	if !ok {
		return Identity{}, fmt.Errorf("identity %q: want origin:<node-id>, edge:<node-id> (or :*) or admin", s)
	}
	return parseParts(s, role, node)
}

func parseParts(s, role, node string) (Identity, error) {
	switch Role(role) {
	case RoleOrigin, RoleEdge:
	default:
		return Identity{}, fmt.Errorf("identity %q: role %q is not origin, edge or admin", s, role)
	}
	if node != AnyNode {
		if err := nodeid.Validate(node); err != nil {
			return Identity{}, fmt.Errorf("identity %q: %w", s, err)
		}
	}
	return Identity{Role: Role(role), Node: node}, nil
}

// ErrNoIdentity: a certificate names no identity by the convention.
var ErrNoIdentity = errors.New("certificate names no livecluster identity")

// FromCert reads the identity of a verified client certificate: its
// livecluster:// URI SAN, or else its common name. A URI SAN of the
// scheme that does not parse is an error (not a fall-back to the CN).
func FromCert(c *x509.Certificate) (Identity, error) {
	for _, u := range c.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		if u.Host == string(RoleAdmin) && (u.Path == "" || u.Path == "/") {
			return Identity{Role: RoleAdmin}, nil
		}
		return parseParts(u.String(), u.Host, strings.TrimPrefix(u.Path, "/"))
	}
	if c.Subject.CommonName != "" {
		if id, err := ParseIdentity(c.Subject.CommonName); err == nil {
			return id, nil
		}
	}
	return Identity{}, fmt.Errorf("%w (subject %q): want a URI SAN %s://<role>/<node-id> or CN <role>:<node-id>",
		ErrNoIdentity, c.Subject.String(), URIScheme)
}
