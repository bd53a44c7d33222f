package flvtag

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestReaderPrefix: with Prefix, audio and video bodies are cut to their
// first bytes, script tags stay whole, and the tags after a cut one still
// parse (the rest was skipped exactly).
func TestReaderPrefix(t *testing.T) {
	body := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i%251)
		}
		return b
	}
	tags := []Tag{
		{Type: Script, TS: 0, Body: body(300, 1)},
		{Type: Video, TS: 0, Body: body(5000, 2)},
		{Type: Audio, TS: 23, Body: body(40, 3)},
		{Type: Video, TS: 33, Body: body(100, 4)},
		{Type: Audio, TS: 46, Body: body(400, 5)},
	}
	var file bytes.Buffer
	file.Write([]byte{'F', 'L', 'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0})
	for _, tg := range tags {
		file.Write(Encode(tg.Type, tg.TS, tg.Body))
	}
	for _, prefix := range []int{0, 64, 100, 4096} {
		r, err := NewReader(bytes.NewReader(file.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		r.Prefix = prefix
		for i, want := range tags {
			got, err := r.Next()
			if err != nil {
				t.Fatalf("prefix %d, tag %d: %v", prefix, i, err)
			}
			wb := want.Body
			if prefix > 0 && want.Type != Script && len(wb) > prefix {
				wb = wb[:prefix]
			}
			if got.Type != want.Type || got.TS != want.TS || !bytes.Equal(got.Body, wb) {
				t.Fatalf("prefix %d, tag %d: type %d ts %d %d bytes, want type %d ts %d %d bytes (the body's start)",
					prefix, i, got.Type, got.TS, len(got.Body), want.Type, want.TS, len(wb))
			}
		}
		if _, err := r.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("prefix %d: after the last tag: %v, want io.EOF", prefix, err)
		}
	}
}
