package hlsproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/livecluster/livecluster/edge/internal/directory"
	"github.com/livecluster/livecluster/streamkey"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		path, key, kind string
		ok              bool
	}{
		{"/live/s1.m3u8", "default/live/s1", KindPlaylist, true},
		{"/live/s1-12.ts", "default/live/s1", KindSegment, true},
		{"/live/a-b-3.ts?vhost=v", "v/live/a-b", KindSegment, true},
		{"/live/s1.ts", "", "", false},
		{"/live/s1-x.ts", "", "", false},
		{"/live/../x.m3u8", "", "", false},
		{"/s1.m3u8", "", "", false},
	} {
		r := httptest.NewRequest("GET", tc.path, nil)
		k, _, kind, err := parse(r)
		if (err == nil) != tc.ok || tc.ok && (k.String() != tc.key || kind != tc.kind) {
			t.Errorf("parse(%q) = %v %q %v", tc.path, k, kind, err)
		}
	}
}

func TestTargetDuration(t *testing.T) {
	if d := targetDuration([]byte("#EXTM3U\n#EXT-X-TARGETDURATION:4\n")); d != 4*time.Second {
		t.Fatalf("got %v", d)
	}
	if d := targetDuration([]byte("#EXTM3U\n")); d != time.Second {
		t.Fatalf("got %v", d)
	}
}

// tsBytes makes one second of real MPEG-TS with ffmpeg: the segments the
// test origins serve.
func tsBytes(t *testing.T) []byte {
	t.Helper()
	ffmpeg := os.Getenv("LIVECLUSTER_FFMPEG")
	if ffmpeg == "" {
		ffmpeg = "ffmpeg"
	}
	if _, err := exec.LookPath(ffmpeg); err != nil {
		t.Skipf("ffmpeg not found: %v", err)
	}
	out := filepath.Join(t.TempDir(), "seg.ts")
	cmd := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
		"-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-f", "mpegts", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make a TS segment: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// upstream is an origin's HLS as the test sets it: a playlist of segments
// name-{seq}.ts (seq from first), each a real TS segment followed by its
// own path in a TS-sized trailer, so a test can tell which origin segment
// the edge served.
type upstream struct {
	srv *httptest.Server
	ts  []byte
	tag string // before the path in the trailer: which origin served it

	mu       sync.Mutex
	first    int64
	n        int
	disc     map[int64]bool // EXT-X-DISCONTINUITY before seq
	ended    bool
	noList   bool // the playlist answers 404 (no segment written yet)
	delay    time.Duration
	requests map[string]int
}

func newUpstream(t *testing.T, ts []byte) *upstream {
	u := &upstream{ts: ts, disc: map[int64]bool{}, requests: map[string]int{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) host() string { return strings.TrimPrefix(u.srv.URL, "http://") }

// set replaces the playlist: n segments from first.
func (u *upstream) set(first int64, n int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.first, u.n, u.noList = first, n, false
}

func (u *upstream) count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests[path]
}

func (u *upstream) segBody(path string) []byte {
	trailer := make([]byte, 188)
	copy(trailer, u.tag+path)
	return append(append([]byte{}, u.ts...), trailer...)
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.requests[r.URL.Path]++
	first, n, ended, noList, delay := u.first, u.n, u.ended, u.noList, u.delay
	disc := map[int64]bool{}
	for k, v := range u.disc {
		disc[k] = v
	}
	u.mu.Unlock()
	time.Sleep(delay)
	app, file, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	name, isList := strings.CutSuffix(file, ".m3u8")
	if isList {
		if noList {
			http.NotFound(w, r)
			return
		}
		var b strings.Builder
		fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:%d\n", first)
		for i := range int64(n) {
			if disc[first+i] {
				b.WriteString("#EXT-X-DISCONTINUITY\n")
			}
			fmt.Fprintf(&b, "#EXTINF:1.000,\n%s-%d.ts\n", name, first+i)
		}
		if ended {
			b.WriteString("#EXT-X-ENDLIST\n")
		}
		w.Header().Set("Content-Type", playlistType)
		io.WriteString(w, b.String())
		return
	}
	base := strings.TrimSuffix(file, ".ts")
	seq, err := strconv.ParseInt(base[strings.LastIndexByte(base, '-')+1:], 10, 64)
	if app != "live" || err != nil || seq < first-4 || seq >= first+int64(n) {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "video/mp2t")
	w.Write(u.segBody(r.URL.Path))
}

// owners is the test's directory: who owns the stream now (nil: nobody).
type owners struct {
	mu sync.Mutex
	o  *directory.Owner
}

func (o *owners) set(node string, epoch int64, u *upstream) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if u == nil {
		o.o = nil
		return
	}
	o.o = &directory.Owner{NodeID: node, Epoch: epoch, RTMP: u.host(), HTTP: u.host()}
}

func (o *owners) resolve(context.Context, streamkey.Key) (*directory.Owner, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.o == nil {
		return nil, directory.ErrNotFound
	}
	return o.o, nil
}

func newTestProxy(o *owners, opts Options) (*Proxy, *Metrics) {
	m := NewMetrics(prometheus.NewRegistry())
	opts.Resolve, opts.Metrics = o.resolve, m
	if opts.MaxPlaylistTTL == 0 {
		opts.MaxPlaylistTTL = time.Nanosecond // every request refreshes
	}
	return New(opts), m
}

func fetch(t *testing.T, h http.Handler, path string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// edgeList is a parsed edge playlist.
type edgeList struct {
	mediaSeq, discSeq int64
	uris              []string
	disc              []bool
	ended             bool
}

func parseEdge(t *testing.T, body string) edgeList {
	t.Helper()
	var l edgeList
	var d bool
	for _, line := range strings.Split(body, "\n") {
		switch {
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			l.mediaSeq, _ = strconv.ParseInt(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
		case strings.HasPrefix(line, "#EXT-X-DISCONTINUITY-SEQUENCE:"):
			l.discSeq, _ = strconv.ParseInt(strings.TrimPrefix(line, "#EXT-X-DISCONTINUITY-SEQUENCE:"), 10, 64)
		case line == "#EXT-X-DISCONTINUITY":
			d = true
		case line == "#EXT-X-ENDLIST":
			l.ended = true
		case line != "" && !strings.HasPrefix(line, "#"):
			l.uris, l.disc = append(l.uris, line), append(l.disc, d)
			d = false
		}
	}
	if _, err := parsePlaylist([]byte(body)); err != nil {
		t.Fatalf("edge playlist does not parse: %v\n%s", err, body)
	}
	return l
}

// player polls the edge playlist as an HLS player does and checks what
// no player may ever see: an error, a media sequence that goes back, or a
// segment name that changes meaning (another position in the sequence, or
// other bytes).
type player struct {
	t       *testing.T
	h       http.Handler
	lastSeq int64
	bytes   map[string]string // segment URI -> body first served
	discNum map[string]int64  // segment URI -> its discontinuity sequence number
	lists   []edgeList
}

func newPlayer(t *testing.T, h http.Handler) *player {
	return &player{t: t, h: h, lastSeq: -1, bytes: map[string]string{}, discNum: map[string]int64{}}
}

func (p *player) poll() edgeList {
	p.t.Helper()
	code, body := fetch(p.t, p.h, "/live/s.m3u8")
	if code != 200 {
		p.t.Fatalf("playlist: %d %q", code, body)
	}
	l := parseEdge(p.t, body)
	if l.mediaSeq < p.lastSeq {
		p.t.Fatalf("media sequence went back from %d to %d:\n%s", p.lastSeq, l.mediaSeq, body)
	}
	p.lastSeq = l.mediaSeq
	dn := l.discSeq
	for i, uri := range l.uris {
		// A segment keeps its discontinuity sequence number from playlist
		// to playlist (DISCONTINUITY-SEQUENCE counts the tags that left).
		if l.disc[i] {
			dn++
		}
		if prev, ok := p.discNum[uri]; ok && prev != dn {
			p.t.Fatalf("segment %s: discontinuity sequence number %d, was %d:\n%s", uri, dn, prev, body)
		}
		p.discNum[uri] = dn
		if want := fmt.Sprintf("s-%d.ts", l.mediaSeq+int64(i)); uri != want {
			p.t.Fatalf("segment %d is %q, want %q", i, uri, want)
		}
		code, b := fetch(p.t, p.h, "/live/"+uri)
		if code != 200 {
			p.t.Fatalf("segment %s: %d %q", uri, code, b)
		}
		if prev, ok := p.bytes[uri]; ok && prev != b {
			p.t.Fatalf("segment %s changed its bytes", uri)
		}
		p.bytes[uri] = b
	}
	p.lists = append(p.lists, l)
	return l
}

// source returns the origin path the edge segment uri was served from.
func (p *player) source(uri string) string {
	b := p.bytes[uri]
	return strings.TrimRight(b[len(b)-188:], "\x00")
}

// TestOwnerSwitch: origin A (drained: it ends its playlist) hands the
// stream to origin B, which numbers its segments above A's and has no
// playlist at first; A dies in between. The player sees one growing
// sequence, a DISCONTINUITY at the join, no error, stable segment names.
func TestOwnerSwitch(t *testing.T) {
	ts := tsBytes(t)
	a, b := newUpstream(t, ts), newUpstream(t, ts)
	var o owners
	o.set("origin-a", 7, a)
	// Holds far longer than the test needs: it polls three times while the
	// stream is unowned, which under load took longer than a 1 s EndHold.
	p, m := newTestProxy(&o, Options{Hold: 30 * time.Second, EndHold: 30 * time.Second})
	pl := newPlayer(t, p)

	a.set(10, 6)
	l := pl.poll()
	if l.mediaSeq != 10 || len(l.uris) != 6 || l.disc[0] {
		t.Fatalf("first playlist %+v: want the origin's numbers 10..15, no discontinuity", l)
	}
	a.set(11, 6) // a new segment: 16
	a.mu.Lock()
	a.ended = true // A's publisher moved away: A ends its playlist
	a.mu.Unlock()
	if l = pl.poll(); l.ended || l.uris[len(l.uris)-1] != "s-16.ts" {
		t.Fatalf("after A's last segment %+v: want s-16 last and ENDLIST held back", l)
	}
	// Nobody owns the stream, then A is gone for good.
	o.set("", 0, nil)
	a.srv.Close()
	for range 3 {
		if l = pl.poll(); l.mediaSeq != 11 || l.ended {
			t.Fatalf("while unowned %+v: want the last good playlist", l)
		}
	}
	// B owns it but has no playlist yet.
	b.mu.Lock()
	b.noList = true
	b.mu.Unlock()
	o.set("origin-b", 8, b)
	pl.poll()
	// B's first segments, numbered above A's (media/hls StartSeq): the
	// playlist cannot hold the gap, so it moves on to them.
	b.set(1000, 2)
	l = pl.poll()
	if l.mediaSeq != 1000 || len(l.uris) != 2 || !l.disc[0] || l.disc[1] || l.discSeq != 0 {
		t.Fatalf("after the switch %+v: want s-1000 (DISCONTINUITY), s-1001", l)
	}
	if src := pl.source("s-1000.ts"); src != "/live/s-1000.ts" {
		t.Fatalf("s-1000.ts served from %s, want B's /live/s-1000.ts", src)
	}
	// A's last segment stays fetchable for a player with the old playlist.
	if code, body := fetch(t, p, "/live/s-16.ts"); code != 200 || !strings.Contains(body, "/live/s-16.ts") {
		t.Fatalf("A's s-16.ts after the switch: %d", code)
	}
	// The window slides on B; the discontinuity sequence counts the join
	// once it left the playlist.
	b.set(1002, 6)
	l = pl.poll()
	if l.mediaSeq != 1002 || l.discSeq != 1 || l.disc[0] || l.uris[len(l.uris)-1] != "s-1007.ts" {
		t.Fatalf("later %+v: want s-1002..s-1007, discontinuity sequence 1", l)
	}
	if v := testutil.ToFloat64(m.Discontinuities); v != 1 {
		t.Fatalf("discontinuities metric %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.Held); v < 4 {
		t.Fatalf("held metric %v, want >= 4", v)
	}
	for _, code := range []string{"404", "502", "503"} {
		if v := testutil.ToFloat64(m.Responses.WithLabelValues(KindPlaylist, code)) +
			testutil.ToFloat64(m.Responses.WithLabelValues(KindSegment, code)); v != 0 {
			t.Fatalf("%v answers with %s", v, code)
		}
	}
}

// TestTwoEdgesAgree: two edges over the same origins, polling at different
// times (the second one so rarely that it misses segments), through a crash
// of the owner (A, its successor B numbering above it after a hold with no
// owner) and a drain (B ends its playlist, C takes over): both edges name
// the same origin bytes with the same number, neither goes back (the
// players check), and both mark the owner changes with a discontinuity.
func TestTwoEdgesAgree(t *testing.T) {
	ts := tsBytes(t)
	a, b, c := newUpstream(t, ts), newUpstream(t, ts), newUpstream(t, ts)
	a.tag, b.tag, c.tag = "A", "B", "C"
	var o owners
	p1, _ := newTestProxy(&o, Options{Hold: time.Minute, EndHold: time.Minute})
	p2, _ := newTestProxy(&o, Options{Hold: time.Minute, EndHold: time.Minute})
	e1, e2 := newPlayer(t, p1), newPlayer(t, p2)
	step := 0
	// run moves u's window of 6 on by one segment n times from first;
	// edge 1 polls every step, edge 2 at the first and every third,
	// skipping skip2 steps.
	run := func(u *upstream, first int64, n, skip2 int) {
		for i := range n {
			u.set(first+int64(i), 6)
			e1.poll()
			if step++; i == 0 || step%3 == 0 && (i < n/2 || i >= n/2+skip2) {
				e2.poll()
			}
		}
	}
	o.set("origin-a", 7, a)
	run(a, 10, 20, 8) // edge 2 misses 8 steps: more than the window
	a.srv.Close()     // A crashes; nobody owns the stream for a while
	o.set("", 0, nil)
	e1.poll()
	e2.poll()
	o.set("origin-b", 9, b)
	run(b, 1000, 10, 0)
	b.mu.Lock()
	b.ended = true // B is drained: its publisher moved to C
	b.mu.Unlock()
	e1.poll()
	o.set("origin-c", 12, c)
	run(c, 5000, 10, 0)
	e2.poll()
	// A player with edge 1's newer playlist asks edge 2 for its newest
	// segment (a load balancer without stickiness): edge 2 refreshes and
	// serves the same bytes.
	c.set(5010, 6)
	l := e1.poll()
	newest := l.uris[len(l.uris)-1]
	if code, body := fetch(t, p2, "/live/"+newest); code != 200 || body != e1.bytes[newest] {
		t.Errorf("edge 2's %s: %d, want edge 1's bytes", newest, code)
	}

	if len(e1.bytes) == 0 || len(e2.bytes) == 0 {
		t.Fatal("no segments")
	}
	common := 0
	for uri, b1 := range e1.bytes {
		if b2, ok := e2.bytes[uri]; ok {
			common++
			if b1 != b2 {
				t.Errorf("%s: edge 1 served %s, edge 2 %s", uri, e1.source(uri), e2.source(uri))
			}
		}
	}
	if common < 20 {
		t.Errorf("only %d segments in common", common)
	}
	for i, e := range []*player{e1, e2} {
		for _, first := range []string{"s-1000.ts", "s-5000.ts"} {
			if src := e.source(first); src != map[string]string{"s-1000.ts": "B/live/s-1000.ts", "s-5000.ts": "C/live/s-5000.ts"}[first] {
				t.Errorf("edge %d: %s from %q", i+1, first, src)
			}
			marked := false
			for _, l := range e.lists {
				for j, uri := range l.uris {
					marked = marked || uri == first && l.disc[j]
				}
			}
			if !marked {
				t.Errorf("edge %d: no DISCONTINUITY before %s", i+1, first)
			}
		}
	}
}

// TestOriginRestart: an owner whose numbering goes back (an origin of
// an older version restarted, or a stream that moved again within
// media/hls.MinTenure) is not followed back: its segments are skipped until
// its numbers pass the edge's. A discontinuity the origin marks itself is
// passed on, and segments the edge never saw make the playlist move on.
func TestOriginRestart(t *testing.T) {
	ts := tsBytes(t)
	a := newUpstream(t, ts)
	var o owners
	o.set("origin-a", 1, a)
	p, _ := newTestProxy(&o, Options{})
	pl := newPlayer(t, p)
	a.set(100, 3)
	pl.poll() // s-100..s-102
	a.set(0, 1)
	l := pl.poll()
	if l.mediaSeq != 100 || len(l.uris) != 3 || l.uris[2] != "s-102.ts" {
		t.Fatalf("after a restart at 0 %+v: want s-100..s-102 unchanged", l)
	}
	if src := pl.source("s-102.ts"); src != "/live/s-102.ts" {
		t.Fatalf("s-102.ts now from %s", src)
	}
	a.set(101, 3)
	a.mu.Lock()
	a.disc[103] = true // the origin marks a republish itself
	a.mu.Unlock()
	l = pl.poll()
	if last := l.uris[len(l.uris)-1]; last != "s-103.ts" || !l.disc[len(l.disc)-1] || l.mediaSeq != 100 {
		t.Fatalf("origin's discontinuity %+v: want s-103.ts with DISCONTINUITY", l)
	}
	// Segments the edge never saw (it polled too rarely): the playlist
	// moves on to the new ones, with a discontinuity.
	a.set(110, 2)
	l = pl.poll()
	if l.mediaSeq != 110 || len(l.uris) != 2 || !l.disc[0] || l.disc[1] || l.discSeq != 1 {
		t.Fatalf("after a gap %+v: want s-110 (DISCONTINUITY), s-111, discontinuity sequence 1 (s-103's)", l)
	}
}

// TestEndlist: an origin's ENDLIST reaches players once it stood for
// EndHold with no new owner; after Hold without an owner the stream is
// gone (404) and its segments too.
func TestEndlist(t *testing.T) {
	ts := tsBytes(t)
	a := newUpstream(t, ts)
	var o owners
	o.set("origin-a", 1, a)
	p, _ := newTestProxy(&o, Options{Hold: time.Second, EndHold: 300 * time.Millisecond})
	pl := newPlayer(t, p)
	a.set(0, 3)
	a.mu.Lock()
	a.ended = true
	a.mu.Unlock()
	if l := pl.poll(); l.ended {
		t.Fatalf("ENDLIST passed on at once")
	}
	o.set("", 0, nil) // the OCM released the stream
	time.Sleep(400 * time.Millisecond)
	if l := pl.poll(); !l.ended || len(l.uris) != 3 {
		t.Fatalf("after EndHold %+v: want the playlist with ENDLIST", l)
	}
	time.Sleep(700 * time.Millisecond)
	if code, body := fetch(t, p, "/live/s.m3u8"); code != 404 {
		t.Fatalf("after Hold: %d %q, want 404", code, body)
	}
	if code, _ := fetch(t, p, "/live/s-0.ts"); code != 404 {
		t.Fatalf("segment of a gone stream: %d, want 404", code)
	}
	if st := p.Stats(); st.Streams != 0 {
		t.Fatalf("gone stream still kept: %+v", st)
	}
}

// TestUnknownStream: a stream never seen and not published is 404, not a
// held playlist; a segment the playlist never named is 404.
func TestUnknownStream(t *testing.T) {
	ts := tsBytes(t)
	a := newUpstream(t, ts)
	var o owners
	p, _ := newTestProxy(&o, Options{})
	for i := range 20 {
		if code, _ := fetch(t, p, fmt.Sprintf("/live/x%d.m3u8", i)); code != 404 {
			t.Fatalf("unpublished: %d", code)
		}
	}
	if st := p.Stats(); st.Streams != 0 {
		t.Fatalf("streams that never had a playlist are kept: %+v", st)
	}
	o.set("origin-a", 1, a)
	a.set(0, 2)
	if code, _ := fetch(t, p, "/live/s.m3u8"); code != 200 {
		t.Fatalf("published: %d", code)
	}
	if code, _ := fetch(t, p, "/live/s-5.ts"); code != 404 {
		t.Fatalf("segment not in the playlist: %d", code)
	}
}

func TestCoalescingAndCache(t *testing.T) {
	ts := tsBytes(t)
	a := newUpstream(t, ts)
	a.delay = 100 * time.Millisecond
	a.set(7, 1)
	var o owners
	o.set("origin-a", 1, a)
	p, m := newTestProxy(&o, Options{CacheBytes: 1 << 20, NoPrefetch: true, MaxPlaylistTTL: time.Second})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if code, body := fetch(t, p, "/live/s.m3u8"); code != 200 || !strings.Contains(body, "s-7.ts") {
				t.Errorf("playlist: %d %q", code, body)
			}
		})
	}
	wg.Wait()
	if n := a.count("/live/s.m3u8"); n != 1 {
		t.Fatalf("origin got %d playlist requests for 50 concurrent ones, want 1", n)
	}
	want := string(a.segBody("/live/s-7.ts"))
	for range 50 {
		wg.Go(func() {
			if code, body := fetch(t, p, "/live/s-7.ts"); code != 200 || body != want {
				t.Errorf("segment: %d, %d bytes", code, len(body))
			}
		})
	}
	wg.Wait()
	if n := a.count("/live/s-7.ts"); n != 1 {
		t.Fatalf("origin got %d segment requests for 50 concurrent ones, want 1", n)
	}
	fetch(t, p, "/live/s-7.ts") // a hit
	if n := a.count("/live/s-7.ts"); n != 1 {
		t.Fatalf("cached segment fetched again")
	}
	if r := m.ratio(); r < 0.95 {
		t.Fatalf("hit ratio %v", r)
	}
	// Errors are passed on, not cached: the origin lost the segment.
	a.mu.Lock()
	a.first, a.n = 100, 1 // s-7 is out of the origin's reach now
	a.mu.Unlock()
	p.mu.Lock()
	for _, el := range p.cache {
		p.removeLocked(el)
	}
	p.mu.Unlock()
	for range 2 {
		if code, _ := fetch(t, p, "/live/s-7.ts"); code != 404 {
			t.Fatalf("lost segment: %d", code)
		}
	}
	if n := a.count("/live/s-7.ts"); n != 3 {
		t.Fatalf("404 was cached: %d origin requests", n)
	}
}

// TestPrefetch: a new segment is fetched when it appears, so it plays
// after its origin died.
func TestPrefetch(t *testing.T) {
	ts := tsBytes(t)
	a := newUpstream(t, ts)
	a.set(0, 2)
	var o owners
	o.set("origin-a", 1, a)
	p, _ := newTestProxy(&o, Options{})
	fetch(t, p, "/live/s.m3u8")
	deadline := time.Now().Add(5 * time.Second)
	for a.count("/live/s-1.ts") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for p.Stats().Inflight > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	a.srv.Close()
	code, body := fetch(t, p, "/live/s-1.ts")
	if code != 200 || !bytes.Equal([]byte(body), a.segBody("/live/s-1.ts")) {
		t.Fatalf("prefetched segment after its origin died: %d", code)
	}
}

func TestLRUBound(t *testing.T) {
	ts := tsBytes(t)
	a := newUpstream(t, ts)
	a.set(0, 3)
	var o owners
	o.set("origin-a", 1, a)
	size := int64(len(a.segBody("/live/s-0.ts")))
	p, _ := newTestProxy(&o, Options{CacheBytes: 2*size + size/2, NoPrefetch: true}) // room for two
	fetch(t, p, "/live/s.m3u8")
	for i := range 3 {
		fetch(t, p, fmt.Sprintf("/live/s-%d.ts", i))
	}
	if st := p.Stats(); st.Objects != 2 || st.Bytes > 2*size+size/2 {
		t.Fatalf("cache %+v, want 2 objects", st)
	}
	fetch(t, p, "/live/s-0.ts") // evicted: fetched again
	fetch(t, p, "/live/s-2.ts") // still cached
	if n := a.count("/live/s-0.ts") + a.count("/live/s-1.ts") + a.count("/live/s-2.ts"); n != 4 {
		t.Fatalf("origin requests %d, want 4", n)
	}
}

// TestStreamsBound: the edge keeps at most MaxStreams playlists, and at
// most Window+Keep segments of each.
func TestStreamsBound(t *testing.T) {
	ts := tsBytes(t)
	a := newUpstream(t, ts)
	var o owners
	o.set("origin-a", 1, a)
	p, _ := newTestProxy(&o, Options{MaxStreams: 3, Window: 4, Keep: 1, NoPrefetch: true})
	for i := range 100 {
		a.set(int64(i), 4)
		fetch(t, p, fmt.Sprintf("/live/s%d.m3u8", i%5))
		fetch(t, p, "/live/s.m3u8")
	}
	if st := p.Stats(); st.Streams != 3 {
		t.Fatalf("streams kept: %d, want 3", st.Streams)
	}
	s := p.streamFor(streamkey.Key{Vhost: streamkey.DefaultVhost, App: "live", Name: "s"}, false)
	if s == nil || len(s.l.segs) != 5 {
		t.Fatalf("segments kept: want 5 (window 4 + keep 1)")
	}
}

func TestPlaylistTTL(t *testing.T) {
	ts := tsBytes(t)
	a := newUpstream(t, ts)
	a.set(0, 1)
	var o owners
	o.set("origin-a", 1, a)
	p, _ := newTestProxy(&o, Options{MaxPlaylistTTL: 5 * time.Second, NoPrefetch: true})
	_, x := fetch(t, p, "/live/s.m3u8")
	a.set(1, 1)
	_, y := fetch(t, p, "/live/s.m3u8")
	if x != y || a.count("/live/s.m3u8") != 1 {
		t.Fatalf("playlist not cached: %d origin requests", a.count("/live/s.m3u8"))
	}
	time.Sleep(600 * time.Millisecond) // half the 1 s target duration
	_, z := fetch(t, p, "/live/s.m3u8")
	if z == x || a.count("/live/s.m3u8") != 2 {
		t.Fatalf("playlist cached longer than half a target duration")
	}
}

// TestNewEpochIsNewObject: segments are cached per epoch, and an owner
// that numbers again from 0 under a new epoch does not give an old name new
// bytes: s-0 stays the old publish's segment, the new numbers are taken
// once they pass the old ones, fetched under the new epoch.
func TestNewEpochIsNewObject(t *testing.T) {
	ts := tsBytes(t)
	a := newUpstream(t, ts)
	a.set(0, 2)
	var o owners
	o.set("origin-a", 1, a)
	p, _ := newTestProxy(&o, Options{NoPrefetch: true})
	fetch(t, p, "/live/s.m3u8")
	fetch(t, p, "/live/s-0.ts")
	fetch(t, p, "/live/s-0.ts")
	if n := a.count("/live/s-0.ts"); n != 1 {
		t.Fatalf("same epoch: %d origin requests, want 1", n)
	}
	o.set("origin-a", 2, a)
	a.set(0, 3)
	_, body := fetch(t, p, "/live/s.m3u8")
	if l := parseEdge(t, body); l.mediaSeq != 0 || l.uris[len(l.uris)-1] != "s-2.ts" || !l.disc[2] {
		t.Fatalf("new epoch: %+v, want s-0, s-1, then s-2 with DISCONTINUITY", l)
	}
	fetch(t, p, "/live/s-0.ts")
	if n := a.count("/live/s-0.ts"); n != 1 {
		t.Fatalf("s-0.ts fetched again under the new epoch: %d origin requests, want 1", n)
	}
	if code, _ := fetch(t, p, "/live/s-2.ts"); code != 200 || a.count("/live/s-2.ts") != 1 {
		t.Fatalf("new epoch's s-2.ts: %d", code)
	}
}

// TestSlowOwnerServesHeld: an owner that stops answering (a lost host
// keeps its sockets open) holds a refresh up to UpstreamTimeout; players
// that had a playlist get the last good one after StaleAfter instead of
// waiting, and the refresh still completes when the owner answers.
func TestSlowOwnerServesHeld(t *testing.T) {
	ts := tsBytes(t)
	a := newUpstream(t, ts)
	a.set(0, 3)
	var o owners
	o.set("origin-a", 1, a)
	p, m := newTestProxy(&o, Options{NoPrefetch: true, StaleAfter: 200 * time.Millisecond})
	code, first := fetch(t, p, "/live/s.m3u8")
	if code != 200 {
		t.Fatalf("playlist: %d %q", code, first)
	}
	a.mu.Lock()
	a.delay = 2 * time.Second // the owner hangs
	a.mu.Unlock()
	a.set(1, 3)
	time.Sleep(600 * time.Millisecond) // past the playlist's cache time
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			t0 := time.Now()
			code, body := fetch(t, p, "/live/s.m3u8")
			if took := time.Since(t0); code != 200 || body != first || took > time.Second {
				t.Errorf("during the hang: %d after %v, want the last good playlist within 1 s:\n%s", code, took, body)
			}
		})
	}
	wg.Wait()
	if testutil.ToFloat64(m.Held) < 3 {
		t.Fatalf("held playlists counted: %v, want 3", testutil.ToFloat64(m.Held))
	}
	a.mu.Lock()
	a.delay = 0
	a.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, body := fetch(t, p, "/live/s.m3u8"); strings.Contains(body, "s-3.ts") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the playlist never caught up after the owner answered again")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHeadersAndCounters: a hit answers with the same headers as the miss
// that filled the cache (its header values are built once and shared), and
// every request is counted under its kind, result and status.
func TestHeadersAndCounters(t *testing.T) {
	ts := tsBytes(t)
	a := newUpstream(t, ts)
	a.set(3, 2)
	var o owners
	o.set("origin-a", 1, a)
	p, m := newTestProxy(&o, Options{NoPrefetch: true, MaxPlaylistTTL: time.Minute})
	get := func(path string) *httptest.ResponseRecorder {
		t.Helper()
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 {
			t.Fatalf("%s: %d %q", path, rec.Code, rec.Body.String())
		}
		return rec
	}
	check := func(rec *httptest.ResponseRecorder, typ, cache string) {
		t.Helper()
		h := rec.Result().Header
		if got := h.Get("Content-Length"); got != strconv.Itoa(rec.Body.Len()) {
			t.Errorf("Content-Length %q for %d bytes", got, rec.Body.Len())
		}
		if h.Get("Content-Type") != typ || h.Get("Cache-Control") != cache || h.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("headers %v", h)
		}
	}
	pl1, pl2 := get("/live/s.m3u8"), get("/live/s.m3u8")
	check(pl1, playlistType, "no-cache")
	check(pl2, playlistType, "no-cache")
	if pl1.Body.String() != pl2.Body.String() {
		t.Errorf("a playlist hit differs from the miss: %q, %q", pl1.Body, pl2.Body)
	}
	// The edge names the segments by the origin's numbers.
	uri := parseEdge(t, pl1.Body.String()).uris[0]
	seg1, seg2 := get("/live/"+uri), get("/live/"+uri)
	check(seg1, "video/mp2t", "max-age=60")
	check(seg2, "video/mp2t", "max-age=60")
	if !bytes.Equal(seg1.Body.Bytes(), seg2.Body.Bytes()) || seg1.Body.Len() <= len(ts) {
		t.Errorf("segment bodies: %d and %d bytes", seg1.Body.Len(), seg2.Body.Len())
	}
	// A failure still gets its own length and type.
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest("GET", "/live/s-999.ts", nil))
	if rec.Code != 404 || rec.Result().Header.Get("Content-Length") != strconv.Itoa(rec.Body.Len()) ||
		rec.Result().Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("404: %d %v", rec.Code, rec.Result().Header)
	}
	for _, c := range []struct {
		kind, result string
		want         float64
	}{
		{KindPlaylist, "miss", 1}, {KindPlaylist, "hit", 1},
		{KindSegment, "miss", 1}, {KindSegment, "hit", 1},
	} {
		if v := testutil.ToFloat64(m.Requests.WithLabelValues(c.kind, c.result)); v != c.want {
			t.Errorf("requests %s %s = %v, want %v", c.kind, c.result, v, c.want)
		}
	}
	for _, c := range []struct {
		kind, code string
		want       float64
	}{{KindPlaylist, "200", 2}, {KindSegment, "200", 2}, {KindSegment, "404", 1}} {
		if v := testutil.ToFloat64(m.Responses.WithLabelValues(c.kind, c.code)); v != c.want {
			t.Errorf("responses %s %s = %v, want %v", c.kind, c.code, v, c.want)
		}
	}
}

// A playlist rewritten for one player (Options.Playlist: the token carried
// on segment URIs) gets its own Content-Length and is private; the shared
// object is left as it was.
func TestRewrittenPlaylistHeaders(t *testing.T) {
	a := newUpstream(t, tsBytes(t))
	a.set(3, 2)
	var o owners
	o.set("origin-a", 1, a)
	rewrite := func(r *http.Request, body []byte) []byte {
		if r.URL.Query().Get("token") == "" {
			return body
		}
		return bytes.ReplaceAll(body, []byte(".ts\n"), []byte(".ts?token="+r.URL.Query().Get("token")+"\n"))
	}
	p, _ := newTestProxy(&o, Options{NoPrefetch: true, MaxPlaylistTTL: time.Minute, Playlist: rewrite})
	get := func(path string) *httptest.ResponseRecorder {
		t.Helper()
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 {
			t.Fatalf("%s: %d %q", path, rec.Code, rec.Body.String())
		}
		if got := rec.Result().Header.Get("Content-Length"); got != strconv.Itoa(rec.Body.Len()) {
			t.Errorf("%s: Content-Length %q for %d bytes", path, got, rec.Body.Len())
		}
		return rec
	}
	plain, tok := get("/live/s.m3u8"), get("/live/s.m3u8?token=abcdefgh")
	if !strings.Contains(tok.Body.String(), ".ts?token=abcdefgh") {
		t.Fatalf("rewritten playlist: %q", tok.Body.String())
	}
	if cc := tok.Result().Header.Get("Cache-Control"); cc != "private, no-cache" {
		t.Errorf("rewritten playlist Cache-Control %q", cc)
	}
	if again := get("/live/s.m3u8"); again.Body.String() != plain.Body.String() {
		t.Errorf("the shared playlist changed after a rewrite: %q, was %q", again.Body, plain.Body)
	}
}
