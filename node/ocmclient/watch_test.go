package ocmclient_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/livecluster/livecluster/node/backoff"
	"github.com/livecluster/livecluster/node/ocmclient"
	"github.com/livecluster/livecluster/node/ocmclient/ocmtest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// TestWatchResubscribesAndResetsBackoff: a watch that keeps failing backs
// off further each time; once a stream gets as far as SYNCED, the next
// failure starts the backoff over.
func TestWatchResubscribesAndResetsBackoff(t *testing.T) {
	f := ocmtest.Start(t)
	const minB, maxB = 10 * time.Millisecond, time.Second
	c := f.Client(t, "edge-1", ocmclient.Options{MinBackoff: minB, MaxBackoff: maxB})
	var mu sync.Mutex
	var delays []time.Duration
	ocmclient.SetSleep(c, func(ctx context.Context, d time.Duration) bool {
		mu.Lock()
		delays = append(delays, d)
		mu.Unlock()
		return backoff.Sleep(ctx, time.Millisecond) // do not wait for real
	})
	var calls atomic.Int32
	f.OnWatch = func(ctx context.Context, _ *ocmv1.WatchStreamsRequest, send func(*ocmv1.WatchStreamsResponse) error) error {
		switch n := calls.Add(1); {
		case n <= 4 || n == 6:
			return ocmtest.Status(codes.Unavailable, "", "down")
		case n == 5: // healthy: the initial state arrives, then it breaks
			if err := send(&ocmv1.WatchStreamsResponse{Type: ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED}); err != nil {
				return err
			}
			return ocmtest.Status(codes.Unavailable, "", "replica shutting down")
		}
		<-ctx.Done()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	var failures []int
	synced := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Watch(ctx, ocmclient.Watch{
			InitialState: true,
			Event: func(ev *ocmv1.WatchStreamsResponse) {
				if ev.GetType() == ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED {
					synced <- struct{}{}
				}
			},
			End: func(_ error, _ time.Duration, n int) { failures = append(failures, n) },
		})
	}()
	deadline := time.After(10 * time.Second)
	for calls.Load() < 7 {
		select {
		case <-deadline:
			t.Fatalf("only %d subscriptions", calls.Load())
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	<-done
	select {
	case <-synced:
	default:
		t.Fatal("the SYNCED event was not delivered")
	}
	want := []int{1, 2, 3, 4, 1, 2}
	if len(failures) != len(want) {
		t.Fatalf("failures in a row %v, want %v", failures, want)
	}
	for i := range want {
		if failures[i] != want[i] {
			t.Fatalf("failures in a row %v, want %v", failures, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// Delay(n) is within [nominal/2, nominal], nominal = min doubled n times.
	if delays[3] < 4*minB || delays[4] > minB {
		t.Fatalf("delays %v: the 4th should have grown to at least %s, the one after a healthy stream be back to at most %s", delays, 4*minB, minB)
	}
}
