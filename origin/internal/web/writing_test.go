package web

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/mediatest"
)

// The segment an HLS writer is still writing (under its final name) answers
// 404 without a Cache-Control that would keep the refusal; the complete
// one before it is served.
func TestSegmentBeingWrittenIsNotServed(t *testing.T) {
	dir := t.TempDir()
	m, err := hls.New(hls.Config{Dir: dir, Fragment: time.Second, Dispose: time.Hour, Clock: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	s, err := m.Open("live", "s", streams)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 1 s GOPs: up to 2.5 s, segments 0 and 1 are complete, 2 is open.
	for _, p := range pkts {
		if p.Time >= 2500*time.Millisecond {
			break
		}
		if err := s.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	h := New(Options{HLSDir: dir, Root: dir, SegmentMaxAge: time.Minute, Writing: m.Writing})
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/live/s-1.ts", 200},
		{"/live/s-2.ts", 404},
		{"/live/s.m3u8", 200},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://x"+tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.path, rec.Code, tc.want)
		}
		if rec.Code == 404 && rec.Header().Get("Cache-Control") != "" {
			t.Errorf("GET %s: 404 with Cache-Control %q", tc.path, rec.Header().Get("Cache-Control"))
		}
	}
}
