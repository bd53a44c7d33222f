package hls_test

import (
	"os/exec"
	"slices"

	"github.com/nareix/joy4/av"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/mediatest"
)

// TestAsyncStalledVolume stalls the volume for real: the first segment's
// temporary file is a full FIFO nobody reads, so the writer blocks in
// write(2) as it would on a hung NFS mount. The publisher side must not block, must
// count what it drops, and once the volume recovers the stream must still
// close with a valid playlist.
func TestAsyncStalledVolume(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	dir := t.TempDir()
	m, err := hls.New(hls.Config{Dir: dir, Fragment: time.Second, Window: 6, Dispose: time.Hour, Clock: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := os.MkdirAll(filepath.Join(dir, "live"), 0o755); err != nil {
		t.Fatal(err)
	}
	resume := mediatest.StallFile(t, filepath.Join(dir, "live", "s-0.ts"))
	s, err := m.Open("live", "s", streams)
	if err != nil {
		t.Fatal(err)
	}
	a := hls.NewAsync(s, 64)

	start := time.Now()
	for _, p := range pkts {
		if !a.WritePacket(p) {
			t.Fatal("writer reported failure while stalled")
		}
	}
	took := time.Since(start)
	t.Logf("queued %d packets in %v against a stalled volume; dropped %d", len(pkts), took, a.Dropped())
	if took > 2*time.Second {
		t.Errorf("publisher side blocked for %v", took)
	}
	if a.Dropped() == 0 {
		t.Error("nothing dropped although the writer could not write")
	}

	// The volume recovers: read the FIFO so the writer moves on.
	resume()
	done := make(chan error, 1)
	go func() { done <- a.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return after the volume recovered")
	}
	pl := readPlaylist(t, filepath.Join(dir, "live", "s.m3u8"))
	if !strings.Contains(pl, "#EXT-X-ENDLIST") || len(segments(pl)) == 0 {
		t.Fatalf("playlist after recovery:\n%s", pl)
	}
}

// TestAsyncWritesEverything checks that a writer that keeps up loses
// nothing: the same segments as the synchronous Stream.
func TestAsyncWritesEverything(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	dir := t.TempDir()
	m, err := hls.New(hls.Config{Dir: dir, Fragment: time.Second, Window: 100, Dispose: time.Hour, Clock: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.Open("live", "s", streams)
	if err != nil {
		t.Fatal(err)
	}
	a := hls.NewAsync(s, len(pkts)+1)
	for _, p := range pkts {
		a.WritePacket(p)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if a.Dropped() != 0 {
		t.Fatalf("dropped %d with room for every packet", a.Dropped())
	}
	// The same packets through a synchronous Stream give the same playlist.
	syncDir := t.TempDir()
	ms, err := hls.New(hls.Config{Dir: syncDir, Fragment: time.Second, Window: 100, Dispose: time.Hour, Clock: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	ss, err := ms.Open("live", "s", streams)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, ss, pkts, 0, time.Hour)
	if err := ss.Close(); err != nil {
		t.Fatal(err)
	}
	pl := readPlaylist(t, filepath.Join(dir, "live", "s.m3u8"))
	if want := readPlaylist(t, filepath.Join(syncDir, "live", "s.m3u8")); pl != want {
		t.Fatalf("async playlist differs from the synchronous one:\n%s\nwant:\n%s", pl, want)
	}
	ffmpegClean(t, "-i", filepath.Join(dir, "live", "s.m3u8"))
}

// TestAsyncCodecChangeWhileStalled changes codecs while the volume is
// stalled: neither the packets nor the codec change may block the
// publisher side, and once the volume recovers the writer goes on with the
// new codecs from a keyframe, after a discontinuity.
func TestAsyncCodecChangeWhileStalled(t *testing.T) {
	sa, pa := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	sb, pb := mediatest.ReadFLV(t, mediatest.TestFLVSized(t, "640x360"))
	dir := t.TempDir()
	m, err := hls.New(hls.Config{Dir: dir, Fragment: time.Second, Window: 20, Dispose: time.Hour, Clock: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := os.MkdirAll(filepath.Join(dir, "live"), 0o755); err != nil {
		t.Fatal(err)
	}
	resume := mediatest.StallFile(t, filepath.Join(dir, "live", "s-0.ts"))
	s, err := m.Open("live", "s", sa)
	if err != nil {
		t.Fatal(err)
	}
	a := hls.NewAsync(s, 64)

	// Keep B's timeline after A's, as the hub does across a codec change.
	var end time.Duration
	for _, p := range pa[:300] {
		end = max(end, p.Time)
	}
	shift := func(p av.Packet) av.Packet { p.Time += end + 40*time.Millisecond; return p }
	half := len(pb) / 2
	for half < len(pb) && !(sb[pb[half].Idx].Type().IsVideo() && pb[half].IsKeyFrame) {
		half++
	}

	start := time.Now()
	for _, p := range pa[:300] {
		a.WritePacket(p)
	}
	a.Restart(sb)
	for _, p := range pb[:half] {
		a.WritePacket(shift(p))
	}
	took := time.Since(start)
	t.Logf("300 packets, a codec change and %d more packets against a stalled volume in %v", half, took)
	if took > 2*time.Second {
		t.Fatalf("publisher side blocked %v across a codec change with the volume stalled", took)
	}

	if a.Dropped() == 0 {
		t.Fatal("nothing dropped: the volume did not stall")
	}
	// The volume recovers.
	resume()
	for _, p := range pb[half:] {
		if sb[p.Idx].Type().IsVideo() && p.IsKeyFrame {
			// Let the writer catch up before each GOP, so the only drops
			// are the stall's.
			mediatest.Eventually(t, 20*time.Second, "the writer to catch up", func() bool { return a.Queued() == 0 })
		}
		if !a.WritePacket(shift(p)) {
			t.Fatal("writer failed after the volume recovered")
		}
	}
	if err := a.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	pl := readPlaylist(t, filepath.Join(dir, "live", "s.m3u8"))
	_, after, ok := strings.Cut(pl, "#EXT-X-DISCONTINUITY\n")
	if !ok || len(segments(after)) < 3 {
		t.Fatalf("want a discontinuity followed by the new codecs' segments:\n%s", pl)
	}
	ffprobe := mediatest.Tool(t, "ffprobe")
	for _, seg := range segments(after) {
		p := filepath.Join(dir, "live", seg)
		ffmpegClean(t, "-i", p) // starts at a keyframe: decodes without errors
		out, err := exec.Command(ffprobe, "-v", "error", "-select_streams", "v",
			"-show_entries", "stream=width", "-of", "csv=p=0", p).CombinedOutput()
		w := strings.Fields(string(out)) // a value per program and per stream
		if err != nil || len(w) == 0 || slices.ContainsFunc(w, func(v string) bool { return v != "640" }) {
			t.Fatalf("segment %s after the codec change: width %q (%v), want 640", seg, out, err)
		}
	}
}
