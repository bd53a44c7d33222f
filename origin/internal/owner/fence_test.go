package owner

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/livecluster/livecluster/node/ocmclient"
	"github.com/livecluster/livecluster/node/ocmclient/ocmtest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

var key2 = streamkey.Key{Vhost: "default", App: "live", Name: "s2"}

// When the local lease deadline passes without a renewal, every claim is
// let go (its publisher closed with the reason) and new publishes are
// refused; the fenced claim is still released at the OCM with the epoch it
// had (the lease may have been renewed since); a renewal lets publishes in
// again.
func TestFenceOnLeaseDeadline(t *testing.T) {
	f := ocmtest.Start(t)
	var deadline atomic.Int64 // unix nanos
	deadline.Store(time.Now().Add(time.Hour).UnixNano())
	claims := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "claims"}, []string{"result"})
	m := New(Options{
		OCM:           f.Client(t, self, ocmclient.Options{}),
		NodeID:        self,
		Session:       func() (ocmclient.Session, bool) { return ocmclient.Session{NodeID: self, LeaseID: 5}, true },
		LeaseDeadline: func() time.Time { return time.Unix(0, deadline.Load()) },
		Claims:        claims,
	})
	f.OnClaim = func(r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) { return claimed(r, 42) }
	released := make(chan int64, 1)
	f.OnRelease = func(r *ocmv1.ReleaseStreamRequest) (*ocmv1.ReleaseStreamResponse, error) {
		released <- r.GetEpoch()
		return &ocmv1.ReleaseStreamResponse{}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	fenceDone := make(chan struct{})
	go func() { defer close(fenceDone); m.Fence(ctx) }()
	t.Cleanup(func() { cancel(); <-fenceDone })

	lost := make(chan error, 1)
	c, err := m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", func(err error) { lost <- err })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lost:
		t.Fatalf("lost before the deadline: %v", err)
	case <-time.After(300 * time.Millisecond):
	}

	cut := time.Now()
	deadline.Store(cut.UnixNano())
	select {
	case err := <-lost:
		if !strings.Contains(err.Error(), "not renewed in time") {
			t.Fatalf("lost with %q, want the deadline named", err)
		}
		// Seen at the next poll at the latest.
		if d := time.Since(cut); d > fencePoll+100*time.Millisecond {
			t.Fatalf("fenced %v after the deadline", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("claim not lost after the lease deadline passed")
	}
	if c.Epoch() != 0 {
		t.Fatalf("epoch %d after fencing, want 0", c.Epoch())
	}
	if n := testutil.ToFloat64(claims.WithLabelValues(ResultFenced)); n != 1 {
		t.Fatalf("fenced counted %v times", n)
	}
	_, err = m.Acquire(context.Background(), key2, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", nil)
	wantRefused(t, err, ResultFenced, "not renewed in time")
	if m.Fenced() == "" {
		t.Fatal("Fenced() empty while fenced")
	}

	m.Release(context.Background(), c)
	select {
	case e := <-released:
		if e != 42 {
			t.Fatalf("released epoch %d, want 42", e)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the fenced claim was not released at the OCM")
	}

	deadline.Store(time.Now().Add(time.Hour).UnixNano())
	if _, err := m.Acquire(context.Background(), key2, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", nil); err != nil {
		t.Fatalf("publish refused after a renewal: %v", err)
	}
}

// When the OCM says the lease is gone (the session's Done closes), every
// claim is let go at once, whatever the deadline says: another origin may
// own the stream already.
func TestFenceOnSessionLost(t *testing.T) {
	f := ocmtest.Start(t)
	oc := f.Client(t, self, ocmclient.Options{})
	m := New(Options{OCM: oc, NodeID: self, Session: oc.Session,
		LeaseDeadline: func() time.Time { return time.Now().Add(time.Hour) }})
	f.OnClaim = func(r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) { return claimed(r, 7) }
	ctx, cancel := context.WithCancel(context.Background())
	fenceDone := make(chan struct{})
	go func() { defer close(fenceDone); m.Fence(ctx) }()
	t.Cleanup(func() { cancel(); <-fenceDone })
	oc.Start(ctx)
	waitRegistered(t, oc)

	lost := make(chan error, 1)
	if _, err := m.Acquire(context.Background(), key, ocmv1.PublishPath_PUBLISH_PATH_DIRECT, "", func(err error) { lost <- err }); err != nil {
		t.Fatal(err)
	}
	f.Expire() // the next heartbeat gets NOT_FOUND
	select {
	case err := <-lost:
		if !strings.Contains(err.Error(), "was lost") {
			t.Fatalf("lost with %q", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("claim not lost after the OCM lost the session")
	}
}

func waitRegistered(t *testing.T, oc *ocmclient.Client) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !oc.Registered(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("not registered")
		}
	}
}
