// Package hlscontinuity is the drill "hls-continuity" (issue #10, drill
// 3): HLS players through edges behind a load balancer (a Service) while
// the stream's owner is drained (SIGTERM), then the next owner is
// SIGKILLed, then the players' edge is drained as a rollout does it (a
// fresh edge joins the Service, the old one gets SIGTERM). The publisher
// publishes through an edge of its own, which moves its forwarded publish.
//
// Targets: every player kept; no 404; the media sequence a player sees
// never goes back; #EXT-X-DISCONTINUITY at each owner change; no player
// without a new segment for more than 10 s.
package hlscontinuity

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/livecluster/livecluster/scripts/drills/internal/cluster"
	"github.com/livecluster/livecluster/scripts/drills/internal/drill"
)

// Drill is the hls-continuity drill.
var Drill = drill.Drill{
	Name: "hls-continuity",
	Doc:  "HLS players through a Service of edges across an origin drain, an origin crash and an edge drain: no 404, sequence never back, discontinuities",
	Run:  run,
}

// Shorter drain knobs than the defaults, so that a drained node is gone
// within the drill (the behaviour is the same; docs/operations.md).
var shutdownEnv = map[string]string{
	"LIVECLUSTER_SHUTDOWN_START_WAIT":    "1s",
	"LIVECLUSTER_SHUTDOWN_DRAIN_TIMEOUT": "8s",
	"LIVECLUSTER_SHUTDOWN_FINAL_WAIT":    "500ms",
}

const maxStall = 10 * time.Second

func env(extra map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range shutdownEnv {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func run(ctx context.Context, e *drill.Env) (drill.Result, error) {
	res := drill.Result{Figures: map[string]any{}}
	n, settle := 4, 8*time.Second
	if e.Short {
		n, settle = 2, 5*time.Second
	}
	c, err := e.NewCluster(ctx, "hls-continuity")
	if err != nil {
		return res, err
	}
	defer c.Close()
	fail := func(err error) (drill.Result, error) { c.Fail(); return res, err }

	specs := []cluster.Spec{c.OCMSpec("ocm", nil),
		c.OriginSpec("origin1", "ocm", env(drill.OriginEnv)), c.OriginSpec("origin2", "ocm", env(drill.OriginEnv)),
		c.OriginSpec("origin3", "ocm", env(drill.OriginEnv)), c.EdgeSpec("edge-pub", "ocm", env(nil)),
		c.EdgeSpec("edge1", "ocm", env(nil))}
	if !e.Short {
		// edge2 serves players with edge1 from the start; edge3 is the
		// rollout's new pod: up from the start, but it serves nothing of
		// the stream until the Service sends it players.
		specs = append(specs, c.EdgeSpec("edge2", "ocm", env(nil)), c.EdgeSpec("edge3", "ocm", env(nil)))
	}
	ks, err := c.RunAll(ctx, specs...)
	if err != nil {
		return fail(err)
	}
	ocm, origins, pubEdge, e1 := ks[0], ks[1:4], ks[4], ks[5]
	service := ks[5:6]
	var e2 *cluster.Container
	if !e.Short {
		e2 = ks[6]
		service = ks[5:7]
	}
	byName := map[string]*cluster.Container{}
	for _, o := range origins {
		byName[o.Short] = o
	}

	file, err := e.TestFile(ctx)
	if err != nil {
		return fail(err)
	}
	pubURL, err := drill.StreamURLs(ctx, pubEdge, "live", "hls")
	if err != nil {
		return fail(err)
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	pub := &drill.Publisher{Env: e, File: file, Target: func(int) string { return pubURL.RTMP }}
	pub.Start(pubCtx)
	defer func() { stopPub(); pub.Wait() }()
	setup, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	owner, _, err := drill.WaitOwner(setup, ocm, "live", "hls", func(o string) bool { return o != "" })
	if err != nil {
		return fail(fmt.Errorf("the publish through edge-pub: %w", err))
	}
	lb, err := drill.NewLB(ctx, cluster.PortHTTP, service...)
	if err != nil {
		return fail(err)
	}
	defer lb.Close()
	url := "http://" + lb.Addr() + "/live/hls.m3u8"
	if err := drill.WaitPlaylist(setup, url, 3); err != nil {
		return fail(fmt.Errorf("HLS through the Service: %w", err))
	}

	warm := 4 * time.Second
	// The players run until the last step has settled (then SIGINT, and
	// loadgen writes its summary); the duration is only a bound.
	playCtx, stopPlayers := context.WithCancel(ctx)
	defer stopPlayers()
	players := &drill.Players{Name: "hls", N: n, URL: url, Duration: 5 * time.Minute, Gaps: 2500 * time.Millisecond}
	if err := players.Start(playCtx, e, "hls-continuity"); err != nil {
		return fail(err)
	}
	w := &watcher{url: url}
	wctx, stopWatch := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	wwg.Go(func() { w.run(wctx) })
	defer func() { stopWatch(); wwg.Wait() }()
	if err := drill.Sleep(ctx, warm); err != nil {
		return fail(err)
	}

	steps := map[string]any{}
	times := map[string]time.Time{}
	// 1. The owner drains: the forwarded publish moves.
	e.Logf("hls-continuity: draining the owner %s", owner)
	times["origin_drain"] = time.Now()
	if err := byName[owner].Signal(ctx, "TERM"); err != nil {
		return fail(err)
	}
	prev := owner
	stepCtx, cancel1 := context.WithTimeout(ctx, settle+5*time.Second)
	owner, tOwner, err := drill.WaitOwner(stepCtx, ocm, "live", "hls", func(o string) bool { return o != "" && o != prev })
	cancel1()
	if err != nil {
		res.Check(false, "origin drain: no new owner: %v", err)
		return fail(err)
	}
	steps["origin_drain"] = map[string]any{"from": prev, "to": owner, "new_owner_ms": drill.Ms(tOwner.Sub(times["origin_drain"]))}
	if err := drill.Sleep(ctx, settle); err != nil {
		return fail(err)
	}

	// 2. The new owner crashes.
	e.Logf("hls-continuity: SIGKILL of the owner %s", owner)
	times["origin_crash"] = time.Now()
	if err := byName[owner].Kill(ctx); err != nil {
		return fail(err)
	}
	prev = owner
	stepCtx, cancel2 := context.WithTimeout(ctx, settle+10*time.Second)
	owner, tOwner, err = drill.WaitOwner(stepCtx, ocm, "live", "hls", func(o string) bool { return o != "" && o != prev })
	cancel2()
	if err != nil {
		res.Check(false, "origin crash: no new owner: %v", err)
		return fail(err)
	}
	steps["origin_crash"] = map[string]any{"from": prev, "to": owner, "new_owner_ms": drill.Ms(tOwner.Sub(times["origin_crash"]))}

	if !e.Short {
		if err := drill.Sleep(ctx, settle); err != nil {
			return fail(err)
		}
		// 3. An edge drains (scale-down, node maintenance): its players
		// reconnect through the Service to the other edge, which has
		// served the stream all along.
		e.Logf("hls-continuity: edge1 drains; its players move to edge2")
		times["edge_drain"] = time.Now()
		if err := e1.Signal(ctx, "TERM"); err != nil {
			return fail(err)
		}
		steps["edge_drain"] = map[string]any{"from": e1.Short, "to": e2.Short}
		if err := drill.Sleep(ctx, settle); err != nil {
			return fail(err)
		}
		// 4. An edge rollout: a fresh edge joins the Service, the last old
		// one drains, and every player lands on an edge that never served
		// the stream before.
		e.Logf("hls-continuity: edge rollout: edge3 joins the Service, edge2 drains")
		lb.Add(ks[7])
		if err := drill.Sleep(ctx, 500*time.Millisecond); err != nil {
			return fail(err)
		}
		times["edge_rollout"] = time.Now()
		if err := e2.Signal(ctx, "TERM"); err != nil {
			return fail(err)
		}
		steps["edge_rollout"] = map[string]any{"from": e2.Short, "to": ks[7].Short}
	}

	if err := drill.Sleep(ctx, settle); err != nil {
		return fail(err)
	}
	stopPlayers()
	s, err := players.Wait()
	if err != nil {
		return fail(err)
	}
	stopWatch()
	wwg.Wait()
	for name, t := range times {
		st := steps[name].(map[string]any)
		if r := s.Resume(t, 2*time.Second); len(r) > 0 {
			st["stall_max_ms"] = drill.Ms(r[0])
		}
	}
	res.Figures["steps"] = steps
	res.Figures["players"] = n
	res.Figures["kept"] = s.Kept()
	res.Figures["errors"] = s.Errors
	if len(s.FirstErrors) > 0 {
		res.Figures["first_errors"] = s.FirstErrors
	}
	res.Figures["longest_stall_ms"] = drill.Ms(s.MaxGap())
	wf := w.figures()
	res.Figures["watcher"] = wf
	res.Check(s.Kept() == int64(n), "%d of %d players kept", s.Kept(), n)
	res.Check(s.Errors["hls"]["http_404"] == 0 && wf.NotFound == 0, "404s: players %d, watcher %d", s.Errors["hls"]["http_404"], wf.NotFound)
	res.Check(s.Errors["hls"]["hls_seq_back"] == 0 && wf.SeqBack == 0, "media sequence went back: players %d, watcher %d (%s)", s.Errors["hls"]["hls_seq_back"], wf.SeqBack, wf.FirstSeqBack)
	res.Check(wf.Discontinuities >= 2, "%d discontinuities seen, want one per owner change (2)", wf.Discontinuities)
	res.Check(s.MaxGap() <= maxStall, "a player went %v without a new segment, target %v", s.MaxGap(), maxStall)
	if len(res.Failed) > 0 {
		c.Fail()
	}
	return res, nil
}

// watcher polls the playlist through the Service every 500 ms, as a player
// with one keep-alive connection: it counts 404s, media sequence steps
// back and the distinct discontinuities it saw.
type watcher struct {
	url string

	mu                       sync.Mutex
	polls, notFound, seqBack int
	firstSeqBack             string
	lastSeq                  int64
	discontinuities          int
}

// WatchFigures are the watcher's counts.
type WatchFigures struct {
	Polls           int    `json:"polls"`
	NotFound        int    `json:"not_found"`
	SeqBack         int    `json:"seq_back"`
	FirstSeqBack    string `json:"first_seq_back,omitempty"`
	Discontinuities int    `json:"discontinuities"`
}

func (w *watcher) figures() WatchFigures {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WatchFigures{Polls: w.polls, NotFound: w.notFound, SeqBack: w.seqBack, FirstSeqBack: w.firstSeqBack,
		Discontinuities: w.discontinuities}
}

func (w *watcher) run(ctx context.Context) {
	client := &http.Client{Timeout: 5 * time.Second}
	seen := map[string]bool{} // discontinuity positions: edge sequence of the marked segment
	w.lastSeq = -1
	for drill.Sleep(ctx, 500*time.Millisecond) == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		w.mu.Lock()
		w.polls++
		if resp.StatusCode == http.StatusNotFound {
			w.notFound++
		}
		if resp.StatusCode == http.StatusOK {
			seq, discs := parse(string(b))
			if seq < w.lastSeq {
				w.seqBack++
				if w.firstSeqBack == "" {
					w.firstSeqBack = fmt.Sprintf("%d after %d", seq, w.lastSeq)
				}
			}
			w.lastSeq = seq
			for _, d := range discs {
				if !seen[d] {
					seen[d] = true
					w.discontinuities++
				}
			}
		}
		w.mu.Unlock()
	}
}

// parse returns a media playlist's media sequence and the names of the
// segments that follow an #EXT-X-DISCONTINUITY.
func parse(pl string) (int64, []string) {
	var seq int64
	var discs []string
	disc := false
	for line := range strings.SplitSeq(pl, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			seq, _ = strconv.ParseInt(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
		case line == "#EXT-X-DISCONTINUITY":
			disc = true
		case line != "" && !strings.HasPrefix(line, "#"):
			if disc {
				discs = append(discs, line)
			}
			disc = false
		}
	}
	return seq, discs
}
