// Package ocmtest is the fake OCM of unit tests: a real gRPC server on a
// loopback :0 listener implementing the generated OCMService, whose stream
// calls answer with functions the test sets, so a test drives the code
// under test (through the real ocmclient) into each failure path. The real
// OCM, with etcd, is tested in the ocm module; this is only the edge of a
// unit test.
package ocmtest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// Server is the fake OCM. Register and Heartbeat keep simple sessions
// (Expire drops them, as a lease expiry would); the other calls answer with
// the On* functions (nil: UNIMPLEMENTED).
type Server struct {
	ocmv1.UnimplementedOCMServiceServer
	// Addr is the "127.0.0.1:port" the server listens on.
	Addr string

	OnClaim    func(*ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error)
	OnRelease  func(*ocmv1.ReleaseStreamRequest) (*ocmv1.ReleaseStreamResponse, error)
	OnTransfer func(*ocmv1.TransferStreamRequest) (*ocmv1.TransferStreamResponse, error)
	OnLookup   func(*ocmv1.LookupStreamRequest) (*ocmv1.LookupStreamResponse, error)
	OnAssign   func(*ocmv1.AssignOriginRequest) (*ocmv1.AssignOriginResponse, error)
	// OnWatch serves one WatchStreams call; send delivers an event.
	OnWatch func(ctx context.Context, r *ocmv1.WatchStreamsRequest, send func(*ocmv1.WatchStreamsResponse) error) error

	mu        sync.Mutex
	calls     map[string]int
	nextLease int64
	leases    map[string]int64
	// HeartbeatMs is the interval Register tells clients (default 20).
	HeartbeatMs int64
}

// Start serves a fake OCM until the test ends. Set the On* fields before
// the first call that uses them.
func Start(t testing.TB) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: ln.Addr().String(), calls: map[string]int{}, nextLease: 100, leases: map[string]int64{}, HeartbeatMs: 20}
	g := grpc.NewServer()
	ocmv1.RegisterOCMServiceServer(g, s)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return s
}

// Client returns an ocmclient for node id (an origin) dialing s, with
// short backoffs; it is closed when the test ends. It is not started.
func (s *Server) Client(t testing.TB, id string, opts ocmclient.Options) *ocmclient.Client {
	t.Helper()
	opts.Address = s.Addr
	if opts.Node == nil {
		opts.Node = &ocmv1.Node{Id: id, Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN,
			Addresses: &ocmv1.NodeAddresses{Rtmp: id + ":1935", Http: id + ":8080"}}
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = 5 * time.Millisecond
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 50 * time.Millisecond
	}
	c, err := ocmclient.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Calls returns how many times method ("ClaimStream", ...) was called.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

func (s *Server) count(method string) {
	s.mu.Lock()
	s.calls[method]++
	s.mu.Unlock()
}

// Expire drops every session, as an etcd lease expiry would: the next
// heartbeat of each node gets NOT_FOUND.
func (s *Server) Expire() {
	s.mu.Lock()
	s.leases = map[string]int64{}
	s.mu.Unlock()
}

// Lease returns node id's live lease (0: none).
func (s *Server) Lease(id string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leases[id]
}

// Status builds the error the real OCM sends: code, message and the
// ErrorInfo reason (empty: none).
func Status(code codes.Code, reason, msg string) error {
	st := status.New(code, msg)
	if reason != "" {
		if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ocmv1.ErrorDomain}); err == nil {
			st = d
		}
	}
	return st.Err()
}

// Owned builds the ALREADY_EXISTS error naming the current owner, as the
// real OCM sends it.
func Owned(cur *ocmv1.Stream) error {
	st := status.New(codes.AlreadyExists, "stream is owned by node "+cur.GetOwnerNodeId())
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ocmv1.ReasonStreamOwned, Domain: ocmv1.ErrorDomain}, cur); err == nil {
		st = d
	}
	return st.Err()
}

// Register implements OCMService.
func (s *Server) Register(_ context.Context, r *ocmv1.RegisterRequest) (*ocmv1.RegisterResponse, error) {
	s.count("Register")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextLease++
	s.leases[r.GetNode().GetId()] = s.nextLease
	return &ocmv1.RegisterResponse{Node: r.GetNode(), LeaseId: s.nextLease, LeaseTtlSeconds: 1, HeartbeatIntervalMs: s.HeartbeatMs}, nil
}

// Heartbeat implements OCMService.
func (s *Server) Heartbeat(_ context.Context, r *ocmv1.HeartbeatRequest) (*ocmv1.HeartbeatResponse, error) {
	s.count("Heartbeat")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leases[r.GetNodeId()] != r.GetLeaseId() {
		return nil, Status(codes.NotFound, ocmv1.ReasonSessionNotFound, "node session not found")
	}
	return &ocmv1.HeartbeatResponse{LeaseTtlSeconds: 1, State: ocmv1.NodeState_NODE_STATE_READY}, nil
}

// Drain implements OCMService.
func (s *Server) Drain(_ context.Context, r *ocmv1.DrainRequest) (*ocmv1.DrainResponse, error) {
	s.count("Drain")
	return &ocmv1.DrainResponse{}, nil
}

// Deregister implements OCMService.
func (s *Server) Deregister(_ context.Context, r *ocmv1.DeregisterRequest) (*ocmv1.DeregisterResponse, error) {
	s.count("Deregister")
	s.mu.Lock()
	delete(s.leases, r.GetNodeId())
	s.mu.Unlock()
	return &ocmv1.DeregisterResponse{}, nil
}

func unimplemented(m string) error {
	return status.Error(codes.Unimplemented, m+" not set in the fake")
}

// ClaimStream implements OCMService.
func (s *Server) ClaimStream(_ context.Context, r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
	s.count("ClaimStream")
	if s.OnClaim == nil {
		return nil, unimplemented("OnClaim")
	}
	return s.OnClaim(r)
}

// ReleaseStream implements OCMService.
func (s *Server) ReleaseStream(_ context.Context, r *ocmv1.ReleaseStreamRequest) (*ocmv1.ReleaseStreamResponse, error) {
	s.count("ReleaseStream")
	if s.OnRelease == nil {
		return nil, unimplemented("OnRelease")
	}
	return s.OnRelease(r)
}

// TransferStream implements OCMService.
func (s *Server) TransferStream(_ context.Context, r *ocmv1.TransferStreamRequest) (*ocmv1.TransferStreamResponse, error) {
	s.count("TransferStream")
	if s.OnTransfer == nil {
		return nil, unimplemented("OnTransfer")
	}
	return s.OnTransfer(r)
}

// LookupStream implements OCMService.
func (s *Server) LookupStream(_ context.Context, r *ocmv1.LookupStreamRequest) (*ocmv1.LookupStreamResponse, error) {
	s.count("LookupStream")
	if s.OnLookup == nil {
		return nil, unimplemented("OnLookup")
	}
	return s.OnLookup(r)
}

// AssignOrigin implements OCMService.
func (s *Server) AssignOrigin(_ context.Context, r *ocmv1.AssignOriginRequest) (*ocmv1.AssignOriginResponse, error) {
	s.count("AssignOrigin")
	if s.OnAssign == nil {
		return nil, unimplemented("OnAssign")
	}
	return s.OnAssign(r)
}

// WatchStreams implements OCMService.
func (s *Server) WatchStreams(r *ocmv1.WatchStreamsRequest, srv grpc.ServerStreamingServer[ocmv1.WatchStreamsResponse]) error {
	s.count("WatchStreams")
	if s.OnWatch == nil {
		return unimplemented("OnWatch")
	}
	return s.OnWatch(srv.Context(), r, srv.Send)
}

// Blackhole returns the address of a listener that accepts connections and
// never answers (an OCM behind a firewall that drops packets, not a closed
// port): every call waits for its deadline. It closes when the test ends.
func Blackhole(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}
