package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/proctest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// 100 players of one stream through one edge make exactly one upstream
// connection to the origin; HLS through the edge decodes and coalesces; the
// upstream closes after the idle timeout.
func TestFanOutHLSAndIdle(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	o := c.startOrigin("origin-0")
	e := c.startEdge("edge-0")
	c.publish("ffmpeg-pub", "rtmp://"+o.rtmp+"/live/s1")
	c.waitOwner("s1", "origin-0", 15*time.Second)

	t.Run("100 players, one upstream", func(t *testing.T) {
		start := time.Now()
		var (
			mu      sync.Mutex
			players []*player
			errs    []error
			wg      sync.WaitGroup
		)
		for i := range 100 {
			url := "rtmp://" + e.rtmp + "/live/s1"
			if i%2 == 1 {
				url = "http://" + e.http + "/live/s1.flv"
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := startPlayer(url)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				players = append(players, p)
			}()
		}
		wg.Wait()
		defer func() {
			for _, p := range players {
				p.stop()
			}
		}()
		if len(errs) > 0 {
			t.Fatalf("%d of 100 players failed; first: %v", len(errs), errs[0])
		}
		t.Logf("100 players playing after %v", time.Since(start))
		time.Sleep(2 * time.Second) // let them play; a second upstream would show now
		if n := countPlayers(t, o, "s1"); n != 1 {
			t.Fatalf("origin lists %d players of s1, want exactly 1 (the edge's upstream): %v", n, originClients(t, o))
		}
		for i, p := range players {
			st := p.stats()
			if st.err != nil || st.packets < 30 {
				t.Fatalf("player %d: %+v", i, st)
			}
		}
		if got := metric(t, e.admin, "livecluster_edge_players", `protocol="rtmp"`); got != 50 {
			t.Errorf("edge rtmp players metric = %v, want 50", got)
		}
		if got := metric(t, e.admin, "livecluster_edge_players", `protocol="flv"`); got != 50 {
			t.Errorf("edge flv players metric = %v, want 50", got)
		}
		if got := metric(t, e.admin, "livecluster_edge_upstreams"); got != 1 {
			t.Errorf("edge upstreams metric = %v, want 1", got)
		}
	})

	t.Run("idle upstream closes", func(t *testing.T) {
		// The players above are gone; idleTimeout is 1.5 s.
		gone := time.Now()
		waitFor(t, "edge's upstream to close", 10*time.Second, func() bool { return countPlayers(t, o, "s1") == 0 })
		idle := time.Since(gone)
		t.Logf("upstream closed %v after the last player left (idleTimeout 1.5s)", idle)
		if idle < 1200*time.Millisecond {
			t.Fatalf("upstream closed after %v, before the idle timeout", idle)
		}
		if got := metric(t, e.admin, "livecluster_edge_upstreams"); got != 0 {
			t.Errorf("edge upstreams metric = %v, want 0", got)
		}
	})

	t.Run("HLS through the edge", func(t *testing.T) {
		ffprobe := proctest.Tool(t, "LIVECLUSTER_FFPROBE", "ffprobe")
		url := "http://" + e.http + "/live/s1.m3u8"
		waitFor(t, "origin playlist with 2 segments", 20*time.Second, func() bool {
			body, code := get(url)
			return code == 200 && strings.Count(body, ".ts") >= 2
		})
		out, err := exec.Command(ffprobe, "-v", "error", "-show_entries", "stream=codec_name",
			"-of", "csv=p=0", url).CombinedOutput()
		if err != nil {
			t.Fatalf("ffprobe %s: %v\n%s", url, err, out)
		}
		if !strings.Contains(string(out), "h264") || !strings.Contains(string(out), "aac") {
			t.Fatalf("ffprobe through the edge: %s", out)
		}
		ffmpeg := c.ffmpeg
		if out, err := exec.Command(ffmpeg, "-v", "error", "-i", url, "-t", "3", "-f", "null", "-").CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg decode through the edge: %v\n%s", err, out)
		}

		// 50 concurrent requests for a segment no one fetched yet.
		var seg string
		waitFor(t, "a fresh segment", 10*time.Second, func() bool {
			body, _ := get(url)
			segs := regexp.MustCompile(`(?m)^s1-\d+\.ts$`).FindAllString(body, -1)
			if len(segs) == 0 {
				return false
			}
			last := segs[len(segs)-1]
			if last == seg {
				return false
			}
			if seg == "" {
				seg = last // wait for the next one: nobody has asked for it
				return false
			}
			seg = last
			return true
		})
		before := metric(t, o.admin, "livecluster_origin_hls_requests_total", `kind="segment"`)
		hitsBefore := metric(t, e.admin, "livecluster_edge_hls_cache_requests_total", `kind="segment"`, `result="miss"`)
		var wg sync.WaitGroup
		bodies := make([]string, 50)
		codes := make([]int, 50)
		startGate := make(chan struct{})
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-startGate
				bodies[i], codes[i] = get("http://" + e.http + "/live/" + seg)
			}()
		}
		close(startGate)
		wg.Wait()
		for i := range 50 {
			if codes[i] != 200 || bodies[i] != bodies[0] || len(bodies[i]) < 1000 {
				t.Fatalf("request %d: %d, %d bytes (first: %d bytes)", i, codes[i], len(bodies[i]), len(bodies[0]))
			}
		}
		after := metric(t, o.admin, "livecluster_origin_hls_requests_total", `kind="segment"`)
		misses := metric(t, e.admin, "livecluster_edge_hls_cache_requests_total", `kind="segment"`, `result="miss"`) - hitsBefore
		t.Logf("50 concurrent requests for %s: origin served %v segment requests, edge misses %v, hit ratio %.2f",
			seg, after-before, misses, metric(t, e.admin, "livecluster_edge_hls_cache_hit_ratio"))
		// One, or none when the edge prefetched it as it appeared.
		if after-before > 1 {
			t.Fatalf("origin served %v segment requests for 50 concurrent edge requests, want at most 1", after-before)
		}
		// The playlist is cached at most half a target duration (1 s here).
		b1, _ := get(url)
		time.Sleep(2 * time.Second)
		b2, _ := get(url)
		if b1 == b2 {
			t.Fatalf("playlist did not change in 2 s through the edge:\n%s", b1)
		}
	})

	t.Run("bare TCP connect-and-close logs no error", func(t *testing.T) {
		for _, a := range []string{e.rtmp, e.http, e.admin} {
			conn, err := net.Dial("tcp", a)
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
		}
		time.Sleep(300 * time.Millisecond)
		for _, l := range strings.Split(e.Output(), "\n") {
			if strings.Contains(l, `"level":"ERROR"`) {
				t.Fatalf("edge logged an error: %s", l)
			}
		}
	})
}

func get(url string) (string, int) {
	resp, err := http.Get(url)
	if err != nil {
		return err.Error(), 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

// A player of a stream that is not published gets 404 / StreamNotFound
// after the wait timeout; one whose stream appears during the wait plays.
func TestWaitForStream(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	o := c.startOrigin("origin-0")
	e := c.startEdge("edge-0")

	start := time.Now()
	body, code := get("http://" + e.http + "/live/nobody.flv")
	waited := time.Since(start)
	t.Logf("HTTP-FLV of an unpublished stream: %d after %v: %s", code, waited, strings.TrimSpace(body))
	if code != 404 || waited < 1800*time.Millisecond || waited > 6*time.Second {
		t.Fatalf("want 404 after the 2 s wait timeout, got %d after %v", code, waited)
	}
	start = time.Now()
	_, err := startPlayer("rtmp://" + e.rtmp + "/live/nobody")
	waited = time.Since(start)
	t.Logf("RTMP play of an unpublished stream: %v after %v", err, waited)
	if err == nil || !strings.Contains(err.Error(), "NetStream.Play.StreamNotFound") || waited < 1800*time.Millisecond {
		t.Fatalf("want StreamNotFound after the wait timeout, got %v after %v", err, waited)
	}

	// A stream published while the player waits plays.
	type res struct {
		p   *player
		err error
		at  time.Duration
	}
	results := make(chan res, 2)
	start = time.Now()
	for _, u := range []string{"rtmp://" + e.rtmp + "/live/late", "http://" + e.http + "/live/late.flv"} {
		go func() {
			p, err := startPlayer(u)
			results <- res{p, err, time.Since(start)}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	c.publish("ffmpeg-late", "rtmp://"+o.rtmp+"/live/late")
	var late []*player
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatalf("player of a stream published during the wait: %v", r.err)
		}
		t.Logf("player of a stream published 300ms into the wait got its first packet after %v", r.at)
		late = append(late, r.p)
	}

	// Graceful drain of the edge: readiness fails at once, the edge waits
	// for its players, then exits 0.
	e.Signal(syscall.SIGTERM)
	drainAt := time.Now()
	proctest.WaitHTTP(t, "http://"+e.admin+"/readyz", 503, 2*time.Second)
	time.Sleep(time.Second)
	if e.Exited() {
		t.Fatalf("edge exited with players still connected")
	}
	for _, p := range late {
		if st := p.stats(); st.err != nil {
			t.Fatalf("player lost during the drain's wait: %v", st.err)
		}
		p.stop()
	}
	if code := e.Wait(10 * time.Second); code != 0 {
		t.Fatalf("edge exited %d after a graceful drain", code)
	}
	t.Logf("edge drained and exited %v after SIGTERM (players left after ~1s)", time.Since(drainAt))
	if len(logLines(e.Proc, "deregistered from the OCM")) == 0 {
		t.Errorf("edge did not deregister")
	}
}

// With the OCM gone, an owner the edge has cached keeps serving new players;
// a stream it never saw fails clearly; readiness stays.
func TestOCMUnreachable(t *testing.T) {
	t.Parallel()
	// The origin fences its streams TTL minus its margin (8 s here) after
	// its last renewal: the checks below run well inside that.
	c := newClusterTTL(t, "10s")
	o := c.startOrigin("origin-0")
	e := c.startEdge("edge-0")
	c.publish("ffmpeg-pub", "rtmp://"+o.rtmp+"/live/cached")
	c.waitOwner("cached", "origin-0", 15*time.Second)
	var p *player
	var err error
	waitFor(t, "first play", 10*time.Second, func() bool {
		p, err = startPlayer("rtmp://" + e.rtmp + "/live/cached")
		return err == nil
	})
	p.stop()
	waitFor(t, "idle upstream to close", 10*time.Second, func() bool { return countPlayers(t, o, "cached") == 0 })

	c.ocm.Signal(syscall.SIGKILL)
	c.ocm.Wait(5 * time.Second)
	time.Sleep(2200 * time.Millisecond) // past the 2 s a looked-up owner counts as fresh

	p, err = startPlayer("http://" + e.http + "/live/cached.flv")
	if err != nil {
		t.Fatalf("player of a cached stream with the OCM down: %v", err)
	}
	p.stop()
	if got := metric(t, e.admin, "livecluster_edge_owner_lookups_total", `result="stale"`); got < 1 {
		t.Errorf("stale lookups metric = %v, want >= 1", got)
	}
	start := time.Now()
	body, code := get("http://" + e.http + "/live/never.flv")
	t.Logf("unknown stream with the OCM down: %d after %v: %s", code, time.Since(start), strings.TrimSpace(body))
	if code == 200 || !strings.Contains(body, "OCM unreachable") {
		t.Fatalf("want a clear failure naming the OCM, got %d: %s", code, body)
	}
	body, code = get("http://" + e.http + "/live/never.m3u8")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "OCM unreachable") {
		t.Fatalf("HLS of an unknown stream with the OCM down: %d %s", code, body)
	}
	proctest.WaitHTTP(t, "http://"+e.admin+"/readyz", 200, time.Second)
}

// A publish through an edge is forwarded to an origin (FORWARDED by the
// edge); players on another edge play it. Draining that origin moves the
// forward make-before-break to the other origin, and 20 players stay
// connected with monotonic timestamps and a short gap.
func TestForwardAndDrain(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	o0 := c.startOrigin("origin-0")
	o1 := c.startOrigin("origin-1")
	origins := map[string]*node{o0.id: o0, o1.id: o1}
	ePub := c.startEdge("edge-pub")
	ePlay := c.startEdge("edge-play")

	pub := c.publish("ffmpeg-pub", "rtmp://"+ePub.rtmp+"/live/fw")
	resp := c.waitOwner("fw", "", 15*time.Second)
	st := resp.GetStream()
	if st.GetPublishPath() != ocmv1.PublishPath_PUBLISH_PATH_FORWARDED || st.GetForwardedBy() != "edge-pub" {
		t.Fatalf("stream record %v: want FORWARDED by edge-pub", st)
	}
	owner := origins[st.GetOwnerNodeId()]
	other := o0
	if owner == o0 {
		other = o1
	}
	t.Logf("publish through edge-pub landed on %s (epoch %d)", owner.id, st.GetEpoch())
	waitFor(t, "forwarded publishes metric = 1", 5*time.Second, func() bool {
		return metric(t, ePub.admin, "livecluster_edge_forwarded_publishes") == 1
	})

	// Directly from the owner, too.
	// (The origin claims the stream before its first packet arrives.)
	var direct *player
	var err error
	waitFor(t, "direct play from the owner", 10*time.Second, func() bool {
		direct, err = startPlayer("rtmp://" + owner.rtmp + "/live/fw")
		return err == nil
	})
	direct.stop()

	var players []*player
	for i := range 20 {
		u := "rtmp://" + ePlay.rtmp + "/live/fw"
		if i%2 == 1 {
			u = "http://" + ePlay.http + "/live/fw.flv"
		}
		p, err := startPlayer(u)
		if err != nil {
			t.Fatalf("player %d: %v", i, err)
		}
		players = append(players, p)
	}
	defer func() {
		for _, p := range players {
			p.stop()
		}
	}()
	time.Sleep(2 * time.Second)
	for _, p := range players {
		p.resetGap()
	}

	// Drain the owner: the forward moves to the other origin, the players'
	// upstream follows the new owner.
	drainAt := time.Now()
	owner.Signal(syscall.SIGTERM)
	moved := c.waitOwner("fw", other.id, 20*time.Second)
	t.Logf("owner moved to %s %v after SIGTERM (epoch %d, %v)", other.id, time.Since(drainAt),
		moved.GetStream().GetEpoch(), moved.GetStream().GetPublishPath())
	if moved.GetStream().GetForwardedBy() != "edge-pub" {
		t.Errorf("moved stream forwarded_by = %q", moved.GetStream().GetForwardedBy())
	}
	waitFor(t, "edge-play to switch upstream", 15*time.Second, func() bool {
		return len(logLines(ePlay.Proc, "upstream switched")) > 0
	})
	// Media arrives after the switch, within a bound: a gap is measured
	// only between packets that arrive, so without this a player that
	// stopped receiving at the switch would pass. 2 s of media (the test
	// stream has ~73 packets a second) within 5 s.
	flowsAfter(t, players, counts(players), 140, 5*time.Second)
	if code := owner.Wait(30 * time.Second); code != 0 {
		t.Errorf("drained origin exited %d", code)
	}
	if pub.Exited() {
		t.Fatalf("the publisher was disconnected by the move:\n%s", pub.Output())
	}

	for _, l := range logLines(ePub.Proc, "forwarded publish moved") {
		t.Logf("edge-pub: forwarded publish moved %v -> %v in %v ms", l["from"], l["to"], l["move_ms"])
	}
	// The move was triggered by the watch event (the owner's DRAINING PUT),
	// not by the poll or a broken connection, within well under a second
	// of the origin's Drain at the OCM.
	drained := logLines(owner.Proc, "marked DRAINING at the OCM")
	moving := logLines(ePub.Proc, "moving forwarded publish")
	if len(drained) != 1 || len(moving) != 1 {
		t.Fatalf("%d drain log lines on %s, %d move log lines on edge-pub; want 1 and 1", len(drained), owner.id, len(moving))
	}
	if r := moving[0]["reason"]; r != "owner draining" {
		t.Errorf("forward moved for reason %q, want \"owner draining\"", r)
	}
	drainedAt, err1 := time.Parse(time.RFC3339Nano, fmt.Sprint(drained[0]["time"]))
	movingAt, err2 := time.Parse(time.RFC3339Nano, fmt.Sprint(moving[0]["time"]))
	if err1 != nil || err2 != nil {
		t.Fatalf("log times: %v, %v", err1, err2)
	}
	react := movingAt.Sub(drainedAt)
	t.Logf("edge-pub started moving the forward %v after %s was marked DRAINING at the OCM", react, owner.id)
	if react > 500*time.Millisecond {
		t.Errorf("forward move started %v after the drain, want well under a second (< 500ms)", react)
	}
	sw := logLines(ePlay.Proc, "upstream switched")[0]
	dialMS, _ := sw["dial_ms"].(float64)
	switchMS, _ := sw["switch_ms"].(float64)
	var worst time.Duration
	for i, p := range players {
		s := p.stats()
		if s.err != nil {
			t.Errorf("player %d disconnected: %v", i, s.err)
		}
		if s.backwards > 0 {
			t.Errorf("player %d saw timestamps go backwards %d times", i, s.backwards)
		}
		worst = max(worst, s.maxGap)
	}
	allowed := time.Duration(dialMS)*time.Millisecond + time.Second
	t.Logf("switch: reason=%v dial_ms=%v switch_ms=%v; worst player gap %v (allowed %v)",
		sw["reason"], dialMS, switchMS, worst, allowed)
	if worst > allowed {
		t.Errorf("players paused %v, more than 1 s beyond the new upstream's start (%v)", worst, time.Duration(dialMS)*time.Millisecond)
	}
	if n := countPlayers(t, other, "fw"); n != 1 {
		t.Errorf("new owner lists %d players of fw, want 1 (edge-play's upstream)", n)
	}
	if got := metric(t, ePlay.admin, "livecluster_edge_upstream_switches_total"); got < 1 {
		t.Errorf("upstream switches metric = %v", got)
	}
	if got := metric(t, ePub.admin, "livecluster_edge_forward_moves_total", `result="ok"`); got != 1 {
		t.Errorf("forward moves metric = %v, want 1", got)
	}
}

// The publisher goes away and comes back on the other origin: players stay
// connected through the gap and timestamps stay monotonic.
func TestRepublishElsewhere(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	o0 := c.startOrigin("origin-0")
	o1 := c.startOrigin("origin-1")
	e := c.startEdge("edge-0")
	pub := c.publish("ffmpeg-0", "rtmp://"+o0.rtmp+"/live/rp")
	c.waitOwner("rp", "origin-0", 15*time.Second)
	var players []*player
	for i := range 20 {
		u := "rtmp://" + e.rtmp + "/live/rp"
		if i%2 == 1 {
			u = "http://" + e.http + "/live/rp.flv"
		}
		p, err := startPlayer(u)
		if err != nil {
			t.Fatalf("player %d: %v", i, err)
		}
		players = append(players, p)
	}
	defer func() {
		for _, p := range players {
			p.stop()
		}
	}()
	time.Sleep(time.Second)
	pub.Signal(syscall.SIGKILL)
	killed := time.Now()
	c.waitNotOwned("rp", 10*time.Second)
	c.publish("ffmpeg-1", "rtmp://"+o1.rtmp+"/live/rp")
	c.waitOwner("rp", "origin-1", 15*time.Second)
	waitFor(t, "edge to switch upstream", 10*time.Second, func() bool {
		return len(logLines(e.Proc, "upstream switched")) > 0
	})
	t.Logf("republished on origin-1; edge spliced %v after the kill", time.Since(killed))
	// Media arrives after the switch, within a bound (a gap is measured
	// only between packets that arrive): 2 s of media within 5 s.
	flowsAfter(t, players, counts(players), 140, 5*time.Second)
	for i, p := range players {
		s := p.stats()
		if s.err != nil {
			t.Errorf("player %d disconnected: %v", i, s.err)
		}
		if s.backwards > 0 {
			t.Errorf("player %d: timestamps went backwards %d times", i, s.backwards)
		}
		if i == 0 {
			t.Logf("player 0: %d packets, %d codec header resends, longest pause %v", s.packets, s.codecResets, s.maxGap)
		}
	}
	sw := logLines(e.Proc, "upstream switched")[0]
	t.Logf("switch: %v", fmt.Sprint(sw["reason"], " dial_ms=", sw["dial_ms"], " switch_ms=", sw["switch_ms"]))
}

func (c *cluster) waitNotOwned(name string, timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, name+" released", timeout, func() bool {
		_, err := c.lookup(name)
		return err != nil && strings.Contains(err.Error(), "NotFound")
	})
}
