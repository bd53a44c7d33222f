package owner

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/livecluster/livecluster/node/ocmclient"
	"github.com/livecluster/livecluster/node/ocmclient/ocmtest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

var key = streamkey.Key{Vhost: "default", App: "live", Name: "s1"}

const self = "origin-1"

// newManager returns a Manager for origin-1 whose OCM is the fake f, with
// a fixed session (lease 5).
func newManager(t *testing.T, f *ocmtest.Server) (*Manager, *prometheus.CounterVec) {
	t.Helper()
	claims := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "claims"}, []string{"result"})
	m := New(Options{
		OCM:     f.Client(t, self, ocmclient.Options{}),
		NodeID:  self,
		Session: func() (ocmclient.Session, bool) { return ocmclient.Session{NodeID: self, LeaseID: 5}, true },
		Timeout: func() time.Duration { return 5 * time.Second },
		Claims:  claims,
	})
	return m, claims
}

func claimed(r *ocmv1.ClaimStreamRequest, epoch int64) (*ocmv1.ClaimStreamResponse, error) {
	return &ocmv1.ClaimStreamResponse{Stream: &ocmv1.Stream{Key: r.GetKey(), OwnerNodeId: r.GetNodeId(), Epoch: epoch}}, nil
}

func wantRefused(t *testing.T, err error, result, msg string) {
	t.Helper()
	var r *Refused
	if !errors.As(err, &r) {
		t.Fatalf("err %v, want a *Refused", err)
	}
	if r.Result != result || !strings.Contains(r.Msg, msg) {
		t.Fatalf("refused %q %q, want %q containing %q", r.Result, r.Msg, result, msg)
	}
}

func TestAcquireOCMUnavailable(t *testing.T) {
	f := ocmtest.Start(t)
	m, claims := newManager(t, f)
	f.OnClaim = func(*ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
		return nil, ocmtest.Status(codes.Unavailable, "", "claim: etcd unavailable")
	}
	_, err := m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", nil)
	wantRefused(t, err, ResultUnavailable, "unreachable")
	if n := testutil.ToFloat64(claims.WithLabelValues(ResultUnavailable)); n != 1 {
		t.Fatalf("ocm_unavailable counted %v times", n)
	}
	if len(m.Active()) != 0 {
		t.Fatal("a refused claim stayed active")
	}
}

// TestAcquireRetriesConcurrentChange: the OCM answers "concurrent change,
// retry" twice; the publish is accepted, not refused.
func TestAcquireRetriesConcurrentChange(t *testing.T) {
	f := ocmtest.Start(t)
	m, claims := newManager(t, f)
	var n atomic.Int32
	f.OnClaim = func(r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
		if n.Add(1) <= 2 {
			return nil, ocmtest.Status(codes.Aborted, ocmv1.ReasonConcurrentChange, "claim: concurrent change, retry")
		}
		return claimed(r, 11)
	}
	c, err := m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", nil)
	if err != nil {
		t.Fatalf("publish refused after a concurrent change: %v", err)
	}
	if c.Epoch() != 11 || testutil.ToFloat64(claims.WithLabelValues(ResultClaimed)) != 1 {
		t.Fatalf("epoch %d, claimed counted %v", c.Epoch(), testutil.ToFloat64(claims.WithLabelValues(ResultClaimed)))
	}
}

func TestAcquireAlreadyOwned(t *testing.T) {
	f := ocmtest.Start(t)
	m, claims := newManager(t, f)
	owner := "origin-9"
	f.OnClaim = func(r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
		return nil, ocmtest.Owned(&ocmv1.Stream{Key: r.GetKey(), OwnerNodeId: owner, Epoch: 33})
	}
	_, err := m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", nil)
	wantRefused(t, err, ResultOwnedElsewhere, "already published on origin origin-9")

	// Owned by this origin already (a lost reply): adopted with its epoch.
	owner = self
	c, err := m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", nil)
	if err != nil || c.Epoch() != 33 {
		t.Fatalf("own stream not adopted: %v, epoch %d", err, c.Epoch())
	}
	if testutil.ToFloat64(claims.WithLabelValues(ResultAdopted)) != 1 {
		t.Fatal("adoption not counted")
	}
}

// TestAcquireDrainingIsNotEveryPrecondition: only the OCM's "node is
// DRAINING" counts as draining; another refusal (not an origin) is an
// error, and a stale epoch never reads as draining.
func TestAcquireDrainingIsNotEveryPrecondition(t *testing.T) {
	f := ocmtest.Start(t)
	m, claims := newManager(t, f)
	f.OnClaim = func(*ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
		return nil, ocmtest.Status(codes.FailedPrecondition, ocmv1.ReasonNodeDraining, "claim: node origin-1 is DRAINING")
	}
	_, err := m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", nil)
	wantRefused(t, err, ResultDraining, "draining")

	f.OnClaim = func(*ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
		return nil, ocmtest.Status(codes.FailedPrecondition, ocmv1.ReasonNotPermitted, "claim: node origin-1 is not an origin")
	}
	_, err = m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", nil)
	wantRefused(t, err, ResultError, "not an origin")
	if d := testutil.ToFloat64(claims.WithLabelValues(ResultDraining)); d != 1 {
		t.Fatalf("draining counted %v times, want 1", d)
	}
}

func TestAcquireSessionLost(t *testing.T) {
	f := ocmtest.Start(t)
	m, _ := newManager(t, f)
	f.OnClaim = func(*ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
		return nil, ocmtest.Status(codes.NotFound, ocmv1.ReasonSessionNotFound, "node session not found")
	}
	_, err := m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", nil)
	wantRefused(t, err, ResultNotRegistered, "session")
}

// TestReleaseStaleEpochGivesUp: a release the OCM answers with a stale
// epoch is not retried (the stream is someone else's), while an
// unreachable OCM is retried until the release goes through.
func TestReleaseStaleEpochGivesUp(t *testing.T) {
	f := ocmtest.Start(t)
	m, _ := newManager(t, f)
	f.OnClaim = func(r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) { return claimed(r, 3) }
	released := make(chan struct{}, 10)
	f.OnRelease = func(*ocmv1.ReleaseStreamRequest) (*ocmv1.ReleaseStreamResponse, error) {
		released <- struct{}{}
		return nil, ocmtest.Status(codes.FailedPrecondition, ocmv1.ReasonStaleEpoch, "stale epoch 3: current epoch is 9")
	}
	c, err := m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Release(context.Background(), c)
	waitReleased(t, c)
	if n := f.Calls("ReleaseStream"); n != 1 {
		t.Fatalf("stale-epoch release called %d times, want 1", n)
	}
	if m.claimOf(key) != nil {
		t.Fatal("a stale claim was kept")
	}

	var n atomic.Int32
	f.OnRelease = func(*ocmv1.ReleaseStreamRequest) (*ocmv1.ReleaseStreamResponse, error) {
		if n.Add(1) <= 2 {
			return nil, ocmtest.Status(codes.Unavailable, "", "etcd unavailable")
		}
		return &ocmv1.ReleaseStreamResponse{}, nil
	}
	c, err = m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Release(context.Background(), c)
	waitReleased(t, c)
	if n.Load() != 3 || m.claimOf(key) != nil {
		t.Fatalf("release with the OCM down then up: %d calls, claim %v", n.Load(), m.claimOf(key))
	}
}

// TestReclaimLostToAnotherOrigin: after a re-registration the stream turns
// out to be owned elsewhere: its publisher is let go (onLost).
func TestReclaimLostToAnotherOrigin(t *testing.T) {
	f := ocmtest.Start(t)
	m, _ := newManager(t, f)
	f.OnClaim = func(r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) { return claimed(r, 3) }
	lost := make(chan error, 1)
	c, err := m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", func(err error) { lost <- err })
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	f.OnClaim = func(r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
		if n.Add(1) == 1 {
			return nil, ocmtest.Status(codes.Unavailable, "", "etcd unavailable") // retried
		}
		return nil, ocmtest.Owned(&ocmv1.Stream{Key: r.GetKey(), OwnerNodeId: "origin-2", Epoch: 50})
	}
	m.Reclaim(context.Background(), ocmclient.Session{NodeID: self, LeaseID: 6})
	select {
	case err := <-lost:
		if !strings.Contains(err.Error(), "origin-2") {
			t.Fatalf("lost: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("publisher not let go")
	}
	if c.Epoch() != 0 || n.Load() != 2 {
		t.Fatalf("epoch %d after loss, %d claims", c.Epoch(), n.Load())
	}
}

// TestWatchTransfersResubscribes: the watch stream breaks; the manager
// watches again and, on the transfer event, lets the publisher go.
func TestWatchTransfersResubscribes(t *testing.T) {
	f := ocmtest.Start(t)
	m, _ := newManager(t, f)
	f.OnClaim = func(r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) { return claimed(r, 3) }
	lost := make(chan error, 1)
	if _, err := m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", func(err error) { lost <- err }); err != nil {
		t.Fatal(err)
	}
	var watches atomic.Int32
	f.OnWatch = func(ctx context.Context, r *ocmv1.WatchStreamsRequest, send func(*ocmv1.WatchStreamsResponse) error) error {
		if len(r.GetKeys()) != 1 || r.GetKeys()[0].KeyString() != key.String() {
			return ocmtest.Status(codes.InvalidArgument, "", "unexpected keys")
		}
		if watches.Add(1) == 1 {
			return ocmtest.Status(codes.Unavailable, "", "OCM replica shutting down; watch again")
		}
		if err := send(&ocmv1.WatchStreamsResponse{Type: ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT,
			Stream: &ocmv1.Stream{Key: ocmv1.NewStreamKey(key), OwnerNodeId: "origin-2", Epoch: 40}}); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.WatchTransfers(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case err := <-lost:
		if !strings.Contains(err.Error(), "origin-2") {
			t.Fatalf("lost: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("transfer not noticed (%d watches)", watches.Load())
	}
	if watches.Load() != 2 {
		t.Fatalf("%d watches, want 2", watches.Load())
	}
}

// claimOf returns the claim held for key (active or releasing), nil if none.
func (m *Manager) claimOf(key streamkey.Key) *Claim {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.claims[key.String()]
}

// waitReleased waits for a release retry loop to finish by itself.
func waitReleased(t *testing.T, c *Claim) {
	t.Helper()
	c.mu.Lock()
	done := c.releaseDone
	c.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the release is still retrying")
	}
}
