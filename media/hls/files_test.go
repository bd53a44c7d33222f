package hls_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/mediatest"
)

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// The steady state creates one file per segment and none per playlist:
// the playlist's two files are swapped, never created again, and a segment
// is written under its final name (no temporary name), which
// Manager.Writing reports until the playlist names it. A reader of the
// playlist meanwhile always reads a whole one.
func TestFilesPerSegment(t *testing.T) {
	dir := t.TempDir()
	m, err := hls.New(hls.Config{Dir: dir, Fragment: time.Second, Window: 3, Dispose: time.Hour, Clock: epochClock})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	s, err := m.Open("live", "s", streams)
	if err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, "live")
	pl := filepath.Join(live, "s.m3u8")

	// A reader polling the playlist while it is rewritten.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var torn []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(pl)
			if err != nil {
				continue // not written yet
			}
			if !strings.HasPrefix(string(b), "#EXTM3U\n") || !strings.HasSuffix(string(b), ".ts\n") {
				torn = append(torn, string(b))
			}
		}
	}()

	inodes := map[uint64]bool{}
	for sec := time.Duration(0); sec < 10*time.Second; sec += time.Second {
		// Up to just after this second's keyframe: segment sec/1s is open.
		feed(t, s, pkts, sec, sec+time.Second)
		if sec < 2*time.Second {
			continue
		}
		inodes[inode(t, pl)] = true
		seq := int64(sec / time.Second)
		if !m.Writing("live", "s", seq) || m.Writing("live", "s", seq-1) || m.Writing("live", "t", seq) {
			t.Errorf("at %v: Writing(%d) %v, Writing(%d) %v", sec, seq, m.Writing("live", "s", seq), seq-1, m.Writing("live", "s", seq-1))
		}
		body := readPlaylist(t, pl)
		if _, err := os.Stat(filepath.Join(live, "s-"+itoa(seq)+".ts")); err != nil || strings.Contains(body, "s-"+itoa(seq)+".ts") {
			t.Errorf("at %v: segment %d being written: %v, listed %v:\n%s", sec, seq, err, strings.Contains(body, "s-"+itoa(seq)+".ts"), body)
		}
		ents, _ := os.ReadDir(live)
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".ts.tmp") {
				t.Errorf("at %v: a segment under a temporary name: %s", sec, e.Name())
			}
		}
	}
	close(stop)
	wg.Wait()
	if len(inodes) > 2 {
		t.Errorf("the playlist had %d different files over 8 playlists, want 2 swapped", len(inodes))
	}
	if len(torn) > 0 {
		t.Errorf("%d reads of a partial playlist, first:\n%q", len(torn), torn[0])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if m.Writing("live", "s", 9) {
		t.Error("Writing after Close")
	}
	if _, err := os.Stat(pl + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("the playlist's spare file is left after unpublish: %v", err)
	}
	ffmpegClean(t, "-i", pl)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
