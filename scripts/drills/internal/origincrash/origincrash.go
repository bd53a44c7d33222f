// Package origincrash is the drill "origin-crash" (issue #10, drill 1):
// an encoder publishes straight to origin A and RTMP, HTTP-FLV and HLS
// players play through an edge; A dies. The encoder retries every second
// on origin B (as OBS does through the origins' Service, which no longer
// routes to A). Figures: players kept per protocol, kill → first new media
// at the players, the publisher's way back.
//
// Two variants, each on a fresh cluster:
//
//   - kill: SIGKILL of A's PID 1. The kernel closes A's sockets, so the OCM
//     sees A's session stream break and frees the stream after
//     sessionGrace (1.5 s). Target: every player kept, and RTMP/HTTP-FLV
//     media again at most 2 s beyond the encoder's retry delay (1 s) after
//     the kill.
//   - host-lost (full form only): A is frozen (docker pause): no socket
//     closes, nothing answers. The encoder is made to reconnect at once (its
//     own stall detection is not the cluster's to measure); the stream is
//     free only when A's lease expires. Target: every player kept, media
//     again within leaseTTL (10 s) + 2 s.
package origincrash

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/livecluster/livecluster/scripts/drills/internal/drill"
)

// Drill is the origin-crash drill.
var Drill = drill.Drill{
	Name: "origin-crash",
	Doc:  "publisher straight to origin A, players through an edge; A SIGKILLed (and, full form, frozen): players kept, time to media again",
	Run:  run,
}

// Knobs of the cluster under test (the defaults), for the targets.
const (
	retry    = time.Second      // the encoder's retry delay
	leaseTTL = 10 * time.Second // the OCM's default
	slack    = 2 * time.Second  // the target beyond the unavoidable
)

func run(ctx context.Context, e *drill.Env) (drill.Result, error) {
	res := drill.Result{Figures: map[string]any{}}
	n := 5
	if e.Short {
		n = 2
	}
	f, err := variant(ctx, e, "kill", n, &res)
	res.Figures["kill"] = f
	if err != nil || e.Short {
		return res, err
	}
	f, err = variant(ctx, e, "host-lost", n, &res)
	res.Figures["host_lost"] = f
	return res, err
}

// variant runs one crash on a fresh cluster and returns its figures;
// missed targets go into res.
func variant(ctx context.Context, e *drill.Env, how string, n int, res *drill.Result) (map[string]any, error) {
	fig := map[string]any{}
	c, err := e.NewCluster(ctx, "origin-crash-"+how)
	if err != nil {
		return fig, err
	}
	defer c.Close()
	fail := func(err error) (map[string]any, error) { c.Fail(); return fig, err }

	ks, err := c.RunAll(ctx, c.OCMSpec("ocm", nil), c.OriginSpec("origin-a", "ocm", drill.OriginEnv),
		c.OriginSpec("origin-b", "ocm", drill.OriginEnv), c.EdgeSpec("edge", "ocm", nil))
	if err != nil {
		return fail(err)
	}
	ocm, a, b, edge := ks[0], ks[1], ks[2], ks[3]
	aURL, err := drill.StreamURLs(ctx, a, "live", "crash")
	if err != nil {
		return fail(err)
	}
	bURL, err := drill.StreamURLs(ctx, b, "live", "crash")
	if err != nil {
		return fail(err)
	}
	eURL, err := drill.StreamURLs(ctx, edge, "live", "crash")
	if err != nil {
		return fail(err)
	}
	file, err := e.TestFile(ctx)
	if err != nil {
		return fail(err)
	}

	// The encoder: A first; once A is gone the Service routes it to B.
	var gone atomic.Bool
	pubCtx, stopPub := context.WithCancel(ctx)
	pub := &drill.Publisher{Env: e, File: file, Retry: retry, Target: func(int) string {
		if gone.Load() {
			return bURL.RTMP
		}
		return aURL.RTMP
	}}
	pub.Start(pubCtx)
	defer func() { stopPub(); pub.Wait() }()
	setup, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, _, err := drill.WaitOwner(setup, ocm, "live", "crash", func(o string) bool { return o == "origin-a" }); err != nil {
		return fail(fmt.Errorf("the publish on origin A: %w", err))
	}
	if err := drill.WaitPlaylist(setup, eURL.HLS, 3); err != nil {
		return fail(fmt.Errorf("HLS through the edge before the crash: %w", err))
	}

	warm := 3 * time.Second
	observe := 8 * time.Second
	if how == "host-lost" {
		observe = leaseTTL + 8*time.Second
	}
	players := []*drill.Players{
		{Name: "rtmp", N: n, URL: eURL.RTMP, Duration: warm + observe, Gaps: 500 * time.Millisecond},
		{Name: "httpflv", N: n, URL: eURL.FLV, Duration: warm + observe, Gaps: 500 * time.Millisecond},
		// Segments of 1 s arrive about every second: a pause is 2.5 s.
		{Name: "hls", N: n, URL: eURL.HLS, Duration: warm + observe, Gaps: 2500 * time.Millisecond},
	}
	tag := "origin-crash-" + how
	for _, p := range players {
		if err := p.Start(ctx, e, tag); err != nil {
			return fail(err)
		}
	}
	if err := drill.Sleep(ctx, warm); err != nil {
		return fail(err)
	}

	e.Logf("origin-crash/%s: %d players per protocol on the edge; crashing origin A", how, n)
	t0 := time.Now()
	gone.Store(true)
	if how == "kill" {
		err = a.Kill(ctx)
	} else {
		err = a.Pause(ctx)
		pub.Reconnect()
	}
	if err != nil {
		return fail(err)
	}
	// docker kill and docker pause take up to a second on a busy machine:
	// a kill is timed from when PID 1 died, as Docker recorded it; a pause
	// has no such record and is timed from when the command returned (A
	// was frozen by then; crash_cmd_ms says how much earlier it may have
	// been).
	fig["crash_cmd_ms"] = drill.Ms(time.Since(t0))
	if how == "kill" {
		if died, err := a.FinishedAt(ctx); err == nil && died.After(t0) {
			t0 = died
		}
	} else {
		t0 = time.Now()
	}
	after, cancel2 := context.WithTimeout(ctx, observe)
	defer cancel2()
	owner, tOwner, err := drill.WaitOwner(after, ocm, "live", "crash", func(o string) bool { return o == "origin-b" })
	if err == nil {
		fig["owner_b_ms"] = drill.Ms(tOwner.Sub(t0))
		e.Logf("origin-crash/%s: the OCM names %s %v after the crash", how, owner, tOwner.Sub(t0).Round(time.Millisecond))
	} else {
		res.Check(false, "%s: origin B never became the owner: %v", how, err)
	}

	for _, p := range players {
		p.Summary, p.Err = p.Wait()
	}
	// When the encoder's retries reached B (B logs each publish it
	// refuses or starts): its own retry delay, as the cluster sees it.
	lines, err := drill.Logs(ctx, b, t0, "publish refused", "publish started")
	if err != nil {
		return fail(err)
	}
	var refused int
	var arrived, accepted time.Duration
	for _, l := range lines {
		if arrived == 0 {
			arrived = l.Time.Sub(t0)
		}
		if l.Msg == "publish refused" {
			refused++
		} else if accepted == 0 {
			accepted = l.Time.Sub(t0)
		}
	}
	fig["encoder_arrived_ms"], fig["encoder_accepted_ms"], fig["encoder_refused"] = drill.Ms(arrived), drill.Ms(accepted), refused
	res.Check(accepted > 0, "%s: origin B never accepted the encoder", how)
	// Kill: within 2 s of the encoder's first retry reaching B. Host lost:
	// the lease must expire first.
	target := arrived + slack
	if how == "host-lost" {
		target = leaseTTL + slack
	}
	fig["target_ms"] = drill.Ms(target)
	for _, p := range players {
		s, err := p.Summary, p.Err
		if err != nil {
			return fail(err)
		}
		resume := s.Resume(t0, 2*time.Second)
		pf := map[string]any{"players": p.N, "kept": s.Kept(), "errors": s.Errors}
		if len(s.FirstErrors) > 0 {
			pf["first_errors"] = s.FirstErrors
		}
		if len(resume) > 0 {
			pf["resume_max_ms"], pf["resume_min_ms"] = drill.Ms(resume[0]), drill.Ms(resume[len(resume)-1])
		}
		fig[p.Name] = pf
		res.Check(s.Kept() == int64(p.N), "%s %s: %d of %d players kept", how, p.Name, s.Kept(), p.N)
		if p.Name != "hls" { // HLS resumes a segment later by nature; judged on being kept
			res.Check(len(resume) == p.N, "%s %s: %d of %d players paused across the crash and resumed", how, p.Name, len(resume), p.N)
			res.Check(len(resume) > 0 && resume[0] <= target, "%s %s: media again after %v, target %v", how, p.Name, first(resume), target)
		}
	}

	var tries int
	for _, at := range pub.Attempts() {
		if !at.Start.Before(t0) {
			tries++
		}
	}
	fig["encoder_attempts"] = tries
	if len(res.Failed) > 0 {
		c.Fail()
	}
	return fig, nil
}

func first(d []time.Duration) any {
	if len(d) == 0 {
		return "never"
	}
	return d[0].Round(time.Millisecond)
}
