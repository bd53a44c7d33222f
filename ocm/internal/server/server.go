// Package server implements livecluster.ocm.v1.OCMService: reads (lookups,
// placement, listings, watches) are answered from the replica's cache, writes
// go to etcd through the store. It also serves the read-only JSON API.
package server

import (
	"context"
	"encoding/base64"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/ocm/internal/cache"
	"github.com/livecluster/livecluster/ocm/internal/placement"
	"github.com/livecluster/livecluster/ocm/internal/store"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

// Options configure a Server.
type Options struct {
	Store   *store.Store
	Cache   *cache.Cache
	Metrics *Metrics
	Placer  *placement.Placer // default: a Placer with DefaultScales
	Logger  *slog.Logger
	// WatchBuffer bounds a WatchStreams subscriber's queue, which holds one
	// waiting change per stream (a later one replaces it): a subscriber with
	// more streams than this waiting is disconnected with RESOURCE_EXHAUSTED.
	// Only a subscriber to more streams than this can reach it. Default 4096.
	WatchBuffer int
	// ReadYourWritesWait bounds how long a write waits for this replica's
	// cache to reflect it, so that a caller's next read on the same replica
	// sees its own write. Default 2s; the write has succeeded either way.
	ReadYourWritesWait time.Duration
	// SessionGrace is how long a node whose KeepSession stream broke (without
	// a Deregister) has to open a new one, on any replica, before this
	// replica revokes its lease. It must exceed the nodes' reconnect delay.
	// Default DefaultSessionGrace.
	SessionGrace time.Duration
	// SessionPing is the interval of the messages sent on an idle
	// KeepSession stream; default 3s.
	SessionPing time.Duration
	// Auth authenticates and authorizes calls (auth.go); nil: open.
	Auth *Auth
	// Replica names this replica in the session markers it writes (for an
	// operator reading etcd); default "ocm".
	Replica string
}

// DefaultSessionGrace is the default Options.SessionGrace.
const DefaultSessionGrace = 1500 * time.Millisecond

// Server is the OCMService implementation.
type Server struct {
	ocmv1.UnimplementedOCMServiceServer
	st      *store.Store
	c       *cache.Cache
	m       *Metrics
	placer  *placement.Placer
	log     *slog.Logger
	buf     int
	ryw     time.Duration
	grace   time.Duration
	ping    time.Duration
	replica string
	auth    *Auth
	// tokens are the accepted bearer tokens: auth.Tokens at start, then
	// SetTokens'. Never nil.
	tokens atomic.Pointer[[]TokenIdentity]
	// streams are the open streams under authStream, for SetTokens.
	streamsMu sync.Mutex
	streams   map[*authedStream]struct{}
	stopped   chan struct{}
	stop      sync.Once
	// graceMu orders sessionBroke's check of stopped with Shutdown closing
	// it, so no grace goroutine starts after Shutdown waits for graces.
	graceMu sync.Mutex
	graces  sync.WaitGroup
}

// New returns a Server.
func New(o Options) *Server {
	if o.Placer == nil {
		o.Placer = &placement.Placer{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.WatchBuffer <= 0 {
		o.WatchBuffer = 4096
	}
	if o.ReadYourWritesWait <= 0 {
		o.ReadYourWritesWait = 2 * time.Second
	}
	if o.SessionGrace <= 0 {
		o.SessionGrace = DefaultSessionGrace
	}
	if o.SessionPing <= 0 {
		o.SessionPing = 3 * time.Second
	}
	if o.Replica == "" {
		o.Replica = "ocm"
	}
	s := &Server{st: o.Store, c: o.Cache, m: o.Metrics, placer: o.Placer, log: o.Logger,
		buf: o.WatchBuffer, ryw: o.ReadYourWritesWait, grace: o.SessionGrace, ping: o.SessionPing,
		replica: o.Replica, auth: o.Auth, streams: map[*authedStream]struct{}{}, stopped: make(chan struct{})}
	var tokens []TokenIdentity
	if o.Auth != nil {
		tokens = slices.Clone(o.Auth.Tokens)
	}
	s.tokens.Store(&tokens)
	return s
}

// SessionGrace is the grace a node has to reopen a broken KeepSession.
func (s *Server) SessionGrace() time.Duration { return s.grace }

// Shutdown ends every open WatchStreams and KeepSession with UNAVAILABLE so
// that a graceful stop of the gRPC server does not wait for them forever,
// and cancels every pending session grace without revoking anything (the
// nodes reopen their streams on another replica). It waits for the grace
// goroutines (a revocation already under way finishes or is cancelled).
func (s *Server) Shutdown() {
	s.stop.Do(func() {
		s.graceMu.Lock()
		close(s.stopped)
		s.graceMu.Unlock()
		s.graces.Wait()
	})
}

// NewGRPCServer returns a gRPC server with the OCM service, the metrics
// interceptors, the authorization interceptors when Options.Auth is on
// (inside the metrics ones, so a refusal is counted under its code),
// reflection and grpc.health.v1 (initially NOT_SERVING; the caller flips it
// when ready). Health and reflection need no credentials.
func NewGRPCServer(s *Server, opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	if s.m != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(s.m.UnaryInterceptor), grpc.ChainStreamInterceptor(s.m.StreamInterceptor))
	}
	if s.auth.On() {
		opts = append(opts, grpc.ChainUnaryInterceptor(s.authUnary), grpc.ChainStreamInterceptor(s.authStream))
	}
	g := grpc.NewServer(opts...)
	ocmv1.RegisterOCMServiceServer(g, s)
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	h.SetServingStatus(ocmv1.OCMService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(g, h)
	reflection.Register(g)
	return g, h
}

// waitOwn lets this replica's cache catch up with a write it just made.
func (s *Server) waitOwn(ctx context.Context, rev int64) {
	if rev <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.ryw)
	defer cancel()
	_ = s.c.WaitRevision(ctx, rev)
}

// Register implements OCMService.
func (s *Server) Register(ctx context.Context, r *ocmv1.RegisterRequest) (*ocmv1.RegisterResponse, error) {
	n, rev, err := s.st.Register(ctx, r.GetNode())
	if err != nil {
		return nil, err
	}
	s.waitOwn(ctx, rev)
	ttl := s.st.LeaseTTL()
	return &ocmv1.RegisterResponse{Node: n, LeaseId: n.LeaseId, LeaseTtlSeconds: ttl, HeartbeatIntervalMs: ttl * 1000 / 3}, nil
}

// Heartbeat implements OCMService.
func (s *Server) Heartbeat(ctx context.Context, r *ocmv1.HeartbeatRequest) (*ocmv1.HeartbeatResponse, error) {
	known, _ := s.c.Node(r.GetNodeId())
	ttl, state, err := s.st.Heartbeat(ctx, r.GetNodeId(), r.GetLeaseId(), r.GetLoad(), known)
	if err != nil {
		return nil, err
	}
	return &ocmv1.HeartbeatResponse{LeaseTtlSeconds: ttl, State: state}, nil
}

// Drain implements OCMService.
func (s *Server) Drain(ctx context.Context, r *ocmv1.DrainRequest) (*ocmv1.DrainResponse, error) {
	n, rev, err := s.st.Drain(ctx, r.GetNodeId(), r.GetLeaseId())
	if err != nil {
		return nil, err
	}
	s.waitOwn(ctx, rev)
	return &ocmv1.DrainResponse{Node: n}, nil
}

// Deregister implements OCMService.
func (s *Server) Deregister(ctx context.Context, r *ocmv1.DeregisterRequest) (*ocmv1.DeregisterResponse, error) {
	rev, err := s.st.Deregister(ctx, r.GetNodeId(), r.GetLeaseId())
	if err != nil {
		return nil, err
	}
	s.waitOwn(ctx, rev)
	return &ocmv1.DeregisterResponse{}, nil
}

// ClaimStream implements OCMService.
func (s *Server) ClaimStream(ctx context.Context, r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
	k, err := store.KeyArg(r.GetKey())
	if err != nil {
		return nil, err
	}
	if r.GetPublishPath() == ocmv1.PublishPath_PUBLISH_PATH_FORWARDED && r.GetForwardedBy() == "" {
		return nil, status.Error(codes.InvalidArgument, "forwarded_by is required for a FORWARDED publish")
	}
	// Edges never own streams. The cache may not know a node registered a
	// moment ago on another replica; the transaction still checks its session.
	if n, ok := s.c.Node(r.GetNodeId()); ok && n.LeaseId == r.GetLeaseId() && n.Role != ocmv1.NodeRole_NODE_ROLE_ORIGIN {
		return nil, store.Reasoned(codes.FailedPrecondition, ocmv1.ReasonNotPermitted, "claim %s: node %s is not an origin", k, n.Id)
	}
	st, err := s.st.Claim(ctx, store.ClaimRequest{NodeID: r.GetNodeId(), Lease: r.GetLeaseId(), Key: k,
		Path: r.GetPublishPath(), ForwardedBy: r.GetForwardedBy()})
	if err != nil {
		return nil, err
	}
	s.waitOwn(ctx, st.Epoch)
	return &ocmv1.ClaimStreamResponse{Stream: st}, nil
}

// ReleaseStream implements OCMService.
func (s *Server) ReleaseStream(ctx context.Context, r *ocmv1.ReleaseStreamRequest) (*ocmv1.ReleaseStreamResponse, error) {
	k, err := store.KeyArg(r.GetKey())
	if err != nil {
		return nil, err
	}
	rev, err := s.st.Release(ctx, r.GetNodeId(), r.GetLeaseId(), k, r.GetEpoch())
	if err != nil {
		return nil, err
	}
	s.waitOwn(ctx, rev)
	return &ocmv1.ReleaseStreamResponse{}, nil
}

// TransferStream implements OCMService.
func (s *Server) TransferStream(ctx context.Context, r *ocmv1.TransferStreamRequest) (*ocmv1.TransferStreamResponse, error) {
	k, err := store.KeyArg(r.GetKey())
	if err != nil {
		return nil, err
	}
	if r.GetPublishPath() == ocmv1.PublishPath_PUBLISH_PATH_FORWARDED && r.GetForwardedBy() == "" {
		return nil, status.Error(codes.InvalidArgument, "forwarded_by is required for a FORWARDED publish")
	}
	st, err := s.st.Transfer(ctx, store.TransferRequest{NodeID: r.GetNodeId(), Lease: r.GetLeaseId(), Key: k,
		Epoch: r.GetEpoch(), ToNodeID: r.GetToNodeId(), Path: r.GetPublishPath(), ForwardedBy: r.GetForwardedBy()})
	if err != nil {
		return nil, err
	}
	s.waitOwn(ctx, st.Epoch)
	return &ocmv1.TransferStreamResponse{Stream: st}, nil
}

// LookupStream implements OCMService.
func (s *Server) LookupStream(_ context.Context, r *ocmv1.LookupStreamRequest) (*ocmv1.LookupStreamResponse, error) {
	k, err := store.KeyArg(r.GetKey())
	if err != nil {
		return nil, err
	}
	// The response and the stream message in it are one allocation; the
	// owner's node message is the cache's, shared read-only, not a copy.
	resp := &lookupResponse{}
	st, owner, ok := s.c.StreamInto(k, &resp.st)
	if !ok {
		return nil, store.Reasoned(codes.NotFound, ocmv1.ReasonStreamNotFound, "stream %s is not owned by anyone", k)
	}
	resp.r.Stream, resp.r.Owner = st, owner
	return &resp.r, nil
}

type lookupResponse struct {
	r  ocmv1.LookupStreamResponse
	st cache.StreamMsg
}

// AssignOrigin implements OCMService. An owned stream stays with a READY,
// non-excluded owner; a DRAINING or excluded owner's stream is placed on
// another origin, and the response keeps the owner's record in stream so the
// caller knows a take-over is due.
func (s *Server) AssignOrigin(_ context.Context, r *ocmv1.AssignOriginRequest) (*ocmv1.AssignOriginResponse, error) {
	k, err := store.KeyArg(r.GetKey())
	if err != nil {
		return nil, err
	}
	req := placement.Request{Zone: r.GetZone(), Exclude: r.GetExcludeNodeIds()}
	if st, owner, ok := s.c.StreamOf(k); ok {
		if owner == nil {
			return nil, status.Errorf(codes.Unavailable, "stream %s is owned by %s, whose node record is not known yet; retry", k, st.OwnerNodeId)
		}
		n, _, err := s.placer.Assign(owner, s.c.Origins(), req)
		if err != nil {
			return nil, store.Reasoned(status.Code(err), ocmv1.ReasonNoOrigin, "assign %s (owned by %s, %s): %s",
				k, owner.Id, ownerWhy(owner, req.Exclude), status.Convert(err).Message())
		}
		return &ocmv1.AssignOriginResponse{Origin: n, Stream: st}, nil
	}
	n, err := s.placer.Choose(s.c.Origins(), req)
	if err != nil {
		return nil, err
	}
	return &ocmv1.AssignOriginResponse{Origin: n}, nil
}

// ownerWhy says why an owner is not kept, for error messages.
func ownerWhy(owner *ocmv1.Node, exclude []string) string {
	if slices.Contains(exclude, owner.Id) {
		return "excluded"
	}
	return strings.ToLower(strings.TrimPrefix(owner.State.String(), "NODE_STATE_"))
}

// WatchStreams implements OCMService.
func (s *Server) WatchStreams(r *ocmv1.WatchStreamsRequest, srv grpc.ServerStreamingServer[ocmv1.WatchStreamsResponse]) error {
	keys := make([]string, 0, len(r.GetKeys()))
	for _, pk := range r.GetKeys() {
		k, err := store.KeyArg(pk)
		if err != nil {
			return err
		}
		keys = append(keys, k.String())
	}
	sub, initial, rev := s.c.Subscribe(keys, r.GetInitialState(), s.buf)
	defer sub.Close()
	send := func(ev cache.Event) error {
		return srv.Send(&ocmv1.WatchStreamsResponse{Type: ev.Type, Stream: ev.Stream, Owner: ev.Owner, Revision: ev.Revision})
	}
	if r.GetInitialState() {
		for _, ev := range initial {
			if err := send(ev); err != nil {
				return err
			}
		}
		if err := srv.Send(&ocmv1.WatchStreamsResponse{Type: ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED, Revision: rev}); err != nil {
			return err
		}
	}
	ctx := srv.Context()
	var batch []cache.Event
	for {
		select {
		case <-sub.Ready():
			// Everything waiting, one entry per stream: while this loop
			// sends, later changes of a stream replace its waiting one.
			batch = sub.Take(batch[:0])
			for i, ev := range batch {
				batch[i] = cache.Event{} // keep no record alive until the next batch
				if err := send(ev); err != nil {
					return err
				}
			}
		case <-sub.Done():
			if s.m != nil {
				s.m.dropped.Inc()
			}
			return status.Errorf(codes.ResourceExhausted, "%v; watch again with initial_state to resynchronize", sub.Err())
		case <-s.stopped:
			return status.Error(codes.Unavailable, "OCM replica shutting down; watch again")
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// ListNodes implements OCMService.
func (s *Server) ListNodes(_ context.Context, r *ocmv1.ListNodesRequest) (*ocmv1.ListNodesResponse, error) {
	role, state := r.GetRole(), r.GetState()
	nodes := s.c.Nodes(func(n *ocmv1.Node) bool {
		return (role == ocmv1.NodeRole_NODE_ROLE_UNSPECIFIED || n.Role == role) &&
			(state == ocmv1.NodeState_NODE_STATE_UNSPECIFIED || n.State == state)
	})
	return &ocmv1.ListNodesResponse{Nodes: nodes}, nil
}

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// ListStreams implements OCMService. The page token is the last key of the
// previous page (base64url), so pages stay consistent under churn: a stream
// claimed or released between pages is either seen once or not at all.
func (s *Server) ListStreams(_ context.Context, r *ocmv1.ListStreamsRequest) (*ocmv1.ListStreamsResponse, error) {
	size := int(r.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Errorf(codes.InvalidArgument, "page_size %d is negative", size)
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	after := ""
	if tok := r.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "page_token %q is not valid", tok)
		}
		if _, err := streamkey.Parse(string(b)); err != nil || strings.Count(string(b), "/") != 2 {
			return nil, status.Errorf(codes.InvalidArgument, "page_token %q is not valid", tok)
		}
		after = string(b)
	}
	page, next, total := s.c.List(after, size, cache.Filter{Owner: r.GetOwnerNodeId(), App: r.GetApp(), Vhost: r.GetVhost()})
	resp := &ocmv1.ListStreamsResponse{Streams: page, TotalSize: int32(total)}
	if next != "" {
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(next))
	}
	return resp, nil
}
