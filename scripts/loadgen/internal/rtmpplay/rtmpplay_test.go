package rtmpplay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/livecluster/livecluster/scripts/loadgen/internal/flvtag"
)

// chunks builds the server side of a connection: hand-made RTMP chunks.
type chunks struct{ bytes.Buffer }

func (w *chunks) basic(f byte, csid uint32) {
	switch {
	case csid < 64:
		w.WriteByte(f<<6 | byte(csid))
	case csid < 320:
		w.WriteByte(f << 6)
		w.WriteByte(byte(csid - 64))
	default:
		w.WriteByte(f<<6 | 1)
		_ = binary.Write(w, binary.LittleEndian, uint16(csid-64))
	}
}

func u24b(v uint32) []byte { return []byte{byte(v >> 16), byte(v >> 8), byte(v)} }

// fmt0 writes a type-0 header; ts ≥ 0xffffff goes to the extended field.
func (w *chunks) fmt0(csid, ts uint32, length int, typ uint8, sid uint32) {
	w.basic(0, csid)
	f := min(ts, 0xffffff)
	w.Write(u24b(f))
	w.Write(u24b(uint32(length)))
	w.WriteByte(typ)
	_ = binary.Write(w, binary.LittleEndian, sid)
	if f == 0xffffff {
		_ = binary.Write(w, binary.BigEndian, ts)
	}
}

func conn(t *testing.T, server []byte) *Conn {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	go func() { _, _ = b.Write(server) }()
	go func() { _, _ = bytes.NewBuffer(nil).ReadFrom(b) }() // drain what the client writes
	return &Conn{nc: a, br: bufio.NewReader(a), inChunk: 128, chunks: map[uint32]*chunkStream{}, stall: 5 * time.Second}
}

func TestReadMessages(t *testing.T) {
	var w chunks
	big := bytes.Repeat([]byte{0xab}, 300)
	// A 300-byte video message in 128-byte chunks on csid 6, interleaved
	// with a 4-byte audio message on csid 4 (a 3-byte basic header csid too).
	w.fmt0(6, 1000, len(big), typVideo, 1)
	w.Write(big[:128])
	w.fmt0(400, 1001, 4, typAudio, 1)
	w.Write([]byte{0xaf, 1, 2, 3})
	w.basic(3, 6)
	w.Write(big[128:256])
	w.basic(3, 6)
	w.Write(big[256:])
	// Type-1 then type-2 then type-3 headers: deltas accumulate.
	w.basic(1, 6)
	w.Write(u24b(40))
	w.Write(u24b(2))
	w.WriteByte(typVideo)
	w.Write([]byte{0x27, 1})
	w.basic(2, 6)
	w.Write(u24b(33))
	w.Write([]byte{0x27, 2})
	w.basic(3, 6)
	w.Write([]byte{0x27, 3})
	// Set Chunk Size 4096, then an extended timestamp message in one chunk.
	w.fmt0(2, 0, 4, typSetChunkSize, 0)
	_ = binary.Write(&w, binary.BigEndian, uint32(4096))
	w.fmt0(7, 0x01000000, 200, typVideo, 1)
	w.Write(bytes.Repeat([]byte{1}, 200))

	c := conn(t, w.Bytes())
	want := []struct {
		typ  uint8
		ts   uint32
		size int
	}{
		{typAudio, 1001, 4}, {typVideo, 1000, 300}, {typVideo, 1040, 2}, {typVideo, 1073, 2}, {typVideo, 1106, 2},
		{typVideo, 0x01000000, 200},
	}
	for i, wt := range want {
		m, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.Type != wt.typ || m.TS != wt.ts || len(m.Body) != wt.size {
			t.Fatalf("message %d: type %d ts %d size %d, want %+v", i, m.Type, m.TS, len(m.Body), wt)
		}
	}
	if c.inChunk != 4096 {
		t.Fatalf("chunk size %d after Set Chunk Size 4096", c.inChunk)
	}
}

func TestHostileChunks(t *testing.T) {
	for name, server := range map[string][]byte{
		"type-3 first":     {0xc6},
		"huge message":     append([]byte{0x06}, append(append(u24b(0), u24b(0xffffff)...), typVideo, 1, 0, 0, 0)...),
		"chunk size 0":     {0x02, 0, 0, 0, 0, 0, 4, typSetChunkSize, 0, 0, 0, 0, 0, 0, 0, 0},
		"truncated header": {0x06, 0, 0},
	} {
		c := conn(t, server)
		done := make(chan error, 1)
		go func() { _, err := c.ReadMessage(); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: no error", name)
			}
		case <-time.After(time.Second):
			// A truncated stream waits for more bytes: close and expect an error.
			c.Close()
			if err := <-done; err == nil {
				t.Errorf("%s: no error after close", name)
			}
		}
	}
}

func TestAggregate(t *testing.T) {
	var body []byte
	for i, ts := range []uint32{5000, 5033} {
		payload := []byte{0x27, 1, 0, 0, 0, byte(i)}
		body = append(body, flvtag.Encode(flvtag.Video, ts, payload)...)
	}
	var got []flvtag.Tag
	err := aggregate(Message{Type: typAggregate, TS: 100, Body: body}, func(t flvtag.Tag) error {
		got = append(got, flvtag.Tag{Type: t.Type, TS: t.TS, Body: append([]byte(nil), t.Body...)})
		return nil
	})
	if err != nil || len(got) != 2 || got[0].TS != 100 || got[1].TS != 133 || got[1].Body[5] != 1 {
		t.Fatalf("aggregate: %v %+v", err, got)
	}
	if err := aggregate(Message{Body: body[:len(body)-3]}, func(flvtag.Tag) error { return nil }); err == nil {
		t.Fatal("truncated aggregate accepted")
	}
	stop := errors.New("stop")
	if err := aggregate(Message{Body: body}, func(flvtag.Tag) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("callback error lost: %v", err)
	}
}

// TestBodyPrefix: with a body prefix, audio and video messages keep their
// first bytes only, the chunks after them still parse (the rest of each
// message was skipped exactly), control messages stay whole, and every
// byte counts for acknowledgements.
func TestBodyPrefix(t *testing.T) {
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i % 251)
		}
		return b
	}
	big := body(300)
	var w chunks
	// 300 bytes of video in 128-byte chunks, interleaved with audio.
	w.fmt0(6, 1000, len(big), typVideo, 1)
	w.Write(big[:128])
	w.fmt0(4, 1001, 4, typAudio, 1)
	w.Write([]byte{0xaf, 1, 2, 3})
	w.basic(3, 6)
	w.Write(big[128:256])
	w.basic(3, 6)
	w.Write(big[256:])
	w.fmt0(2, 0, 4, typSetChunkSize, 0)
	_ = binary.Write(&w, binary.BigEndian, uint32(4096))
	w.fmt0(7, 2000, 200, typVideo, 1)
	w.Write(body(200))
	w.fmt0(4, 2001, 3, typAudio, 1)
	w.Write([]byte{0xaf, 9, 9})
	wire := w.Len()

	for _, prefix := range []int{0, 64, 128, 200, 1000} {
		c := conn(t, w.Bytes())
		c.SetBodyPrefix(prefix)
		keep := func(n int) int {
			if prefix == 0 {
				return n
			}
			return min(n, prefix)
		}
		want := []struct {
			typ  uint8
			ts   uint32
			size int
		}{{typAudio, 1001, 4}, {typVideo, 1000, keep(300)}, {typVideo, 2000, keep(200)}, {typAudio, 2001, 3}}
		for i, wt := range want {
			m, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("prefix %d, message %d: %v", prefix, i, err)
			}
			if m.Type != wt.typ || m.TS != wt.ts || len(m.Body) != wt.size {
				t.Fatalf("prefix %d, message %d: type %d ts %d size %d, want %+v", prefix, i, m.Type, m.TS, len(m.Body), wt)
			}
			if m.Type == typVideo && !bytes.Equal(m.Body, body(wt.size)) {
				t.Fatalf("prefix %d, message %d: body is not the message's first %d bytes", prefix, i, wt.size)
			}
		}
		if c.inChunk != 4096 {
			t.Fatalf("prefix %d: chunk size %d after Set Chunk Size 4096", prefix, c.inChunk)
		}
		if c.rx != int64(wire) {
			t.Fatalf("prefix %d: %d bytes counted for acknowledgements, the server sent %d", prefix, c.rx, wire)
		}
	}
}
