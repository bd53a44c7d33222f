package server

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// KeepSession implements OCMService: see ocm.proto and docs/ocm.md
// ("Crash detection"). The stream is recorded in etcd (a new session
// generation); when it breaks without this replica shutting down, the
// replica waits the session grace and then revokes the node's lease unless
// the node opened a new stream meanwhile (on any replica) or deregistered.
func (s *Server) KeepSession(r *ocmv1.KeepSessionRequest, srv grpc.ServerStreamingServer[ocmv1.KeepSessionResponse]) error {
	select {
	case <-s.stopped:
		return status.Error(codes.Unavailable, "OCM replica shutting down; open KeepSession on another replica")
	default:
	}
	ctx := srv.Context()
	id, lease := r.GetNodeId(), r.GetLeaseId()
	gen, err := s.st.KeepSession(ctx, id, lease, s.replica)
	if err != nil {
		return err
	}
	if s.m != nil {
		s.m.sessions.Inc()
		defer s.m.sessions.Dec()
	}
	resp := &ocmv1.KeepSessionResponse{SessionGraceMs: s.grace.Milliseconds(), Generation: gen}
	if err := srv.Send(resp); err != nil {
		s.sessionBroke(id, lease, gen)
		return err
	}
	t := time.NewTicker(s.ping)
	defer t.Stop()
	for {
		select {
		case <-s.stopped:
			// Not a node failure: the node reopens the stream elsewhere
			// within the grace, and nobody here revokes anything.
			return status.Error(codes.Unavailable, "OCM replica shutting down; open KeepSession on another replica")
		case <-ctx.Done():
			s.sessionBroke(id, lease, gen)
			return status.FromContextError(ctx.Err()).Err()
		case <-t.C:
			if err := srv.Send(resp); err != nil {
				s.sessionBroke(id, lease, gen)
				return err
			}
		}
	}
}

// sessionBroke starts the grace for a session whose stream broke: after
// s.grace it revokes the lease if the session is still at generation gen.
// The goroutine is owned by the Server: Shutdown cancels it (a replica going
// away revokes nothing) and waits for it.
func (s *Server) sessionBroke(id string, lease, gen int64) {
	s.graceMu.Lock()
	defer s.graceMu.Unlock()
	select {
	case <-s.stopped:
		return
	default:
	}
	s.graces.Add(1)
	go func() {
		defer s.graces.Done()
		t := time.NewTimer(s.grace)
		defer t.Stop()
		select {
		case <-s.stopped:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.stopped:
				cancel()
			case <-ctx.Done():
			}
		}()
		revoked, err := s.st.RevokeIfIdle(ctx, id, lease, gen)
		outcome := "returned"
		switch {
		case err != nil:
			outcome = "error"
			s.log.Warn("session stream broke; revoking the idle lease failed (it keeps its TTL)",
				"node", id, "lease_id", lease, "err", err)
		case revoked:
			outcome = "revoked"
			s.log.Info("session stream broke and the node did not come back within the grace; lease revoked",
				"node", id, "lease_id", lease, "grace", s.grace.String())
		}
		if s.m != nil {
			s.m.breaks.WithLabelValues(outcome).Inc()
		}
	}()
}
