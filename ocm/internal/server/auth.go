package server

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/node/authn"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// Auth says who may call the OCM service (docs/security.md, "Control plane
// authentication"). With neither MTLS nor Tokens every call is open, as
// before authentication existed.
type Auth struct {
	// MTLS reads the caller's identity from its client certificate, which
	// the listener verified (tlsfiles.Store.ServerConfig with a CA).
	MTLS bool
	// Tokens are the bearer tokens accepted ("authorization: Bearer" in
	// the call's metadata) and the identity each grants. A caller with a
	// client certificate is identified by it; its token is not looked at.
	Tokens []TokenIdentity
	// OpenReads lets callers without credentials use the read calls
	// (LookupStream, AssignOrigin, WatchStreams, ListNodes, ListStreams).
	// Writes always need an identity once auth is on.
	OpenReads bool
}

// TokenIdentity is one accepted token.
type TokenIdentity struct {
	Identity authn.Identity
	Token    *authn.Token
}

// On reports whether calls are authenticated at all.
func (a *Auth) On() bool { return a != nil && (a.MTLS || len(a.Tokens) > 0) }

const svcPrefix = "/livecluster.ocm.v1.OCMService/"

// rule decides whether id may make a call with request req. It returns
// nil, or a PermissionDenied status saying why not.
type rule func(s *Server, id authn.Identity, req any) error

// reads need any identity (or none with OpenReads).
var reads = map[string]bool{
	"LookupStream": true, "AssignOrigin": true, "WatchStreams": true, "ListNodes": true, "ListStreams": true,
}

// rules of the calls that act for a node. A call missing from rules and
// reads is refused to all but admins: a new RPC is closed until it gets
// a rule.
var rules = map[string]rule{
	"Register": func(s *Server, id authn.Identity, req any) error {
		n := req.(*ocmv1.RegisterRequest).GetNode()
		return actsFor(id, roleOf(n.GetRole()), n.GetId(), "register")
	},
	"Heartbeat": func(s *Server, id authn.Identity, req any) error {
		return s.actsForNode(id, req.(*ocmv1.HeartbeatRequest).GetNodeId(), "heartbeat")
	},
	"KeepSession": func(s *Server, id authn.Identity, req any) error {
		return s.actsForNode(id, req.(*ocmv1.KeepSessionRequest).GetNodeId(), "keep the session of")
	},
	"Drain": func(s *Server, id authn.Identity, req any) error {
		return s.actsForNode(id, req.(*ocmv1.DrainRequest).GetNodeId(), "drain")
	},
	"Deregister": func(s *Server, id authn.Identity, req any) error {
		return s.actsForNode(id, req.(*ocmv1.DeregisterRequest).GetNodeId(), "deregister")
	},
	"ClaimStream": func(s *Server, id authn.Identity, req any) error {
		return actsFor(id, authn.RoleOrigin, req.(*ocmv1.ClaimStreamRequest).GetNodeId(), "claim a stream for")
	},
	"ReleaseStream": func(s *Server, id authn.Identity, req any) error {
		return actsFor(id, authn.RoleOrigin, req.(*ocmv1.ReleaseStreamRequest).GetNodeId(), "release a stream of")
	},
	"TransferStream": func(s *Server, id authn.Identity, req any) error {
		return actsFor(id, authn.RoleOrigin, req.(*ocmv1.TransferStreamRequest).GetNodeId(), "transfer a stream for")
	},
}

func roleOf(r ocmv1.NodeRole) authn.Role {
	switch r {
	case ocmv1.NodeRole_NODE_ROLE_ORIGIN:
		return authn.RoleOrigin
	case ocmv1.NodeRole_NODE_ROLE_EDGE:
		return authn.RoleEdge
	}
	return ""
}

func actsFor(id authn.Identity, role authn.Role, node, what string) error {
	if id.ActsFor(role, node) {
		return nil
	}
	if role == "" {
		role = "node"
	}
	return status.Errorf(codes.PermissionDenied, "%s may not %s %s %q", id, what, role, node)
}

// actsForNode: the caller acts for node in the node's registered role (the
// cache's; a node registered a moment ago on another replica is judged by
// the caller's own role, and the store still checks its lease).
func (s *Server) actsForNode(id authn.Identity, node, what string) error {
	role := id.Role
	if n, ok := s.c.Node(node); ok {
		role = roleOf(n.GetRole())
	}
	if id.Role == authn.RoleAdmin {
		return nil
	}
	return actsFor(id, role, node, what)
}

// identify returns the caller's identity: its verified client
// certificate's, else its bearer token's. ok is false when it presented
// neither; an error (UNAUTHENTICATED) when what it presented is not valid.
func (s *Server) identify(ctx context.Context) (id authn.Identity, ok bool, err error) {
	if s.auth.MTLS {
		if p, found := peer.FromContext(ctx); found {
			if ti, isTLS := p.AuthInfo.(credentials.TLSInfo); isTLS && len(ti.State.PeerCertificates) > 0 {
				id, err := authn.FromCert(ti.State.PeerCertificates[0])
				if err != nil {
					return id, false, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
				}
				return id, true, nil
			}
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return authn.Identity{}, false, nil
	}
	tok, isBearer := authn.Bearer(vals[0])
	if !isBearer {
		return authn.Identity{}, false, status.Error(codes.Unauthenticated, `authorization: want "Bearer <token>"`)
	}
	// Every token is compared (each in constant time), so the time taken
	// does not tell which one nearly matched.
	found := -1
	for i, t := range s.auth.Tokens {
		if t.Token.Matches(tok) && found < 0 {
			found = i
		}
	}
	if found < 0 {
		return authn.Identity{}, false, status.Error(codes.Unauthenticated, "bearer token not recognized")
	}
	return s.auth.Tokens[found].Identity, true, nil
}

// authorize is the decision for one call of method (a full gRPC method
// name) with its request: nil, UNAUTHENTICATED (no or bad credentials) or
// PERMISSION_DENIED (an identity that may not do this).
func (s *Server) authorize(ctx context.Context, method string, req any) error {
	name, isOCM := strings.CutPrefix(method, svcPrefix)
	if !isOCM {
		return nil // health and reflection stay open
	}
	id, ok, err := s.identify(ctx)
	if err != nil {
		return err
	}
	if !ok {
		if reads[name] && s.auth.OpenReads {
			return nil
		}
		return status.Errorf(codes.Unauthenticated, "%s needs credentials: a client certificate or an authorization bearer token", name)
	}
	if reads[name] || id.Role == authn.RoleAdmin {
		return nil
	}
	r, known := rules[name]
	if !known {
		return status.Errorf(codes.PermissionDenied, "%s may not call %s", id, name)
	}
	return r(s, id, req)
}

func (s *Server) refused(ctx context.Context, method string, err error) {
	remote := ""
	if p, ok := peer.FromContext(ctx); ok {
		remote = p.Addr.String()
	}
	s.log.Warn("ocm call refused", "method", method, "code", status.Code(err).String(), "err", status.Convert(err).Message(), "remote", remote)
}

func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod, req); err != nil {
		s.refused(ctx, info.FullMethod, err)
		return nil, err
	}
	return handler(ctx, req)
}

// authStream checks a server-streaming call on its request, the first (and
// only) message the handler receives, before the handler sees it.
func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, svcPrefix) {
		return handler(srv, ss)
	}
	return handler(srv, &authedStream{ServerStream: ss, s: s, method: info.FullMethod})
}

type authedStream struct {
	grpc.ServerStream
	s      *Server
	method string
}

func (a *authedStream) RecvMsg(m any) error {
	if err := a.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := a.s.authorize(a.Context(), a.method, m); err != nil {
		a.s.refused(a.Context(), a.method, err)
		return err
	}
	return nil
}
