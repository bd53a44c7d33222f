package hls_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/internal/mediatest"
)

// TestAsyncStalledVolume stalls the volume for real: the first segment's
// temporary file is a FIFO nobody reads, so the writer blocks in write(2)
// as it would on a hung NFS mount. The publisher side must not block, must
// count what it drops, and once the volume recovers the stream must still
// close with a valid playlist.
func TestAsyncStalledVolume(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	dir := t.TempDir()
	m, err := hls.New(hls.Config{Dir: dir, Fragment: time.Second, Window: 6, Dispose: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := os.MkdirAll(filepath.Join(dir, "live"), 0o755); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "live", "s-0.ts.tmp")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
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
	go func() {
		f, err := os.Open(fifo)
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(io.Discard, f)
	}()
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
	m, err := hls.New(hls.Config{Dir: dir, Fragment: time.Second, Window: 100, Dispose: time.Hour})
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
	ms, err := hls.New(hls.Config{Dir: syncDir, Fragment: time.Second, Window: 100, Dispose: time.Hour})
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
