// Package flvtag reads FLV tags from a file or an HTTP-FLV body without
// decoding the media: the load generator needs only each tag's type,
// timestamp, whether a video tag is a keyframe, and the H.264 NAL units.
package flvtag

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// FLV tag types.
const (
	Audio  = 8
	Video  = 9
	Script = 18
)

// MaxBody bounds a tag body so a hostile or broken peer cannot make a
// reader allocate without limit.
const MaxBody = 16 << 20

// Tag is one FLV tag. Body is the tag body (the RTMP message payload).
type Tag struct {
	Type uint8
	TS   uint32 // milliseconds
	Body []byte
}

// Keyframe reports whether t is a video keyframe (not a sequence header).
func (t Tag) Keyframe() bool {
	return t.Type == Video && len(t.Body) >= 2 && t.Body[0]>>4 == 1 && !t.SeqHeader()
}

// SeqHeader reports whether t is an AVC or AAC sequence header.
func (t Tag) SeqHeader() bool {
	switch t.Type {
	case Video:
		return len(t.Body) >= 2 && t.Body[0]&0x0f == 7 && t.Body[1] == 0
	case Audio:
		return len(t.Body) >= 2 && t.Body[0]>>4 == 10 && t.Body[1] == 0
	}
	return false
}

// AVCNALUs returns the length-prefixed NAL units of an H.264 video tag
// (AVCPacketType 1), or nil for anything else.
func (t Tag) AVCNALUs() []byte {
	if t.Type != Video || len(t.Body) < 5 || t.Body[0]&0x0f != 7 || t.Body[1] != 1 {
		return nil
	}
	return t.Body[5:]
}

// NALLengthSize returns the NAL length field size of an AVC sequence header
// tag (1, 2 or 4), or 0 when t is not one.
func (t Tag) NALLengthSize() int {
	if t.Type != Video || !t.SeqHeader() || len(t.Body) < 10 {
		return 0
	}
	return int(t.Body[9]&3) + 1
}

// Encode returns the tag as FLV bytes (11-byte header, body, 4-byte
// previous-tag-size trailer) with timestamp ts.
func Encode(typ uint8, ts uint32, body []byte) []byte {
	b := make([]byte, 11+len(body)+4)
	b[0] = typ
	putU24(b[1:], uint32(len(body)))
	putU24(b[4:], ts&0xffffff)
	b[7] = byte(ts >> 24)
	copy(b[11:], body)
	binary.BigEndian.PutUint32(b[11+len(body):], uint32(11+len(body)))
	return b
}

func putU24(b []byte, v uint32) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }

// Reader reads tags from an FLV byte stream.
type Reader struct {
	// Prefix, when positive, is how much of an audio or video tag's body
	// Next returns: the rest is read and discarded without a copy. A
	// player needs only the start of a frame for its keyframe flag and
	// embedded send time.
	Prefix int
	r      *bufio.Reader
	hdr    [15]byte
	buf    []byte
}

// NewReader reads and checks the FLV file header from r. It fails when r
// does not start with an FLV header.
func NewReader(r io.Reader) (*Reader, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 32<<10)
	}
	var h [9]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return nil, fmt.Errorf("read FLV header: %w", err)
	}
	if string(h[:3]) != "FLV" {
		return nil, fmt.Errorf("not an FLV stream (starts with %q)", h[:3])
	}
	off := int(binary.BigEndian.Uint32(h[5:]))
	if off < 9 || off > 1024 {
		return nil, fmt.Errorf("FLV header: bad data offset %d", off)
	}
	// The rest of the header, then PreviousTagSize0.
	if _, err := br.Discard(off - 9 + 4); err != nil {
		return nil, fmt.Errorf("read FLV header: %w", err)
	}
	return &Reader{r: br}, nil
}

// Next returns the next tag. Its Body is valid until the following call.
// It returns io.EOF at a clean end and io.ErrUnexpectedEOF inside a tag.
func (r *Reader) Next() (Tag, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:11]); err != nil {
		if errors.Is(err, io.EOF) {
			return Tag{}, io.EOF
		}
		return Tag{}, fmt.Errorf("read FLV tag header: %w", err)
	}
	h := r.hdr[:11]
	n := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	if n > MaxBody {
		return Tag{}, fmt.Errorf("FLV tag body of %d bytes exceeds %d", n, MaxBody)
	}
	ts := uint32(h[4])<<16 | uint32(h[5])<<8 | uint32(h[6]) | uint32(h[7])<<24
	if typ := h[0] & 0x1f; r.Prefix > 0 && n > r.Prefix && (typ == Audio || typ == Video) {
		if cap(r.buf) < r.Prefix {
			r.buf = make([]byte, r.Prefix)
		}
		b := r.buf[:r.Prefix]
		_, err := io.ReadFull(r.r, b)
		if err == nil {
			_, err = r.r.Discard(n - r.Prefix + 4) // the rest and PreviousTagSize
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return Tag{}, fmt.Errorf("read FLV tag body: %w", err)
		}
		return Tag{Type: typ, TS: ts, Body: b}, nil
	}
	if cap(r.buf) < n+4 {
		r.buf = make([]byte, n+4)
	}
	b := r.buf[:n+4]
	if _, err := io.ReadFull(r.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Tag{}, fmt.Errorf("read FLV tag body: %w", err)
	}
	return Tag{Type: h[0] & 0x1f, TS: ts, Body: b[:n]}, nil
}

// ReadFile reads every tag of an FLV file into memory (bodies copied).
func ReadFile(path string) ([]Tag, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var tags []Tag
	for {
		t, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: tag %d: %w", path, len(tags), err)
		}
		t.Body = append([]byte(nil), t.Body...)
		tags = append(tags, t)
	}
	if len(tags) == 0 {
		return nil, fmt.Errorf("%s: no FLV tags", path)
	}
	return tags, nil
}
