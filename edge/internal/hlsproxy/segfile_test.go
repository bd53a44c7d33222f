//go:build linux

package hlsproxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/connlimit"
)

// TestSegmentsFromFileOverTCP: cached segments live in a memfd, not on the
// heap, and players over real keep-alive TCP connections (through the
// edge's connlimit listener, sent with sendfile) get exactly the
// origin's bytes, many at once and one after another; HEAD gets no body.
func TestSegmentsFromFileOverTCP(t *testing.T) {
	a := newUpstream(t, tsBytes(t))
	a.set(7, 2)
	var o owners
	o.set("origin-a", 1, a)
	p, _ := newTestProxy(&o, Options{NoPrefetch: true, MaxPlaylistTTL: time.Minute})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p}
	go func() { _ = srv.Serve(connlimit.Wrap(ln, connlimit.Options{Name: "http"})) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(client.CloseIdleConnections)
	base := "http://" + ln.Addr().String()
	get := func(method, path string) (int, []byte, string) {
		req, _ := http.NewRequest(method, base+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return 0, nil, ""
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Error(err)
		}
		return resp.StatusCode, b, resp.Header.Get("Content-Length")
	}
	if code, _, _ := get("GET", "/live/s.m3u8"); code != 200 {
		t.Fatalf("playlist: %d", code)
	}
	want := map[string][]byte{"/live/s-7.ts": a.segBody("/live/s-7.ts"), "/live/s-8.ts": a.segBody("/live/s-8.ts")}
	var wg sync.WaitGroup
	for i := range 40 {
		path := "/live/s-7.ts"
		if i%2 == 1 {
			path = "/live/s-8.ts"
		}
		wg.Go(func() {
			for range 3 {
				if code, b, _ := get("GET", path); code != 200 || !bytes.Equal(b, want[path]) {
					t.Errorf("%s: %d, %d bytes, want %d", path, code, len(b), len(want[path]))
				}
			}
		})
	}
	wg.Wait()
	if code, b, cl := get("HEAD", "/live/s-7.ts"); code != 200 || len(b) != 0 || cl != strconv.Itoa(len(want["/live/s-7.ts"])) {
		t.Errorf("HEAD: %d, %d bytes, Content-Length %q", code, len(b), cl)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.cache) != 2 {
		t.Fatalf("%d cached objects, want 2", len(p.cache))
	}
	for u, el := range p.cache {
		if obj := el.Value.(*object); obj.file == nil || obj.body != nil || obj.size() != len(want["/live/s-7.ts"]) {
			t.Errorf("%s cached with file %v, %d heap bytes, size %d", u, obj.file != nil, len(obj.body), obj.size())
		}
	}
}

// TestSegFileEviction: a description taken before the segment is evicted
// still reads the whole segment; none is handed out after it.
func TestSegFileEviction(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	f, err := newSegFile(body)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := f.get()
	if err != nil {
		t.Fatal(err)
	}
	r2, err := f.get() // a second one at once: its own offset
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, r2, 1000); err != nil {
		t.Fatal(err)
	}
	f.put(r2)
	r3, err := f.get() // r2 again, back at the start
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(r3); !bytes.Equal(b, body) {
		t.Fatalf("reused description read %d bytes, want the whole %d", len(b), len(body))
	}
	f.put(r3)
	f.close()
	if b, _ := io.ReadAll(r1); !bytes.Equal(b, body) {
		t.Fatalf("after eviction, a taken description read %d bytes, want %d", len(b), len(body))
	}
	f.put(r1)
	if r, err := f.get(); err == nil {
		r.Close()
		t.Fatal("a description was handed out after eviction")
	}
}
