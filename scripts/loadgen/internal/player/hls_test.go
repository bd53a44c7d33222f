package player

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livecluster/livecluster/scripts/loadgen/internal/hlsplaylist"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stats"
)

func TestReloadWait(t *testing.T) {
	seg := func(d time.Duration) hlsplaylist.Segment { return hlsplaylist.Segment{Duration: d} }
	pl := func(target time.Duration, segs ...hlsplaylist.Segment) *hlsplaylist.Playlist {
		return &hlsplaylist.Playlist{TargetDuration: target, Segments: segs}
	}
	for _, c := range []struct {
		name    string
		pl      *hlsplaylist.Playlist
		changed bool
		mode    string
		want    time.Duration
	}{
		{"changed: the target duration", pl(2*time.Second, seg(2*time.Second)), true, ReloadRFC, 2 * time.Second},
		{"changed, last segment shorter", pl(2*time.Second, seg(2*time.Second), seg(1500*time.Millisecond)), true, ReloadRFC, 1500 * time.Millisecond},
		{"changed, no segment", pl(4 * time.Second), true, ReloadRFC, 4 * time.Second},
		{"unchanged: half", pl(2*time.Second, seg(2*time.Second)), false, ReloadRFC, time.Second},
		{"half mode, changed", pl(2*time.Second, seg(2*time.Second)), true, ReloadHalf, time.Second},
		{"half mode, unchanged", pl(2*time.Second, seg(2*time.Second)), false, ReloadHalf, time.Second},
		{"floor", pl(100*time.Millisecond, seg(50*time.Millisecond)), true, ReloadRFC, 100 * time.Millisecond},
	} {
		if got := reloadWait(c.pl, c.changed, c.mode); got != c.want {
			t.Errorf("%s: reloadWait = %v, want %v", c.name, got, c.want)
		}
	}
}

// liveServer serves a live playlist of 1 s segments (target duration 1),
// one more every second from its start, and counts playlist requests.
type liveServer struct {
	start     time.Time
	playlists atomic.Int64
	segments  atomic.Int64
}

func (l *liveServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, ".ts") {
		l.segments.Add(1)
		_, _ = w.Write(make([]byte, 1000))
		return
	}
	l.playlists.Add(1)
	last := int(time.Since(l.start)/time.Second) + 5 // segments 0..5 at the start
	first := max(0, last-5)
	var b strings.Builder
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:%d\n", first)
	for i := first; i <= last; i++ {
		fmt.Fprintf(&b, "#EXTINF:1.000,\ns-%d.ts\n", i)
	}
	w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
	_, _ = w.Write([]byte(b.String()))
}

// TestPlayHLSReloadPace plays a live playlist over HTTP for a few seconds
// in each mode: a real player (rfc) asks for the playlist about once per
// new segment, the half mode about twice; neither misses a segment.
func TestPlayHLSReloadPace(t *testing.T) {
	const run = 4500 * time.Millisecond
	for _, c := range []struct {
		mode     string
		min, max float64 // playlist requests per segment fetched after the first playlist
	}{
		{ReloadRFC, 0.8, 1.4},
		{ReloadHalf, 1.6, 2.6},
	} {
		t.Run(c.mode, func(t *testing.T) {
			t.Parallel()
			l := &liveServer{start: time.Now()}
			srv := httptest.NewServer(l)
			defer srv.Close()
			st, err := stats.New("play", 3*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), run)
			defer cancel()
			if err := Play(ctx, HLS, srv.URL+"/live/s.m3u8", Config{HLSReload: c.mode}, st); err != nil {
				t.Fatalf("play: %v", err)
			}
			// The first playlist starts the player 3 segments from the end
			// (3 fetched at once); every later segment follows a reload.
			pls, segs := l.playlists.Load()-1, l.segments.Load()-liveEdgeSegments
			if segs < 3 {
				t.Fatalf("%d segments after the first playlist in %v, want at least 3", segs, run)
			}
			per := float64(pls) / float64(segs)
			t.Logf("%s: %d playlist reloads for %d new segments (%.2f per segment)", c.mode, pls, segs, per)
			if per < c.min || per > c.max {
				t.Errorf("%s: %.2f playlist reloads per new segment, want %.1f..%.1f", c.mode, per, c.min, c.max)
			}
		})
	}
}
