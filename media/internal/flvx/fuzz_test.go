package flvx

import (
	"testing"

	"github.com/nareix/joy4/format/flv/flvio"
)

// FuzzParseAMF: AMF0 as we decode it (commands, metadata) never panics,
// never recurses without bound, and what it returns re-encodes.
func FuzzParseAMF(f *testing.F) {
	f.Add(AMFBody("connect", 1.0, flvio.AMFMap{"app": "live", "tcUrl": "rtmp://x/live"}))
	f.Add(AMFBody("onMetaData", flvio.AMFMap{"width": 1280.0, "nested": flvio.AMFMap{"a": true}}))
	f.Add(AMFBody("publish", 0.0, nil, "s?vhost=v", "live"))
	f.Add([]byte{0x08, 0xff, 0xff, 0xff, 0xff})       // ECMA array claiming 4G entries
	f.Add([]byte{0x0a, 0x7f, 0xff, 0xff, 0xff})       // strict array claiming 2G entries
	f.Add([]byte{0x03, 0x03, 0x03, 0x03, 0x03, 0x03}) // nested objects
	f.Add([]byte{0x0c, 0xff, 0xff, 0xff, 0xff})       // long string past the end
	f.Fuzz(func(t *testing.T, b []byte) {
		vals, _ := ParseAMF(b)
		_ = AMFBody(vals...)
		_, _ = MetadataFromScript(b)
	})
}

// FuzzDemuxer: FLV tag bodies as a publisher sends them (codec headers,
// NALUs, AAC frames, script data), in any order and with any timestamps
// (backwards jumps included), end in an error or a packet, never a panic.
func FuzzDemuxer(f *testing.F) {
	f.Add(uint8(flvio.TAG_VIDEO), int32(0), []byte{0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x40})
	f.Add(uint8(flvio.TAG_AUDIO), int32(-5), []byte{0xaf, 0x00, 0x12, 0x10})
	f.Add(uint8(flvio.TAG_VIDEO), int32(1<<30), []byte{0x27, 0x01, 0, 0, 0, 0, 0, 0, 4, 0x41, 0, 0, 0})
	f.Add(uint8(flvio.TAG_AUDIO), int32(0), []byte{0x2f, 0x01}) // MP3: unsupported codec
	f.Add(uint8(flvio.TAG_VIDEO), int32(0), []byte{0x1c, 0x00}) // HEVC/VP6 id: unsupported
	f.Add(uint8(flvio.TAG_SCRIPTDATA), int32(0), AMFBody("onMetaData", flvio.AMFMap{"duration": 1.0}))
	f.Fuzz(func(t *testing.T, typ uint8, ts int32, body []byte) {
		d := NewDemuxer()
		// The same tag twice, then with the timestamp jumping back: the
		// demuxer keeps state between pushes.
		for _, at := range []int32{ts, ts, ts - 1000, 0} {
			if err := d.Push(typ, at, body); err != nil {
				return
			}
			if d.Probed() {
				d.Streams()
				for {
					if _, ok := d.Packet(); !ok {
						break
					}
				}
			}
		}
	})
}

// FuzzTagInfo: a hub tag of any bytes is refused or split within bounds.
func FuzzTagInfo(f *testing.F) {
	f.Add([]byte{9, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0, 16})
	f.Add([]byte{9, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, body, err := TagInfo(b)
		if err == nil && len(body) > len(b) {
			t.Fatalf("body of %d bytes from a %d-byte tag", len(body), len(b))
		}
	})
}
