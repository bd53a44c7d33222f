package hlsproxy

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/edge/internal/directory"
	"github.com/livecluster/livecluster/node/authz"
	"github.com/livecluster/livecluster/node/connlimit"
)

// The serve path of a cache hit, as bench-hls.sh loads it: a player polls
// the playlist and fetches each ~250 KB segment (2 s of a 1 Mbps stream)
// once. BenchmarkServe* call the handler in process (the proxy's own cost,
// allocs/op); BenchmarkLoopback* go through a real net/http server on a
// connlimit listener (as the edge's) over loopback, one keep-alive
// connection, so the socket writes (or sendfile) are in the figure;
// cpu-ns/op there is the whole process (client included).

const benchSegBytes = 250 << 10

// benchOrigin serves a 6-segment playlist and random segments.
func benchOrigin(b *testing.B) (*owners, []byte) {
	seg := make([]byte, benchSegBytes)
	_, _ = rand.Read(seg)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".m3u8") {
			w.Header().Set("Content-Type", playlistType)
			var sb strings.Builder
			sb.WriteString("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:100\n")
			for i := 100; i < 106; i++ {
				fmt.Fprintf(&sb, "#EXTINF:2.000,\ns-%d.ts\n", i)
			}
			_, _ = io.WriteString(w, sb.String())
			return
		}
		w.Header().Set("Content-Type", "video/mp2t")
		_, _ = w.Write(seg)
	}))
	b.Cleanup(srv.Close)
	var o owners
	o.o = &directory.Owner{NodeID: "origin-a", Epoch: 1, HTTP: strings.TrimPrefix(srv.URL, "http://")}
	return &o, seg
}

// benchProxy is the proxy as the edge sets it up (app.go): metrics, and
// the playlist rewrite for a player's credential. Playlists stay fresh
// for the whole run.
func benchProxy(b *testing.B, mod ...func(*Options)) (*Proxy, []byte) {
	o, seg := benchOrigin(b)
	opts := Options{
		Resolve: o.resolve, Metrics: NewMetrics(prometheus.NewRegistry()), NoPrefetch: true,
		MaxPlaylistTTL: time.Hour, Window: 6,
		Playlist: func(r *http.Request, body []byte) []byte {
			return authz.RewritePlaylist(body, authz.CarriedQuery(r.URL.Query()))
		},
	}
	for _, m := range mod {
		m(&opts)
	}
	p := New(opts)
	// Warm: the playlist and the segment in the cache.
	for _, path := range []string{"/live/s.m3u8", "/live/s-103.ts"} {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 {
			b.Fatalf("warm %s: %d %s", path, rec.Code, rec.Body)
		}
	}
	return p, seg
}

// discardWriter is a ResponseWriter that keeps nothing but the status.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

func benchServe(b *testing.B, path string) {
	p, _ := benchProxy(b)
	r := httptest.NewRequest("GET", path, nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		w.code, w.n = 0, 0
		p.ServeHTTP(w, r)
		if w.code != 200 || w.n == 0 {
			b.Fatalf("%s: %d, %d bytes", path, w.code, w.n)
		}
	}
}

func BenchmarkServePlaylistHit(b *testing.B) { benchServe(b, "/live/s.m3u8") }
func BenchmarkServePlaylistHitToken(b *testing.B) {
	benchServe(b, "/live/s.m3u8?"+authz.TokenParam+"=abc")
}
func BenchmarkServeSegmentHit(b *testing.B) { benchServe(b, "/live/s-103.ts") }

func benchLoopback(b *testing.B, path string, want int, mod ...func(*Options)) {
	p, _ := benchProxy(b, mod...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: p}
	go func() { _ = srv.Serve(connlimit.Wrap(ln, connlimit.Options{Name: "http"})) }()
	b.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	b.Cleanup(client.CloseIdleConnections)
	url := "http://" + ln.Addr().String() + path
	buf := make([]byte, 64<<10)
	get := func() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || (want > 0 && int(n) != want) {
			b.Fatalf("%s: %d, %d bytes, %v", path, resp.StatusCode, n, err)
		}
	}
	get()
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ReportAllocs()
	b.SetBytes(int64(max(want, 0)))
	n := 0
	for b.Loop() {
		get()
		n++
	}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/op")
}

// BenchmarkLoopbackSegment: file is the default (memfd, sendfile), memory
// the heap and write(2).
func BenchmarkLoopbackSegment(b *testing.B) {
	b.Run("file", func(b *testing.B) { benchLoopback(b, "/live/s-103.ts", benchSegBytes) })
	b.Run("memory", func(b *testing.B) {
		benchLoopback(b, "/live/s-103.ts", benchSegBytes, func(o *Options) { o.MemorySegments = true })
	})
}
func BenchmarkLoopbackPlaylist(b *testing.B) { benchLoopback(b, "/live/s.m3u8", 0) }

// BenchmarkServerSegment is BenchmarkLoopbackSegment with the players in a
// child process (this test binary with HLSPROXY_BENCH_CLIENT set), so
// server-cpu-ns/op is the serving process's CPU alone, as bench-hls.sh
// measures the edge: 8 keep-alive connections fetch the segment.
func BenchmarkServerSegment(b *testing.B) {
	for _, mode := range []struct {
		name string
		mod  func(*Options)
	}{{"file", func(*Options) {}}, {"memory", func(o *Options) { o.MemorySegments = true }}} {
		b.Run(mode.name, func(b *testing.B) {
			p, _ := benchProxy(b, mode.mod)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := &http.Server{Handler: p}
			go func() { _ = srv.Serve(connlimit.Wrap(ln, connlimit.Options{Name: "http"})) }()
			b.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
			n := 0
			for b.Loop() {
				n++
			}
			// The loop above only counts: the work is the child's b.N
			// requests, timed here.
			cmd := exec.Command(os.Args[0], "-test.run", "^TestBenchClient$")
			cmd.Env = append(os.Environ(), "HLSPROXY_BENCH_CLIENT=http://"+ln.Addr().String()+"/live/s-103.ts "+strconv.Itoa(n))
			cmd.Stderr = os.Stderr
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			start := time.Now()
			if out, err := cmd.Output(); err != nil {
				b.Fatalf("client: %v %s", err, out)
			}
			wall := time.Since(start)
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "server-cpu-ns/op")
			b.ReportMetric(float64(wall.Nanoseconds())/float64(n), "wall-ns/req")
		})
	}
}

// TestBenchClient is BenchmarkServerSegment's child: "URL N" in
// HLSPROXY_BENCH_CLIENT, N GETs over 8 keep-alive connections, each body
// read whole and checked for length. Skipped without the variable.
func TestBenchClient(t *testing.T) {
	spec := os.Getenv("HLSPROXY_BENCH_CLIENT")
	if spec == "" {
		t.Skip("only as BenchmarkServerSegment's child")
	}
	u, ns, _ := strings.Cut(spec, " ")
	n, err := strconv.Atoi(ns)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for next.Add(1) <= int64(n) {
				resp, err := client.Get(u)
				if err != nil {
					t.Error(err)
					return
				}
				m, err := io.CopyBuffer(io.Discard, resp.Body, buf)
				resp.Body.Close()
				if err != nil || m != benchSegBytes {
					t.Errorf("%d bytes, %v", m, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
