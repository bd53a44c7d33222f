package flvx

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nareix/joy4/format/flv/flvio"
)

// TestUnsupportedVideoCodec: a video tag whose codec id is not H.264 (the
// hostile-input drill's codec id 13, VP6, enhanced-RTMP HEVC) is refused
// with its codec id named, before and after probing, and the demuxer
// keeps what it had; joy4 alone read such tags as H.264 and failed with
// "h264 seqhdr invalid" or passed their bytes on as H.264.
func TestUnsupportedVideoCodec(t *testing.T) {
	for _, first := range []byte{0x1d, 0x14, 0x9c, 0x10} {
		d := NewDemuxer()
		body := []byte{first, 0, 0, 0, 0, 1, 2, 3}
		err := d.Push(flvio.TAG_VIDEO, 0, body)
		if !errors.Is(err, ErrUnsupportedCodec) {
			t.Errorf("first byte %#x: %v, want ErrUnsupportedCodec", first, err)
			continue
		}
		if want := fmt.Sprintf("video codec id %d ", first&0x0f); !strings.Contains(err.Error(), want) {
			t.Errorf("first byte %#x: %q does not name the codec id", first, err)
		}
		if d.Probed() || d.prober.PushedCount != 0 {
			t.Errorf("first byte %#x: the refused tag reached the prober", first)
		}
	}
	// An H.264 tag still goes to the prober.
	d := NewDemuxer()
	if err := d.Push(flvio.TAG_VIDEO, 0, []byte{0x27, 1, 0, 0, 0, 0, 0, 0, 1, 9}); err != nil {
		t.Fatalf("an H.264 NALU tag: %v", err)
	}
	if d.prober.PushedCount != 1 {
		t.Fatalf("the H.264 tag did not reach the prober")
	}
}
