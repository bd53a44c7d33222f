package stamp

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// frame builds length-prefixed NAL units.
func frame(size int, nals ...[]byte) []byte {
	var b []byte
	for _, n := range nals {
		switch size {
		case 1:
			b = append(b, byte(len(n)))
		case 2:
			b = binary.BigEndian.AppendUint16(b, uint16(len(n)))
		default:
			b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		}
		b = append(b, n...)
	}
	return b
}

func TestInsertFind(t *testing.T) {
	sent := time.UnixMicro(1_795_000_000_123_456)
	idr := []byte{0x65, 0x88, 0x84, 0x00, 0x00, 0x03}
	aud := []byte{0x09, 0xf0}
	x264SEI := []byte{0x06, 0x05, 0x02, 0xaa, 0xbb, 0x80} // someone else's user data
	for _, size := range []int{1, 2, 4} {
		for name, in := range map[string][]byte{
			"slice only":      frame(size, idr),
			"after AUD":       frame(size, aud, idr),
			"with other SEI":  frame(size, x264SEI, idr),
			"AUD + other SEI": frame(size, aud, x264SEI, idr),
		} {
			s := Stamp{Sent: sent, MediaMS: 123456}
			out := Insert(in, size, s)
			got, ok := Find(out, size)
			if !ok || !got.Sent.Equal(sent) || got.MediaMS != 123456 {
				t.Errorf("size %d, %s: Find = %+v, %v; want %+v", size, name, got, ok, s)
			}
			if _, ok := Find(in, size); ok {
				t.Errorf("size %d, %s: found a stamp in an unstamped frame", size, name)
			}
			// The original NAL units follow, unchanged and in order.
			if !bytes.HasSuffix(out, in[len(in)-size-len(idr):]) {
				t.Errorf("size %d, %s: the slice is not last and intact", size, name)
			}
			if bytes.HasPrefix(in, frame(size, aud)) && !bytes.HasPrefix(out, frame(size, aud)) {
				t.Errorf("size %d, %s: the AUD must stay first", size, name)
			}
		}
	}
}

func TestSEIHasNoStartCodeEmulation(t *testing.T) {
	sei := SEI(Stamp{Sent: time.UnixMicro(1_000_000_000_000_000), MediaMS: 0})
	if bytes.Contains(sei, []byte{0, 0}) {
		t.Fatalf("SEI %x contains 00 00: decoders would need emulation prevention", sei)
	}
}

func TestFindAfterSliceIgnored(t *testing.T) {
	// SEI after the first slice is not where decoders (or we) look.
	idr := []byte{0x65, 0x88}
	stamped := Insert(frame(4, idr), 4, Stamp{Sent: time.Now()})
	moved := append(frame(4, idr), stamped[:len(stamped)-4-len(idr)]...)
	if _, ok := Find(moved, 4); ok {
		t.Fatal("found a stamp after the first slice")
	}
}

func TestFindMalformed(t *testing.T) {
	good := Insert(frame(4, []byte{0x65, 1}), 4, Stamp{Sent: time.Now()})
	for i := 0; i <= len(good); i++ {
		Find(good[:i], 4) // truncated anywhere: no panic
	}
	for _, b := range [][]byte{
		nil, {0}, {0, 0, 0, 9, 6}, {0xff, 0xff, 0xff, 0xff, 6},
		frame(4, []byte{0x06, 0xff, 0xff}), frame(4, []byte{0x06, 5, 200, 'x'}),
		frame(4, append(append([]byte{0x06, 5, 20}, UUID[:]...), "t=x;m=1"...)),
	} {
		if _, ok := Find(b, 4); ok {
			t.Errorf("Find(%x) found a stamp", b)
		}
	}
}
