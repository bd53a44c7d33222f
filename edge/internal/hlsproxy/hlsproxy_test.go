package hlsproxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

// origin is an HLS server that counts requests and answers slowly, so
// concurrent requests overlap.
func origin(t *testing.T, delay time.Duration) (*httptest.Server, *atomic.Int64, *atomic.Int64) {
	var segs, lists atomic.Int64
	seq := atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		switch {
		case strings.HasSuffix(r.URL.Path, ".m3u8"):
			n := lists.Add(1)
			fmt.Fprintf(w, "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:%d\n#EXTINF:1.0,\ns1-%d.ts\n", n, seq.Add(1))
		case r.URL.Path == "/live/missing-1.ts":
			segs.Add(1)
			http.NotFound(w, r)
		default:
			segs.Add(1)
			w.Write([]byte(strings.Repeat("x", 10000) + r.URL.Path))
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &segs, &lists
}

func newProxy(t *testing.T, srv *httptest.Server, cacheBytes int64) (*Proxy, *Metrics) {
	m := NewMetrics(prometheus.NewRegistry())
	host := strings.TrimPrefix(srv.URL, "http://")
	return New(Options{
		Resolve: func(context.Context, streamkey.Key) (*directory.Owner, error) {
			return &directory.Owner{NodeID: "o", RTMP: host, HTTP: host}, nil
		},
		CacheBytes: cacheBytes, Metrics: m,
	}), m
}

func fetch(t *testing.T, h http.Handler, path string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestCoalescingAndCache(t *testing.T) {
	srv, segs, _ := origin(t, 100*time.Millisecond)
	p, m := newProxy(t, srv, 1<<20)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, body := fetch(t, p, "/live/s1-7.ts"); code != 200 || !strings.HasSuffix(body, "/live/s1-7.ts") {
				t.Errorf("got %d %q", code, body[len(body)-20:])
			}
		}()
	}
	wg.Wait()
	if n := segs.Load(); n != 1 {
		t.Fatalf("origin got %d requests for 50 concurrent ones, want 1", n)
	}
	fetch(t, p, "/live/s1-7.ts") // a hit
	if n := segs.Load(); n != 1 {
		t.Fatalf("cached segment fetched again")
	}
	if r := m.ratio(); r < 0.95 {
		t.Fatalf("hit ratio %v", r)
	}
	// Errors are passed on, not cached.
	if code, _ := fetch(t, p, "/live/missing-1.ts"); code != 404 {
		t.Fatalf("missing segment: %d", code)
	}
	fetch(t, p, "/live/missing-1.ts")
	if n := segs.Load(); n != 3 {
		t.Fatalf("404 was cached: %d origin requests", n)
	}
}

func TestLRUBound(t *testing.T) {
	srv, segs, _ := origin(t, 0)
	p, _ := newProxy(t, srv, 25000) // room for two 10 kB segments
	for i := range 3 {
		fetch(t, p, fmt.Sprintf("/live/s1-%d.ts", i))
	}
	if st := p.Stats(); st.Objects != 2 || st.Bytes > 25000 {
		t.Fatalf("cache %+v, want 2 objects within 25000 bytes", st)
	}
	fetch(t, p, "/live/s1-0.ts") // evicted: fetched again
	fetch(t, p, "/live/s1-2.ts") // still cached
	if n := segs.Load(); n != 4 {
		t.Fatalf("origin requests %d, want 4", n)
	}
}

func TestPlaylistTTL(t *testing.T) {
	srv, _, lists := origin(t, 0)
	p, _ := newProxy(t, srv, 1<<20)
	_, a := fetch(t, p, "/live/s1.m3u8")
	_, b := fetch(t, p, "/live/s1.m3u8")
	if a != b || lists.Load() != 1 {
		t.Fatalf("playlist not cached: %d origin requests", lists.Load())
	}
	time.Sleep(600 * time.Millisecond) // half the 1 s target duration
	_, c := fetch(t, p, "/live/s1.m3u8")
	if c == a || lists.Load() != 2 {
		t.Fatalf("playlist cached longer than half a target duration")
	}
}

// TestNewEpochIsNewObject: after a republish (a new ownership epoch) the
// origin may reuse segment names, so a cached segment of the old publish
// must not be served for the new one.
func TestNewEpochIsNewObject(t *testing.T) {
	srv, segs, _ := origin(t, 0)
	host := strings.TrimPrefix(srv.URL, "http://")
	var epoch atomic.Int64
	epoch.Store(1)
	p := New(Options{
		Resolve: func(context.Context, streamkey.Key) (*directory.Owner, error) {
			return &directory.Owner{NodeID: "o", Epoch: epoch.Load(), RTMP: host, HTTP: host}, nil
		},
		CacheBytes: 1 << 20, Metrics: NewMetrics(prometheus.NewRegistry()),
	})
	fetch(t, p, "/live/s1-0.ts")
	fetch(t, p, "/live/s1-0.ts")
	if n := segs.Load(); n != 1 {
		t.Fatalf("same epoch: %d origin requests, want 1", n)
	}
	epoch.Store(2)
	if code, _ := fetch(t, p, "/live/s1-0.ts"); code != 200 {
		t.Fatalf("new epoch: %d", code)
	}
	if n := segs.Load(); n != 2 {
		t.Fatalf("new epoch served from the old publish's cache: %d origin requests, want 2", n)
	}
}
