package ocmclient_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/livecluster/livecluster/node/ocmclient"
	"github.com/livecluster/livecluster/node/ocmclient/ocmtest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

var key = streamkey.Key{Vhost: "default", App: "live", Name: "s"}

// TestClaimErrorsAreTyped drives Claim through every answer the OCM gives
// and checks each becomes its Go error, whatever the status code shares.
func TestClaimErrorsAreTyped(t *testing.T) {
	f := ocmtest.Start(t)
	c := f.Client(t, "origin-0", ocmclient.Options{})
	s := ocmclient.Session{NodeID: "origin-0", LeaseID: 7}
	cases := []struct {
		name string
		err  error
		want error
		not  []error
	}{
		{"unavailable", ocmtest.Status(codes.Unavailable, "", "etcd unavailable"), ocmclient.ErrUnavailable, nil},
		{"session lost", ocmtest.Status(codes.NotFound, ocmv1.ReasonSessionNotFound, "node session not found"), ocmclient.ErrSessionLost, []error{ocmclient.ErrNotFound}},
		{"session lost, no reason", ocmtest.Status(codes.NotFound, "", "gone"), ocmclient.ErrSessionLost, nil},
		{"draining", ocmtest.Status(codes.FailedPrecondition, ocmv1.ReasonNodeDraining, "node is DRAINING"), ocmclient.ErrDraining, []error{ocmclient.ErrRefused, ocmclient.ErrStaleEpoch}},
		{"not an origin", ocmtest.Status(codes.FailedPrecondition, ocmv1.ReasonNotPermitted, "node is not an origin"), ocmclient.ErrRefused, []error{ocmclient.ErrDraining}},
		{"stale epoch", ocmtest.Status(codes.FailedPrecondition, ocmv1.ReasonStaleEpoch, "stale epoch"), ocmclient.ErrStaleEpoch, []error{ocmclient.ErrDraining}},
		{"no credentials", ocmtest.Status(codes.Unauthenticated, "", "ClaimStream needs credentials"), ocmclient.ErrUnauthenticated, []error{ocmclient.ErrPermissionDenied}},
		{"no credentials is refused", ocmtest.Status(codes.Unauthenticated, "", "ClaimStream needs credentials"), ocmclient.ErrRefused, nil},
		{"another node's id", ocmtest.Status(codes.PermissionDenied, "", "origin:b may not claim a stream for origin a"), ocmclient.ErrPermissionDenied, []error{ocmclient.ErrUnauthenticated, ocmclient.ErrSessionLost}},
		{"bad key", ocmtest.Status(codes.InvalidArgument, "", "bad key"), ocmclient.ErrInvalidArgument, nil},
		{"internal", ocmtest.Status(codes.Internal, "", "boom"), ocmclient.ErrInternal, []error{ocmclient.ErrUnavailable}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.OnClaim = func(*ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) { return nil, tc.err }
			_, err := c.Claim(context.Background(), s, ocmclient.ClaimRequest{Key: key})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want errors.Is %v", err, tc.want)
			}
			for _, n := range tc.not {
				if errors.Is(err, n) {
					t.Errorf("err %v also matches %v", err, n)
				}
			}
		})
	}

	f.OnClaim = func(*ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
		return nil, ocmtest.Owned(&ocmv1.Stream{Key: ocmv1.NewStreamKey(key), OwnerNodeId: "origin-9", Epoch: 42})
	}
	_, err := c.Claim(context.Background(), s, ocmclient.ClaimRequest{Key: key})
	var owned *ocmclient.AlreadyOwnedError
	if !errors.As(err, &owned) || !errors.Is(err, ocmclient.ErrAlreadyOwned) || owned.Owner != "origin-9" || owned.Epoch != 42 {
		t.Fatalf("owned: %v (%+v)", err, owned)
	}
}

// TestClaimRetriesConcurrentChange: ABORTED ("concurrent change, retry")
// is retried by the client itself, and succeeds once the OCM does; an OCM
// that never stops conflicting ends in ErrConflict after bounded retries.
func TestClaimRetriesConcurrentChange(t *testing.T) {
	f := ocmtest.Start(t)
	c := f.Client(t, "origin-0", ocmclient.Options{})
	s := ocmclient.Session{NodeID: "origin-0", LeaseID: 7}
	var n atomic.Int32
	f.OnClaim = func(r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
		if n.Add(1) <= 2 {
			return nil, ocmtest.Status(codes.Aborted, ocmv1.ReasonConcurrentChange, "claim: concurrent change, retry")
		}
		return &ocmv1.ClaimStreamResponse{Stream: &ocmv1.Stream{Key: r.GetKey(), OwnerNodeId: r.GetNodeId(), Epoch: 9}}, nil
	}
	st, err := c.Claim(context.Background(), s, ocmclient.ClaimRequest{Key: key})
	if err != nil || st.GetEpoch() != 9 || n.Load() != 3 {
		t.Fatalf("claim after two conflicts: %v %v, %d calls", st, err, n.Load())
	}

	n.Store(0)
	f.OnClaim = func(*ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
		n.Add(1)
		return nil, ocmtest.Status(codes.Aborted, ocmv1.ReasonConcurrentChange, "claim: concurrent change, retry")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Claim(ctx, s, ocmclient.ClaimRequest{Key: key}); !errors.Is(err, ocmclient.ErrConflict) {
		t.Fatalf("endless conflict: %v, want ErrConflict", err)
	}
	if got := n.Load(); got < 2 || got > 20 {
		t.Fatalf("endless conflict: %d calls, want a few bounded retries", got)
	}
}

// TestSessionDoneWhenLeaseLost: a heartbeat that finds the lease gone
// closes the session's Done, and the client registers a new session whose
// Done is open.
func TestSessionDoneWhenLeaseLost(t *testing.T) {
	f := ocmtest.Start(t)
	rereg := make(chan ocmclient.Session, 1)
	c := f.Client(t, "origin-0", ocmclient.Options{
		OnReregistered: func(_ context.Context, s ocmclient.Session) { rereg <- s },
	})
	c.Start(context.Background())
	deadline := time.After(10 * time.Second)
	var s1 ocmclient.Session
	for ok := false; !ok; {
		if s1, ok = c.Session(); !ok {
			select {
			case <-deadline:
				t.Fatal("never registered")
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	select {
	case <-s1.Done():
		t.Fatal("Done closed on a live session")
	default:
	}
	f.Expire()
	select {
	case <-s1.Done():
	case <-deadline:
		t.Fatal("Done not closed after the lease was lost")
	}
	var s2 ocmclient.Session
	select {
	case s2 = <-rereg:
	case <-deadline:
		t.Fatal("no re-registration")
	}
	if s2.LeaseID == s1.LeaseID || s2.LeaseID != f.Lease("origin-0") {
		t.Fatalf("new session %+v, old %+v, OCM lease %d", s2, s1, f.Lease("origin-0"))
	}
	select {
	case <-s2.Done():
		t.Fatal("the new session is born done")
	default:
	}
	if err := c.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s2.Done():
	default:
		t.Fatal("Deregister left the session's Done open")
	}
}
