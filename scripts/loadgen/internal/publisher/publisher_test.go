package publisher

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/proctest"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/flvtag"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stamp"
)

// TestLoadFFmpegFile reads a real ffmpeg-made FLV (4 s, 30 fps, a keyframe
// every 30 frames, AAC).
func TestLoadFFmpegFile(t *testing.T) {
	ffmpeg := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	path := proctest.MakeTestFLV(t, ffmpeg, t.TempDir(), 4, 30)
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Headers) != 3 || s.Headers[0].Type != flvtag.Script || !s.Headers[1].SeqHeader() || !s.Headers[2].SeqHeader() {
		t.Fatalf("headers: want metadata and two sequence headers, got %d", len(s.Headers))
	}
	if s.NALLen != 4 {
		t.Fatalf("NAL length size %d, want x264's 4", s.NALLen)
	}
	var video, keys int
	var last uint32
	for i, m := range s.Media {
		if m.TS < last && m.Type == flvtag.Video {
			t.Fatalf("tag %d: video timestamp goes back", i)
		}
		if m.Type == flvtag.Video {
			last = m.TS
			video++
			if m.Keyframe() {
				keys++
			}
			if m.AVCNALUs() == nil {
				t.Fatalf("tag %d: video without NAL units", i)
			}
		}
	}
	if video != 120 || keys != 4 {
		t.Fatalf("%d video frames, %d keyframes; want 120 and 4", video, keys)
	}
	if s.Span < 3900*time.Millisecond || s.Span > 4100*time.Millisecond {
		t.Fatalf("span %v, want about 4 s", s.Span)
	}

	// A stamped frame keeps its FLV video header and carries the stamp.
	sent := time.Now()
	b := encode(s.Media[firstVideo(s)], 1234, s.NALLen, true, sent)
	br := bytesReader(append([]byte("FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"), b...))
	r, err := flvtag.NewReader(&br)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	got, ok := stamp.Find(tag.AVCNALUs(), s.NALLen)
	if tag.TS != 1234 || !tag.Keyframe() || !ok || got.Sent.UnixMicro() != sent.UnixMicro() || got.MediaMS != 1234 {
		t.Fatalf("stamped tag: ts %d key %v stamp %+v %v", tag.TS, tag.Keyframe(), got, ok)
	}
}

func firstVideo(s *Stream) int {
	for i, m := range s.Media {
		if m.Type == flvtag.Video {
			return i
		}
	}
	return -1
}

type bytesReader []byte

func (b *bytesReader) Read(p []byte) (int, error) {
	if len(*b) == 0 {
		return 0, os.ErrClosed
	}
	n := copy(p, *b)
	*b = (*b)[n:]
	return n, nil
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty.flv":     "",
		"not-flv.flv":   "<html></html>",
		"no-media.flv":  "FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00",
		"truncated.flv": "FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00\x09\x00\x00\x10\x00",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing.flv")); err == nil {
		t.Error("missing file loaded")
	}
}
