package hls_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nareix/joy4/av"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/mediatest"
)

func TestMain(m *testing.M) { mediatest.Main(m) }

// feed writes the packets with time in [from, to) of the test FLV.
func feed(t *testing.T, s *hls.Stream, pkts []av.Packet, from, to time.Duration) {
	t.Helper()
	for _, p := range pkts {
		if p.Time < from || p.Time >= to {
			continue
		}
		if err := s.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
}

func readPlaylist(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tagInt(t *testing.T, pl, tag string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^#` + tag + `:(\d+)$`).FindStringSubmatch(pl)
	if m == nil {
		t.Fatalf("no #%s in playlist:\n%s", tag, pl)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func segments(pl string) []string {
	var out []string
	for _, l := range strings.Split(pl, "\n") {
		if strings.HasSuffix(l, ".ts") {
			out = append(out, l)
		}
	}
	return out
}

func ffmpegClean(t *testing.T, args ...string) {
	t.Helper()
	ffmpeg := mediatest.Tool(t, "ffmpeg")
	args = append([]string{"-v", "error"}, args...)
	args = append(args, "-enc_time_base:v", "-1", "-f", "null", "-")
	out, err := exec.Command(ffmpeg, args...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, out)
	}
}

func TestSegmenter(t *testing.T) {
	if testing.Short() {
		t.Skip("ffmpeg test")
	}
	dir := t.TempDir()
	m, err := hls.New(hls.Config{Dir: dir, Fragment: time.Second, Window: 6, Keep: -1, Dispose: 4 * time.Second, Clock: epochClock})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))

	s, err := m.Open("live", "s", streams)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Open("live", "s", streams); err == nil {
		t.Fatal("second Open of a live stream accepted")
	}
	feed(t, s, pkts, 0, 8*time.Second)
	pl := readPlaylist(t, filepath.Join(dir, "live", "s.m3u8"))
	// 8 s at a 1 s GOP: segments 0..6 are complete, 7 is being written.
	if got := tagInt(t, pl, "EXT-X-MEDIA-SEQUENCE"); got != 1 {
		t.Errorf("media sequence %d, want 1:\n%s", got, pl)
	}
	if got := tagInt(t, pl, "EXT-X-TARGETDURATION"); got != 1 {
		t.Errorf("target duration %d, want 1:\n%s", got, pl)
	}
	if strings.Contains(pl, "ENDLIST") || strings.Contains(pl, "DISCONTINUITY") {
		t.Errorf("unexpected tags while live:\n%s", pl)
	}
	if _, err := os.Stat(filepath.Join(dir, "live", "s-0.ts")); !os.IsNotExist(err) {
		t.Errorf("segment 0 left the playlist but is still on disk: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	pl = readPlaylist(t, filepath.Join(dir, "live", "s.m3u8"))
	if !strings.HasSuffix(pl, "#EXT-X-ENDLIST\n") {
		t.Errorf("no ENDLIST after unpublish:\n%s", pl)
	}
	segs := segments(pl)
	if len(segs) != 6 || segs[0] != "s-2.ts" || tagInt(t, pl, "EXT-X-MEDIA-SEQUENCE") != 2 {
		t.Fatalf("playlist after unpublish:\n%s", pl)
	}

	// Consecutive segments concatenated, and the playlist, must decode
	// cleanly. They are copied now and decoded after the republish below,
	// which has to come before dispose: ffmpeg on a loaded machine can
	// take longer than the dispose delay.
	snap := t.TempDir()
	var cat []byte
	for _, sg := range segs {
		b, err := os.ReadFile(filepath.Join(dir, "live", sg))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(snap, sg), b, 0o644); err != nil {
			t.Fatal(err)
		}
		cat = append(cat, b...)
	}
	if err := os.WriteFile(filepath.Join(snap, "s.m3u8"), []byte(pl), 0o644); err != nil {
		t.Fatal(err)
	}
	catPath := filepath.Join(snap, "cat.ts")
	if err := os.WriteFile(catPath, cat, 0o644); err != nil {
		t.Fatal(err)
	}

	// Republish before dispose: same playlist, discontinuity, then ENDLIST.
	s, err = m.Open("live", "s", streams)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, s, pkts, 0, 3*time.Second)
	pl = readPlaylist(t, filepath.Join(dir, "live", "s.m3u8"))
	if strings.Contains(pl, "ENDLIST") {
		t.Errorf("ENDLIST while republished:\n%s", pl)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	pl = readPlaylist(t, filepath.Join(dir, "live", "s.m3u8"))
	lines := strings.Split(pl, "\n")
	for i, l := range lines {
		if l == "#EXT-X-DISCONTINUITY" {
			if i+2 >= len(lines) || lines[i+2] != "s-8.ts" {
				t.Errorf("discontinuity not before s-8.ts:\n%s", pl)
			}
		}
	}
	if strings.Count(pl, "#EXT-X-DISCONTINUITY\n") != 1 || !strings.HasSuffix(pl, "#EXT-X-ENDLIST\n") {
		t.Errorf("after republish:\n%s", pl)
	}
	if got := tagInt(t, pl, "EXT-X-MEDIA-SEQUENCE"); got != 5 {
		t.Errorf("media sequence %d, want 5:\n%s", got, pl)
	}
	snap2 := t.TempDir()
	for _, name := range append(segments(pl), "s.m3u8") {
		b, err := os.ReadFile(filepath.Join(dir, "live", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(snap2, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ffmpegClean(t, "-i", catPath)
	ffmpegClean(t, "-i", filepath.Join(snap, "s.m3u8"))
	ffmpegClean(t, "-i", filepath.Join(snap2, "s.m3u8"))

	// Disposed after unpublish.
	mediatest.Eventually(t, 15*time.Second, "dispose", func() bool {
		ents, _ := os.ReadDir(filepath.Join(dir, "live"))
		return len(ents) == 0
	})
}

func TestTargetDurationAndNames(t *testing.T) {
	dir := t.TempDir()
	m, err := hls.New(hls.Config{Dir: dir, Fragment: 2500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	for _, bad := range [][2]string{{"live", "../x"}, {"..", "s"}, {"live", "a/b"}, {"live", "a\nb"}, {"live", ""}} {
		if _, err := m.Open(bad[0], bad[1], streams); err == nil {
			t.Errorf("Open(%q, %q) accepted", bad[0], bad[1])
		}
	}
	s, err := m.Open("live", "t", streams)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, s, pkts, 0, 10*time.Second)
	s.Close()
	pl := readPlaylist(t, filepath.Join(dir, "live", "t.m3u8"))
	// A 2.5 s fragment with 1 s GOPs gives 3 s segments.
	if got := tagInt(t, pl, "EXT-X-TARGETDURATION"); got != 3 {
		t.Errorf("target duration %d, want 3:\n%s", got, pl)
	}
	if !strings.Contains(pl, "#EXTINF:3.000,") {
		t.Errorf("want 3 s segments:\n%s", pl)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "live"))
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

// epochClock numbers from 0, so expectations can name segments.
func epochClock() time.Time { return time.Unix(0, 0) }

// A symbolic link planted in the HLS directory is never followed out of
// it: a stream whose app directory is a link to elsewhere fails to open
// and writes nothing there.
func TestSymlinkedAppNeverLeavesTheDirectory(t *testing.T) {
	dir := t.TempDir()
	hlsDir, outside := filepath.Join(dir, "hls"), filepath.Join(dir, "outside")
	os.MkdirAll(hlsDir, 0o755)
	os.MkdirAll(outside, 0o755)
	if err := os.Symlink(outside, filepath.Join(hlsDir, "live")); err != nil {
		t.Fatal(err)
	}
	m, err := hls.New(hls.Config{Dir: hlsDir, Fragment: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	s, err := m.Open("live", "s", streams)
	if err == nil {
		for _, p := range pkts[:min(len(pkts), 200)] {
			if s.WritePacket(p) != nil {
				break
			}
		}
		s.Close()
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 0 {
		t.Fatalf("the writer followed the link out of hls.dir: %v", ents)
	}
}
