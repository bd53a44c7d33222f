// Package lifecycle runs a node's graceful drain: the Kubernetes pod
// termination sequence of ARCHITECTURE.md.
//
// The sequence, started by SIGTERM (when shutdown.sigterm is "graceful"),
// SIGQUIT (always graceful), SIGINT (treated like SIGTERM so Ctrl-C on a
// local cluster drains too) or StartDrain (the admin /api/v1/drain endpoint
// behind the `drain` subcommand):
//
//  1. readiness fails at once (before any hook runs) and the OnDraining
//     hooks start, concurrently (the binaries tell the OCM they are
//     DRAINING); they are not waited for before step 2.
//  2. wait StartWait while every listener still accepts connections, so the
//     load balancer / Service removes the endpoint before it goes away.
//  3. close the registered listeners, then run the OnDrain hooks
//     concurrently with a context bounded by DrainTimeout (origins hand off
//     streams, everyone waits for clients to leave).
//  4. run the OnFinal hooks in registration order (Deregister), wait
//     FinalWait, and Run returns ExitGraceful (0).
//
// Quitting at once: SIGTERM or SIGINT with SigtermFast, or any second
// SIGTERM/SIGINT/SIGQUIT while a drain runs, makes Run return immediately
// with 128+signal number (SIGINT 130, SIGQUIT 131, SIGTERM 143), the shell
// convention for "killed by a signal". Fatal makes Run return ExitFatal (1).
// A drain hook that fails or times out is logged but does not change the
// exit code: the drain is best effort and Kubernetes only needs the process
// to end.
//
// SIGHUP never stops the process: it is delivered on Reloads. The lifecycle
// is the only owner of signal handling in the process (NotifySignals).
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/livecluster/livecluster/node/backoff"
)

// Exit codes returned by Run.
const (
	ExitGraceful = 0
	ExitFatal    = 1
)

// FinalHookTimeout bounds all OnFinal hooks together: Deregister must not
// hold the pod past its grace period when the OCM is unreachable.
const FinalHookTimeout = 5 * time.Second

// hookGrace is how long Run still waits for hooks that ignore their
// context's deadline before it moves on without them.
const hookGrace = time.Second

// Options are the shutdown.* settings; they can change live (SetOptions).
type Options struct {
	StartWait    time.Duration
	DrainTimeout time.Duration
	FinalWait    time.Duration
	// SigtermFast makes SIGTERM and SIGINT quit at once (shutdown.sigterm:
	// fast). SIGQUIT still drains.
	SigtermFast bool
}

// Hook is work run during the drain; it must return when ctx is done.
type Hook func(ctx context.Context) error

// Check is one readiness condition's result; Err nil means it passes.
type Check struct {
	Name string
	Err  error
}

type named[T any] struct {
	name string
	v    T
}

// Lifecycle owns the process's signals, readiness and drain sequence.
type Lifecycle struct {
	log *slog.Logger

	mu        sync.Mutex
	opts      Options
	listeners []named[io.Closer]
	draining  []named[Hook]
	drain     []named[Hook]
	final     []named[Hook]
	checks    []named[func() error]

	isDraining atomic.Bool
	sigs       chan os.Signal
	drainReq   chan string
	fatal      chan error
	reloads    chan struct{}
}

// New returns a Lifecycle; call Run to start handling signals and drains.
func New(logger *slog.Logger, opts Options) *Lifecycle {
	return &Lifecycle{
		log:      logger.With("component", "lifecycle"),
		opts:     opts,
		sigs:     make(chan os.Signal, 8),
		drainReq: make(chan string, 1),
		fatal:    make(chan error, 1),
		reloads:  make(chan struct{}, 1),
	}
}

// SetOptions changes the shutdown settings; a running drain uses the new
// values from its next step on.
func (l *Lifecycle) SetOptions(o Options) {
	l.mu.Lock()
	l.opts = o
	l.mu.Unlock()
}

// Options returns the current shutdown settings.
func (l *Lifecycle) Options() Options {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opts
}

// AddListener registers something to close at step 3 (a net.Listener, or a
// server whose Close stops accepting).
func (l *Lifecycle) AddListener(name string, c io.Closer) {
	l.mu.Lock()
	l.listeners = append(l.listeners, named[io.Closer]{name, c})
	l.mu.Unlock()
}

// OnDraining registers a hook run at step 1, as soon as the drain starts
// (tell the OCM the node is DRAINING). Its context ends with step 3.
func (l *Lifecycle) OnDraining(name string, h Hook) {
	l.mu.Lock()
	l.draining = append(l.draining, named[Hook]{name, h})
	l.mu.Unlock()
}

// OnDrain registers a hook run at step 3, concurrently with the others,
// after the listeners are closed, bounded by DrainTimeout.
func (l *Lifecycle) OnDrain(name string, h Hook) {
	l.mu.Lock()
	l.drain = append(l.drain, named[Hook]{name, h})
	l.mu.Unlock()
}

// OnFinal registers a hook run at step 4 (Deregister), in registration
// order, bounded by FinalHookTimeout in total.
func (l *Lifecycle) OnFinal(name string, h Hook) {
	l.mu.Lock()
	l.final = append(l.final, named[Hook]{name, h})
	l.mu.Unlock()
}

// AddCheck registers a readiness condition. fn must be cheap: it runs on
// every /readyz request.
func (l *Lifecycle) AddCheck(name string, fn func() error) {
	l.mu.Lock()
	l.checks = append(l.checks, named[func() error]{name, fn})
	l.mu.Unlock()
}

// ErrDraining is the readiness failure while the node drains.
var ErrDraining = errors.New("draining")

// Checks evaluates readiness: "draining" first, then every registered
// check in order.
func (l *Lifecycle) Checks() []Check {
	l.mu.Lock()
	checks := append([]named[func() error](nil), l.checks...)
	l.mu.Unlock()
	out := make([]Check, 0, len(checks)+1)
	var d error
	if l.isDraining.Load() {
		d = ErrDraining
	}
	out = append(out, Check{Name: "draining", Err: d})
	for _, c := range checks {
		out = append(out, Check{Name: c.name, Err: c.v()})
	}
	return out
}

// Ready reports whether every check passes and the node is not draining.
func (l *Lifecycle) Ready() bool {
	for _, c := range l.Checks() {
		if c.Err != nil {
			return false
		}
	}
	return true
}

// Draining reports whether the drain has started.
func (l *Lifecycle) Draining() bool { return l.isDraining.Load() }

// StartDrain starts the graceful drain (idempotent; a no-op while one
// runs). Unlike a second signal, a second StartDrain never quits at once.
func (l *Lifecycle) StartDrain(reason string) {
	select {
	case l.drainReq <- reason:
	default:
	}
}

// Fatal makes Run return ExitFatal at once (a server the node cannot work
// without failed).
func (l *Lifecycle) Fatal(err error) {
	select {
	case l.fatal <- err:
	default:
	}
}

// Signal delivers sig as if the process had received it.
func (l *Lifecycle) Signal(sig os.Signal) {
	select {
	case l.sigs <- sig:
	default:
		l.log.Warn("signal dropped: queue full", "signal", sig.String())
	}
}

// NotifySignals routes SIGTERM, SIGINT, SIGQUIT and SIGHUP to the
// lifecycle. Call it first thing, so a SIGHUP during start-up is not fatal.
// The returned func undoes it.
func (l *Lifecycle) NotifySignals() (stop func()) {
	signal.Notify(l.sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP)
	return func() { signal.Stop(l.sigs) }
}

// Reloads delivers one value per SIGHUP (coalesced while nobody reads).
func (l *Lifecycle) Reloads() <-chan struct{} { return l.reloads }

// Run handles signals and drain requests until the process should exit and
// returns its exit code. Cancelling ctx makes Run return ExitFatal.
func (l *Lifecycle) Run(ctx context.Context) int {
	// Cancelling stops a drain abandoned by a quit at once; Run does not wait
	// for it: "at once" means the hooks get no more time.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	start := func(reason string) {
		if l.isDraining.Swap(true) {
			return
		}
		// isDraining is set before this returns: readiness fails now, not
		// when the drain goroutine gets scheduled.
		go func() {
			l.runDrain(ctx, reason)
			close(done)
		}()
	}
	for {
		select {
		case sig := <-l.sigs:
			switch sig {
			case syscall.SIGHUP:
				select {
				case l.reloads <- struct{}{}:
				default:
				}
				continue
			case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
			default:
				continue
			}
			fast := sig != syscall.SIGQUIT && l.Options().SigtermFast
			if l.isDraining.Load() || fast {
				code := 128 + int(sig.(syscall.Signal))
				why := "shutdown.sigterm is fast"
				if l.isDraining.Load() {
					why = "second signal during drain"
				}
				l.log.Warn("quitting at once", "signal", sig.String(), "reason", why, "exit_code", code)
				return code
			}
			l.log.Info("drain requested", "signal", sig.String())
			start("signal " + sig.String())
		case reason := <-l.drainReq:
			if !l.isDraining.Load() {
				l.log.Info("drain requested", "by", reason)
			}
			start(reason)
		case err := <-l.fatal:
			l.log.Error("fatal error, quitting", "err", err.Error(), "exit_code", ExitFatal)
			return ExitFatal
		case <-done:
			return ExitGraceful
		case <-ctx.Done():
			l.log.Warn("lifecycle context cancelled, quitting", "exit_code", ExitFatal)
			return ExitFatal
		}
	}
}

func (l *Lifecycle) runDrain(ctx context.Context, reason string) {
	begin := time.Now()
	l.mu.Lock()
	listeners := append([]named[io.Closer](nil), l.listeners...)
	draining := append([]named[Hook](nil), l.draining...)
	drain := append([]named[Hook](nil), l.drain...)
	final := append([]named[Hook](nil), l.final...)
	l.mu.Unlock()
	step := func(n int, name string, args ...any) {
		l.log.Info("drain step", append([]any{"step", n, "name", name,
			"elapsed_ms", time.Since(begin).Milliseconds()}, args...)...)
	}

	opts := l.Options()
	step(1, "readiness failing, notifying draining", "reason", reason, "hooks", len(draining))
	drainingCtx, stopDraining := context.WithCancel(ctx)
	defer stopDraining()
	drainingDone := l.runHooks(drainingCtx, "draining", draining)

	step(2, "start wait: still accepting connections", "start_wait", opts.StartWait.String())
	if !backoff.Sleep(ctx, opts.StartWait) {
		return
	}

	opts = l.Options()
	step(3, "closing listeners and draining", "listeners", len(listeners), "hooks", len(drain),
		"drain_timeout", opts.DrainTimeout.String())
	for _, c := range listeners {
		if err := c.v.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			l.log.Warn("close listener", "listener", c.name, "err", err.Error())
		}
	}
	drainCtx, cancelDrain := context.WithTimeout(ctx, opts.DrainTimeout)
	l.wait(drainCtx, "drain", l.runHooks(drainCtx, "drain", drain))
	cancelDrain()
	stopDraining()
	l.wait(drainingCtx, "draining", drainingDone)
	if ctx.Err() != nil {
		return
	}

	opts = l.Options()
	step(4, "final hooks, then final wait", "hooks", len(final), "final_wait", opts.FinalWait.String())
	finalCtx, cancelFinal := context.WithTimeout(ctx, FinalHookTimeout)
	finalDone := make(chan struct{})
	go func() {
		defer close(finalDone)
		for _, h := range final {
			l.runHook(finalCtx, "final", h)
		}
	}()
	l.wait(finalCtx, "final", finalDone)
	cancelFinal()
	if !backoff.Sleep(ctx, opts.FinalWait) {
		return
	}
	l.log.Info("drain complete, exiting", "elapsed_ms", time.Since(begin).Milliseconds(), "exit_code", ExitGraceful)
}

// runHooks starts hooks concurrently; the channel closes when all returned.
func (l *Lifecycle) runHooks(ctx context.Context, kind string, hooks []named[Hook]) <-chan struct{} {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, h := range hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.runHook(ctx, kind, h)
		}()
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

func (l *Lifecycle) runHook(ctx context.Context, kind string, h named[Hook]) {
	t0 := time.Now()
	err := h.v(ctx)
	args := []any{"kind", kind, "hook", h.name, "duration_ms", time.Since(t0).Milliseconds()}
	switch {
	case err != nil && ctx.Err() != nil:
		l.log.Warn("hook stopped by its deadline", append(args, "err", err.Error())...)
	case err != nil:
		l.log.Warn("hook failed", append(args, "err", err.Error())...)
	default:
		l.log.Info("hook done", args...)
	}
}

// wait waits for done; once ctx ends it gives hooks hookGrace more to
// notice, then moves on (a hook that ignores its context must not hang the
// drain).
func (l *Lifecycle) wait(ctx context.Context, kind string, done <-chan struct{}) {
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	t := time.NewTimer(hookGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		l.log.Warn("hooks still running after their deadline; moving on", "kind", kind)
	}
}

// String describes the options for logs.
func (o Options) String() string {
	return fmt.Sprintf("startWait=%s drainTimeout=%s finalWait=%s sigtermFast=%t",
		o.StartWait, o.DrainTimeout, o.FinalWait, o.SigtermFast)
}
