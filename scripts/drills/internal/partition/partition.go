// Package partition is the drill "partition" (issue #10, drill 2): origin
// A is cut off from the OCM but not from its publisher, for 30 s (short
// form 15 s), while players play the stream through an edge.
//
// Topology: two Docker networks. The cluster's default ("control")
// network holds the OCM, both origins and the edge; a second "publisher"
// network holds both origins and the edge too, and the encoder (ffmpeg on
// the host) publishes to A's address there. The cut is `docker network
// disconnect` of A from the control network only: A loses the OCM (its
// heartbeats and session stream stall, nothing is refused), keeps its
// publisher, and stays reachable from the edge by its name over the
// publisher network. So the edge can reach A during the partition, and
// only fencing stops A serving: at its local lease deadline A closes its
// publisher and refuses pulls, and edges pull with the epoch the OCM names.
// The encoder, closed by A, retries every second through a TCP load
// balancer of the origins (A's readiness is checked on the control
// network, so the balancer routes to B, as a Service would).
//
// Figures: cut → A closed the publisher (fenced), cut → the OCM names B,
// cut → first media from B at a player, players kept, the longest media
// gap, the instants (100 ms) at which media from two origins reached the
// players or the edge's pulls went back to an older epoch (must be 0), and
// the linearizability of every OCM call the origins and the edge made
// (LIVECLUSTER_OCM_HISTORY files on a bind mount, checked with porcupine).
package partition

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livecluster/livecluster/scripts/drills/internal/cluster"
	"github.com/livecluster/livecluster/scripts/drills/internal/drill"
	"github.com/livecluster/livecluster/scripts/drills/internal/ocmdrill"
)

// Drill is the partition drill.
var Drill = drill.Drill{
	Name: "partition",
	Doc:  "origin A cut off from the OCM (not from its publisher or the edge) for 30 s: one origin serves at any instant, publisher moves to B, players kept, history linearizable",
	Run:  run,
}

const (
	retry  = time.Second // the encoder's retry delay
	bucket = 100 * time.Millisecond
	app    = "live"
	stream = "part"
)

func run(ctx context.Context, e *drill.Env) (drill.Result, error) {
	res := drill.Result{Figures: map[string]any{}}
	cut, players := 30*time.Second, 4
	if e.Short {
		cut, players = 15*time.Second, 2
	}
	// The short form runs the harder case only: the edge still reaches A.
	for _, reach := range []bool{true, false} {
		name := "edge_reaches_a"
		if !reach {
			if e.Short {
				break
			}
			name = "edge_cut_off"
		}
		sub, err := variant(ctx, e, name, reach, cut, players)
		res.Figures[name] = sub.Figures
		for _, f := range sub.Failed {
			res.Failed = append(res.Failed, name+": "+f)
		}
		if err != nil {
			return res, fmt.Errorf("%s: %w", name, err)
		}
	}
	return res, nil
}

// variant runs the partition on a fresh cluster. With reach, the origins
// advertise their alias on the publisher network, so the edge's pulls go
// over it and survive the cut (only fencing stops A serving the edge);
// without, they go over the control network and stall at the cut.
func variant(ctx context.Context, e *drill.Env, name string, reach bool, cut time.Duration, players int) (drill.Result, error) {
	res := drill.Result{Figures: map[string]any{}}
	fig := res.Figures
	c, err := e.NewCluster(ctx, "partition-"+name)
	if err != nil {
		return res, err
	}
	defer c.Close()
	fail := func(err error) (drill.Result, error) { c.Fail(); return res, err }

	pubNet, err := c.AddNetwork(ctx, "pub")
	if err != nil {
		return fail(err)
	}
	histDir := filepath.Join(e.Dir, "partition-"+name+"-history")
	if err := cluster.BindDir(histDir); err != nil {
		return fail(err)
	}
	node := func(s cluster.Spec) cluster.Spec {
		s.Env["LIVECLUSTER_OCM_HISTORY"] = "/history/" + s.Name + ".jsonl"
		s.Binds = append(s.Binds, histDir+":/history")
		s.Networks = append(s.Networks, pubNet)
		if reach && s.Image == "origin" {
			alias := s.Env["LIVECLUSTER_ADVERTISE_HOST"] + "-pub"
			s.Aliases = append(s.Aliases, alias)
			s.Env["LIVECLUSTER_ADVERTISE_HOST"] = alias
		}
		return s
	}
	originEnv := func() map[string]string {
		m := map[string]string{}
		for k, v := range drill.OriginEnv {
			m[k] = v
		}
		return m
	}
	ks, err := c.RunAll(ctx, c.OCMSpec("ocm", nil),
		node(c.OriginSpec("origin-a", "ocm", originEnv())), node(c.OriginSpec("origin-b", "ocm", originEnv())),
		node(c.EdgeSpec("edge", "ocm", nil)))
	if err != nil {
		return fail(err)
	}
	ocm, a, b, edge := ks[0], ks[1], ks[2], ks[3]
	aPub, err := a.IPOn(ctx, pubNet)
	if err != nil {
		return fail(err)
	}
	aURL := fmt.Sprintf("rtmp://%s/%s/%s", net.JoinHostPort(aPub, strconv.Itoa(cluster.PortRTMP)), app, stream)
	lb, err := drill.NewLB(ctx, cluster.PortRTMP, a, b)
	if err != nil {
		return fail(err)
	}
	defer lb.Close()
	lbURL := fmt.Sprintf("rtmp://%s/%s/%s", lb.Addr(), app, stream)
	eURL, err := drill.StreamURLs(ctx, edge, app, stream)
	if err != nil {
		return fail(err)
	}
	edgeAdmin, err := edge.Addr(ctx, cluster.PortAdmin)
	if err != nil {
		return fail(err)
	}
	file, err := e.TestFile(ctx)
	if err != nil {
		return fail(err)
	}

	// The encoder: A until A closes it, then the origins' balancer.
	var cutDone atomic.Bool
	pubCtx, stopPub := context.WithCancel(ctx)
	pub := &drill.Publisher{Env: e, File: file, Retry: retry, Target: func(int) string {
		if cutDone.Load() {
			return lbURL
		}
		return aURL
	}}
	pub.Start(pubCtx)
	defer func() { stopPub(); pub.Wait() }()
	setup, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, _, err := drill.WaitOwner(setup, ocm, app, stream, func(o string) bool { return o == "origin-a" }); err != nil {
		return fail(fmt.Errorf("the publish on origin A: %w", err))
	}
	if err := drill.WaitPlaylist(setup, eURL.HLS, 2); err != nil {
		return fail(fmt.Errorf("the stream through the edge before the cut: %w", err))
	}

	warm, after := 3*time.Second, 8*time.Second
	total := warm + cut + after
	lg := []*drill.Players{
		{Name: "rtmp", N: players, URL: eURL.RTMP, Duration: total, Gaps: 500 * time.Millisecond},
		{Name: "httpflv", N: players, URL: eURL.FLV, Duration: total, Gaps: 500 * time.Millisecond},
	}
	for _, p := range lg {
		if err := p.Start(ctx, e, "partition-"+name); err != nil {
			return fail(err)
		}
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var wg sync.WaitGroup
	ws := make([]*watcher, players)
	for i := range ws {
		ws[i] = &watcher{url: eURL.FLV}
		wg.Go(func() { ws[i].run(wctx) })
	}
	samples := &pullSampler{url: "http://" + edgeAdmin + "/api/v1/streams", key: app + "/" + stream}
	wg.Go(func() { samples.run(wctx, 150*time.Millisecond) })
	if err := drill.Sleep(ctx, warm); err != nil {
		return fail(err)
	}

	e.Logf("partition/%s: %d RTMP, %d HTTP-FLV and %d watching players on the edge; cutting origin A off the OCM for %v", name, players, players, players, cut)
	t0 := time.Now()
	if err := a.Disconnect(ctx, c.Network()); err != nil {
		return fail(err)
	}
	cutDone.Store(true)
	fig["cut_cmd_ms"] = drill.Ms(time.Since(t0))
	fig["cut_s"] = cut.Seconds()

	during, cancel3 := context.WithTimeout(ctx, cut)
	defer cancel3()
	if _, tB, err := drill.WaitOwner(during, ocm, app, stream, func(o string) bool { return o == "origin-b" }); err == nil {
		fig["cut_to_b_owns_ms"] = drill.Ms(tB.Sub(t0))
	} else {
		res.Check(false, "origin B never became the owner during the partition: %v", err)
	}
	if err := drill.Sleep(ctx, time.Until(t0.Add(cut))); err != nil {
		return fail(err)
	}
	e.Logf("partition/%s: healing: origin A back on the control network", name)
	if err := a.Connect(ctx, c.Network()); err != nil {
		return fail(err)
	}
	healed := time.Now()
	for _, p := range lg {
		p.Summary, p.Err = p.Wait()
	}
	stopWatch()
	wg.Wait()
	if o, _, err := drill.Owner(ctx, ocm, app, stream); err == nil {
		fig["owner_at_end"] = o
	}

	// A fenced: the encoder's connection to A ended (A closed it).
	fenced := time.Duration(-1)
	for _, at := range pub.Attempts() {
		if at.URL == aURL && !at.End.IsZero() && at.End.After(t0) {
			fenced = at.End.Sub(t0)
			break
		}
	}
	fig["cut_to_a_fenced_ms"] = drill.Ms(fenced)
	res.Check(fenced > 0 && fenced < cut, "origin A never closed its publisher during the partition")

	// Players kept and gaps.
	var maxGap time.Duration
	for _, p := range lg {
		if p.Err != nil {
			return fail(p.Err)
		}
		s := p.Summary
		pf := map[string]any{"players": p.N, "kept": s.Kept(), "errors": s.ErrorsTotal, "max_gap_ms": drill.Ms(s.MaxGap())}
		if len(s.FirstErrors) > 0 {
			pf["first_errors"] = s.FirstErrors
		}
		fig[p.Name] = pf
		maxGap = max(maxGap, s.MaxGap())
		res.Check(s.Kept() == int64(p.N), "%s: %d of %d players kept", p.Name, s.Kept(), p.N)
	}

	// One origin at any instant: every video frame any watcher got, in
	// 100 ms instants, by the origin named for it; and the edge's pulls.
	kept, wGap := 0, time.Duration(0)
	var splices int
	var all []frame
	for _, w := range ws {
		frames, sp, err := w.result()
		splices += len(sp)
		if err == nil {
			kept++
		} else {
			e.Logf("partition/%s: a watching player ended: %v", name, err)
		}
		for i, f := range frames {
			if i > 0 {
				wGap = max(wGap, f.At.Sub(frames[i-1].At))
			}
			all = append(all, f)
		}
	}
	two, epochBack, firstB := serving(all, "origin-b")
	pullsTwo, pullsBack, pullsN, pullOwners := samples.check()
	maxGap = max(maxGap, wGap)
	fig["watchers"] = map[string]any{"players": players, "kept": kept, "frames": len(all), "metadata": splices,
		"max_gap_ms": drill.Ms(wGap), "epoch_went_back": epochBack}
	fig["pulls_samples"] = pullsN
	fig["pull_owners"] = pullOwners
	fig["two_serving_instants"] = two + pullsTwo
	fig["max_gap_ms"] = drill.Ms(maxGap)
	if !firstB.IsZero() {
		fig["cut_to_media_b_ms"] = drill.Ms(firstB.Sub(t0))
	}
	fig["healed_after_ms"] = drill.Ms(healed.Sub(t0))
	res.Check(kept == players, "watching players: %d of %d kept", kept, players)
	res.Check(len(all) > 0, "the watching players got no video")
	res.Check(two+pullsTwo == 0, "%d instants with media from two origins (%d) or two pulls (%d)", two+pullsTwo, two, pullsTwo)
	res.Check(epochBack == 0 && pullsBack == 0, "the edge served an older epoch after a newer one: %d frames, %d pulls samples", epochBack, pullsBack)
	res.Check(!firstB.IsZero(), "no player got media from origin B")
	res.Check(pullsN > 0, "no sample of the edge's pulls")

	// The encoder ended up on B.
	var onB bool
	if atts := pub.Attempts(); len(atts) > 0 {
		last := atts[len(atts)-1]
		onB = last.URL == lbURL && last.End.IsZero()
		fig["encoder_attempts"] = len(atts)
	}
	res.Check(onB, "the encoder is not publishing through the balancer at the end")

	var files []string
	for _, n := range []string{"origin-a", "origin-b", "edge"} {
		p := filepath.Join(histDir, n+".jsonl")
		if _, err := os.Stat(p); err != nil {
			return fail(fmt.Errorf("history of %s: %w", n, err))
		}
		files = append(files, p)
	}
	if err := ocmdrill.CheckHistories(e, "partition-"+name, &res, files...); err != nil {
		return fail(err)
	}
	if len(res.Failed) > 0 {
		c.Fail()
	}
	return res, nil
}

// serving checks the frames every player got (in any order): it returns
// the 100 ms instants in which frames from two origins arrived, the frames
// of an older epoch that arrived after one of a newer epoch (a fenced
// owner still served), and when the first frame from origin b arrived.
func serving(frames []frame, b string) (two, back int, firstB time.Time) {
	all := append([]frame(nil), frames...)
	sort.Slice(all, func(i, j int) bool { return all[i].At.Before(all[j].At) })
	origins := map[int64]map[string]bool{}
	var maxEpoch int64
	for _, f := range all {
		n := f.At.UnixNano() / int64(bucket)
		if origins[n] == nil {
			origins[n] = map[string]bool{}
		}
		origins[n][f.Src.Origin] = true
		if f.Src.Origin == b && firstB.IsZero() {
			firstB = f.At
		}
		if f.Src.Epoch < maxEpoch {
			back++
		}
		maxEpoch = max(maxEpoch, f.Src.Epoch)
	}
	for _, set := range origins {
		if len(set) > 1 {
			two++
		}
	}
	return two, back, firstB
}

// pullSampler polls the edge's GET /api/v1/streams and keeps, per sample,
// the owner and epoch of the stream's pulls.
type pullSampler struct {
	url, key string

	mu      sync.Mutex
	samples []pullSample
}

type pullSample struct {
	At     time.Time
	Owners []source // every connected pull of the stream
}

func (s *pullSampler) run(ctx context.Context, every time.Duration) {
	client := &http.Client{Timeout: time.Second}
	for drill.Sleep(ctx, every) == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
		if err != nil {
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		var v struct {
			Pulls []struct {
				Key       string `json:"key"`
				OwnerNode string `json:"owner_node"`
				Epoch     int64  `json:"epoch"`
				Connected bool   `json:"connected"`
			} `json:"pulls"`
		}
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil {
			continue
		}
		sm := pullSample{At: time.Now()}
		for _, p := range v.Pulls {
			if p.Connected && p.OwnerNode != "" && (p.Key == s.key || filepath.Base(filepath.Dir(p.Key))+"/"+filepath.Base(p.Key) == s.key) {
				sm.Owners = append(sm.Owners, source{Origin: p.OwnerNode, Epoch: p.Epoch})
			}
		}
		s.mu.Lock()
		s.samples = append(s.samples, sm)
		s.mu.Unlock()
	}
}

// check returns the samples with two different connected owners, those
// whose epoch is older than an earlier sample's, the number of samples,
// and the owners seen in order ("origin-a@7").
func (s *pullSampler) check() (two, back, n int, owners []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var maxEpoch int64
	for _, sm := range s.samples {
		set := map[string]bool{}
		for _, o := range sm.Owners {
			set[o.Origin] = true
			if o.Epoch < maxEpoch {
				back++
			}
			maxEpoch = max(maxEpoch, o.Epoch)
			name := o.Origin + "@" + strconv.FormatInt(o.Epoch, 10)
			if len(owners) == 0 || owners[len(owners)-1] != name {
				owners = append(owners, name)
			}
		}
		if len(set) > 1 {
			two++
		}
	}
	return two, back, len(s.samples), owners
}
