package ocmload

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Hold returns only once no call is under way, and no call starts until
// Resume: what lets the etcd-quorum drill make a fault that no call
// straddles.
func TestGateHoldWaitsForCallsAndStopsNewOnes(t *testing.T) {
	var g gate
	ctx := context.Background()
	var inflight, maxDuringHold atomic.Int32
	var held atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := g.enter(ctx); err != nil {
					t.Error(err)
					return
				}
				n := inflight.Add(1)
				if held.Load() {
					maxDuringHold.Store(max(maxDuringHold.Load(), n))
				}
				time.Sleep(2 * time.Millisecond)
				inflight.Add(-1)
				g.leave()
			}
		})
	}
	for range 20 {
		time.Sleep(5 * time.Millisecond)
		if err := g.hold(ctx); err != nil {
			t.Fatal(err)
		}
		held.Store(true)
		if n := inflight.Load(); n != 0 {
			t.Fatalf("hold returned with %d calls under way", n)
		}
		time.Sleep(5 * time.Millisecond)
		held.Store(false)
		g.resume()
	}
	close(stop)
	wg.Wait()
	if n := maxDuringHold.Load(); n != 0 {
		t.Errorf("%d calls started while the gate was held", n)
	}
}

// A call waiting at a held gate gives up when its context ends (the load
// stops), and hold gives up when its own does.
func TestGateWaitsEndWithTheirContexts(t *testing.T) {
	var g gate
	if err := g.enter(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := g.hold(ctx); err == nil {
		t.Fatal("hold returned with a call under way")
	}
	g.leave()
	if err := g.hold(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := g.enter(ctx2); err == nil {
		t.Fatal("enter passed a held gate")
	}
	g.resume()
	if err := g.enter(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.leave()
}
