package hls

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/mediatest"
)

// On a volume that cannot swap names (exchange refused), playlists are
// written to a temporary file and renamed into place: each one whole, and
// no temporary file left behind.
func TestPlaylistWithoutExchange(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Config{Dir: dir, Fragment: time.Second, Window: 3, Dispose: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.noExchange.Store(true)
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	s, err := m.Open("live", "s", streams)
	if err != nil {
		t.Fatal(err)
	}
	pl := filepath.Join(dir, "live", "s.m3u8")
	var prev string
	for _, p := range pkts {
		if err := s.WritePacket(p); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(pl)
		if err != nil || string(b) == prev {
			continue
		}
		prev = string(b)
		if s.st.plCur >= 0 || s.st.plSpare >= 0 {
			t.Fatal("playlist files kept open without exchange")
		}
		if !strings.HasPrefix(prev, "#EXTM3U\n") || !strings.HasSuffix(prev, ".ts\n") {
			t.Fatalf("playlist:\n%s", prev)
		}
		if _, err := os.Stat(pl + ".tmp"); !os.IsNotExist(err) {
			t.Fatalf("temporary playlist left: %v", err)
		}
	}
	if prev == "" {
		t.Fatal("no playlist written")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(pl); !strings.HasSuffix(string(b), "#EXT-X-ENDLIST\n") {
		t.Fatalf("final playlist:\n%s", b)
	}
}
