package server

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"

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
	// These are the tokens at start; Server.SetTokens replaces them.
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
	tokens := *s.tokens.Load()
	found := -1
	for i, t := range tokens {
		if t.Token.Matches(tok) && found < 0 {
			found = i
		}
	}
	if found < 0 {
		return authn.Identity{}, false, status.Error(codes.Unauthenticated, "bearer token not recognized")
	}
	return tokens[found].Identity, true, nil
}

// SetTokens replaces the accepted bearer tokens (a reload of auth.tokens):
// new calls are judged by tokens at once, and every open stream
// (KeepSession, WatchStreams) is judged again as if it started now; one
// that no longer passes (its token was removed, or now grants an identity
// that may not make the call) is ended with the refusal's code,
// UNAUTHENTICATED or PERMISSION_DENIED. A node whose session is cut so
// reopens it at once with the token it holds now, so a rotation that
// keeps the nodes' current token costs nothing; one whose token was
// revoked is refused and loses its lease after the session grace.
// Streams of callers identified by a client certificate pass as before.
//
// It refuses (and changes nothing) a list that would turn authentication
// on or off, which the interceptors installed at start decide: a server
// started with no authentication cannot start checking, and one that
// relies on tokens alone cannot be left with none (every node would be
// locked out). It returns how many streams it ended.
func (s *Server) SetTokens(tokens []TokenIdentity) (ended int, err error) {
	switch {
	case !s.auth.On() && len(tokens) > 0:
		return 0, errors.New("authentication was off at start (neither grpc.tls.clientCAFile nor auth.tokens): turning it on needs a restart")
	case s.auth.On() && !s.auth.MTLS && len(tokens) == 0:
		return 0, errors.New("an empty list would leave no way to authenticate (no grpc.tls.clientCAFile) and lock every node out: turning authentication off needs a restart")
	}
	tokens = slices.Clone(tokens)
	// Stored before the open streams are listed: a stream that registers
	// after the listing authorizes after this store (streams register
	// before they authorize), so it sees the new tokens.
	s.tokens.Store(&tokens)
	s.streamsMu.Lock()
	open := make([]*authedStream, 0, len(s.streams))
	for a := range s.streams {
		open = append(open, a)
	}
	s.streamsMu.Unlock()
	for _, a := range open {
		req := a.request()
		if req == nil {
			continue // not authorized yet: RecvMsg judges it again if it used the old tokens
		}
		if err := s.authorize(a.parent, a.method, req); err != nil {
			s.refused(a.parent, a.method, err)
			a.cancel(&revoked{err})
			ended++
		}
	}
	return ended, nil
}

// revoked is the cause of a stream's context when SetTokens ended it.
type revoked struct{ err error }

func (r *revoked) Error() string { return "credentials no longer accepted: " + r.err.Error() }

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
// only) message the handler receives, before the handler sees it. The
// stream stays registered while it runs, so that SetTokens can judge it
// again; when SetTokens ends it, the call returns SetTokens' refusal
// whatever the handler returned (it only saw its context end).
func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, svcPrefix) {
		return handler(srv, ss)
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	a := &authedStream{ServerStream: ss, s: s, method: info.FullMethod, parent: ss.Context(), ctx: ctx, cancel: cancel}
	s.streamsMu.Lock()
	s.streams[a] = struct{}{}
	s.streamsMu.Unlock()
	defer func() {
		s.streamsMu.Lock()
		delete(s.streams, a)
		s.streamsMu.Unlock()
		cancel(nil)
	}()
	err := handler(srv, a)
	var r *revoked
	if errors.As(context.Cause(ctx), &r) {
		return r.err
	}
	return err
}

// authedStream is a stream of the OCM service under authStream. Its
// Context ends when the stream ends or SetTokens revokes its credentials.
type authedStream struct {
	grpc.ServerStream
	s      *Server
	method string
	parent context.Context // the stream's own: the caller's metadata and peer
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu  sync.Mutex
	req any // the authorized request; nil until then
}

func (a *authedStream) Context() context.Context { return a.ctx }

func (a *authedStream) request() any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.req
}

func (a *authedStream) RecvMsg(m any) error {
	if err := a.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	for {
		tokens := a.s.tokens.Load()
		if err := a.s.authorize(a.parent, a.method, m); err != nil {
			a.s.refused(a.parent, a.method, err)
			return err
		}
		a.mu.Lock()
		a.req = m
		a.mu.Unlock()
		// SetTokens skips a stream with no request yet: if it replaced the
		// tokens while this one was judged with the old ones, judge again.
		if a.s.tokens.Load() == tokens {
			return nil
		}
	}
}
