// Package stamp embeds the wall-clock send time in H.264 video frames and
// reads it back, so a player can measure publisher → player latency.
//
// The stamp is an H.264 SEI NAL unit (type 6) carrying one
// user_data_unregistered message (payload type 5) with a fixed UUID,
// prepended to the frame's NAL units (after an access unit delimiter, if
// the frame starts with one). Decoders skip unregistered user data, and the
// stamp lives inside the video payload, so it survives every hop that keeps
// the video bytes (RTMP, HTTP-FLV, FLV → MPEG-TS) unlike an AMF data
// message, which media/hub does not forward to players.
//
// The payload after the UUID is ASCII ("t=<unix µs>;m=<media ms>"), which
// contains no 0x00 bytes, so it never needs emulation prevention bytes.
package stamp

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"time"
)

// UUID marks our SEI messages; ASCII, so it has no 0x00 bytes either.
var UUID = [16]byte{'l', 'i', 'v', 'e', 'c', 'l', 'u', 's', 't', 'e', 'r', '-', 'l', 'a', 't', '1'}

// Stamp is what a frame carries.
type Stamp struct {
	Sent    time.Time // wall clock at the publisher when the frame was sent
	MediaMS uint32    // the frame's FLV timestamp at the publisher
}

// SEI returns the stamp as one NAL unit (without a length prefix).
func SEI(s Stamp) []byte {
	text := "t=" + strconv.FormatInt(s.Sent.UnixMicro(), 10) + ";m=" + strconv.FormatUint(uint64(s.MediaMS), 10)
	size := len(UUID) + len(text) // < 255: one size byte
	b := make([]byte, 0, 3+size+1)
	b = append(b, 0x06, 5, byte(size))
	b = append(b, UUID[:]...)
	b = append(b, text...)
	return append(b, 0x80) // rbsp_trailing_bits
}

// Insert returns a copy of the length-prefixed NAL units nalus (length
// fields of lenSize bytes: 1, 2 or 4) with the stamp's SEI in front, or
// after a leading access unit delimiter. It returns nalus unchanged when
// lenSize is not 1, 2 or 4, or the SEI does not fit a 1-byte length.
func Insert(nalus []byte, lenSize int, s Stamp) []byte {
	sei := SEI(s)
	if (lenSize != 1 && lenSize != 2 && lenSize != 4) || (lenSize == 1 && len(sei) > 255) {
		return nalus
	}
	at := 0
	if n, ok := nalLen(nalus, lenSize); ok && n > 0 && lenSize+n <= len(nalus) && nalus[lenSize]&0x1f == 9 {
		at = lenSize + n
	}
	out := make([]byte, 0, len(nalus)+lenSize+len(sei))
	out = append(out, nalus[:at]...)
	out = putLen(out, lenSize, len(sei))
	out = append(out, sei...)
	return append(out, nalus[at:]...)
}

func putLen(b []byte, size, n int) []byte {
	switch size {
	case 1:
		return append(b, byte(n))
	case 2:
		return binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		return binary.BigEndian.AppendUint32(b, uint32(n))
	}
}

func nalLen(b []byte, size int) (int, bool) {
	if len(b) < size {
		return 0, false
	}
	switch size {
	case 1:
		return int(b[0]), true
	case 2:
		return int(binary.BigEndian.Uint16(b)), true
	case 4:
		return int(binary.BigEndian.Uint32(b)), true
	}
	return 0, false
}

// Find looks for a stamp in the length-prefixed NAL units of one frame,
// scanning only the NAL units before the first slice (where SEI must be).
// Malformed input yields ok == false, never a panic.
func Find(nalus []byte, lenSize int) (Stamp, bool) {
	for len(nalus) > 0 {
		n, ok := nalLen(nalus, lenSize)
		if !ok || n <= 0 || n > len(nalus)-lenSize {
			return Stamp{}, false
		}
		nal := nalus[lenSize : lenSize+n]
		nalus = nalus[lenSize+n:]
		switch typ := nal[0] & 0x1f; {
		case typ >= 1 && typ <= 5:
			return Stamp{}, false // first slice: no SEI after it
		case typ == 6:
			if s, ok := parseSEI(nal[1:]); ok {
				return s, true
			}
		}
	}
	return Stamp{}, false
}

// parseSEI walks the SEI messages of one SEI RBSP for ours.
func parseSEI(b []byte) (Stamp, bool) {
	for len(b) > 1 {
		typ, n := seiNum(b)
		b = b[n:]
		size, n := seiNum(b)
		b = b[n:]
		if size > len(b) {
			return Stamp{}, false
		}
		msg := b[:size]
		b = b[size:]
		if typ == 5 && size >= len(UUID) && bytes.Equal(msg[:len(UUID)], UUID[:]) {
			return parseText(msg[len(UUID):])
		}
		if len(b) > 0 && b[0] == 0x80 {
			break
		}
	}
	return Stamp{}, false
}

// seiNum reads an SEI payload type or size: 0xFF bytes add 255 each.
func seiNum(b []byte) (v, n int) {
	for n < len(b) {
		c := b[n]
		n++
		v += int(c)
		if c != 0xff {
			break
		}
	}
	return v, n
}

func parseText(b []byte) (Stamp, bool) {
	t, m, ok := bytes.Cut(b, []byte(";m="))
	if !ok || !bytes.HasPrefix(t, []byte("t=")) {
		return Stamp{}, false
	}
	us, err := strconv.ParseInt(string(t[2:]), 10, 64)
	if err != nil {
		return Stamp{}, false
	}
	ms, err := strconv.ParseUint(string(m), 10, 32)
	if err != nil {
		return Stamp{}, false
	}
	return Stamp{Sent: time.UnixMicro(us), MediaMS: uint32(ms)}, true
}
