package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

type closer struct {
	mu  *sync.Mutex
	log *[]string
}

func (c closer) Close() error {
	c.mu.Lock()
	*c.log = append(*c.log, "close listener")
	c.mu.Unlock()
	return nil
}

func TestDrainOrderAndReadiness(t *testing.T) {
	var mu sync.Mutex
	var events []string
	rec := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	l := New(slog.New(slog.DiscardHandler), Options{StartWait: 50 * time.Millisecond, DrainTimeout: time.Second, FinalWait: 20 * time.Millisecond})
	l.AddCheck("listening", func() error { return nil })
	l.AddListener("media", closer{&mu, &events})
	l.OnDraining("ocm", func(ctx context.Context) error { rec("draining"); return nil })
	for _, n := range []string{"a", "b"} {
		l.OnDrain(n, func(ctx context.Context) error {
			mu.Lock()
			closed := slices.Contains(events, "close listener")
			mu.Unlock()
			if !closed {
				rec("drain before close")
			}
			rec("drain")
			return nil
		})
	}
	l.OnDrain("slow", func(ctx context.Context) error {
		<-ctx.Done() // bounded by DrainTimeout, which SetOptions shortens below
		rec("slow stopped")
		return ctx.Err()
	})
	l.OnFinal("deregister", func(ctx context.Context) error { rec("final1"); return errors.New("ocm down") })
	l.OnFinal("flush", func(ctx context.Context) error { rec("final2"); return nil })
	if !l.Ready() {
		t.Fatal("not ready before drain")
	}
	l.SetOptions(Options{StartWait: 50 * time.Millisecond, DrainTimeout: 100 * time.Millisecond, FinalWait: 20 * time.Millisecond})

	codec := make(chan int, 1)
	t0 := time.Now()
	go func() { codec <- l.Run(context.Background()) }()
	l.StartDrain("test")
	deadline := time.Now().Add(time.Second)
	for l.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("still ready after StartDrain")
		}
		time.Sleep(time.Millisecond)
	}
	if cs := l.Checks(); cs[0].Name != "draining" || !errors.Is(cs[0].Err, ErrDraining) || cs[1].Err != nil {
		t.Errorf("checks %+v", cs)
	}
	l.StartDrain("again") // idempotent, never a fast quit
	select {
	case code := <-codec:
		if code != ExitGraceful {
			t.Errorf("exit %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("drain never finished")
	}
	if d := time.Since(t0); d < 170*time.Millisecond {
		t.Errorf("drain took %s, want >= startWait+drainTimeout+finalWait", d)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"draining", "close listener", "drain", "drain", "slow stopped", "final1", "final2"}
	if !slices.Equal(events, want) {
		t.Errorf("events %v, want %v", events, want)
	}
}

func TestSignals(t *testing.T) {
	cases := []struct {
		name  string
		fast  bool
		sigs  []syscall.Signal
		code  int
		drain bool
	}{
		{"SIGTERM graceful", false, []syscall.Signal{syscall.SIGTERM}, 0, true},
		{"SIGINT graceful", false, []syscall.Signal{syscall.SIGINT}, 0, true},
		{"SIGTERM fast", true, []syscall.Signal{syscall.SIGTERM}, 143, false},
		{"SIGINT fast", true, []syscall.Signal{syscall.SIGINT}, 130, false},
		{"SIGQUIT with fast", true, []syscall.Signal{syscall.SIGQUIT}, 0, true},
		{"second signal", false, []syscall.Signal{syscall.SIGTERM, syscall.SIGINT}, 130, true},
		{"SIGHUP is not a stop", false, []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM}, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := New(slog.New(slog.DiscardHandler), Options{StartWait: 30 * time.Millisecond, SigtermFast: tc.fast})
			if tc.name == "second signal" {
				l.SetOptions(Options{StartWait: 10 * time.Second})
			}
			codec := make(chan int, 1)
			go func() { codec <- l.Run(context.Background()) }()
			for i, s := range tc.sigs {
				l.Signal(s)
				if i == 0 && tc.name == "second signal" {
					for !l.Draining() {
						time.Sleep(time.Millisecond)
					}
				}
			}
			select {
			case code := <-codec:
				if code != tc.code {
					t.Errorf("exit %d, want %d", code, tc.code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return")
			}
			if l.Draining() != tc.drain {
				t.Errorf("draining %v, want %v", l.Draining(), tc.drain)
			}
			if tc.sigs[0] == syscall.SIGHUP {
				select {
				case <-l.Reloads():
				default:
					t.Error("SIGHUP not delivered on Reloads")
				}
			}
		})
	}
}

func TestFatal(t *testing.T) {
	l := New(slog.New(slog.DiscardHandler), Options{})
	l.Fatal(errors.New("rtmp listener died"))
	if code := l.Run(context.Background()); code != ExitFatal {
		t.Errorf("exit %d", code)
	}
}
