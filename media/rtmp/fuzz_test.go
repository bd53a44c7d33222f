package rtmp

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/internal/flvx"
)

// memConn is the edge of this unit test: the bytes of a hostile peer in,
// everything we write out to nowhere. Deadlines are irrelevant in memory.
type memConn struct{ r io.Reader }

func (c memConn) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (memConn) Close() error                     { return nil }
func (memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (memConn) SetDeadline(time.Time) error      { return nil }
func (memConn) SetReadDeadline(time.Time) error  { return nil }
func (memConn) SetWriteDeadline(time.Time) error { return nil }

// chunk0 builds one fmt-0 chunk on chunk stream 3 holding a whole message
// (callers keep bodies under the 128-byte default chunk size).
func chunk0(typ uint8, body []byte) []byte {
	b := []byte{0x03, 0, 0, 0, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body)), typ, 1, 0, 0, 0}
	return append(b, body...)
}

// FuzzReadMessages feeds arbitrary chunk-stream bytes, after the handshake,
// through the same path a publishing connection takes: chunk reassembly,
// protocol control, AMF commands and the FLV/codec demuxer. Whatever the
// input, reading must end in an error or EOF — never a panic, a hang or an
// allocation beyond the configured bounds.
func FuzzReadMessages(f *testing.F) {
	f.Add(chunk0(msgSetChunkSize, []byte{0x7f, 0xff, 0xff, 0xff}))
	f.Add(chunk0(msgCommandAMF0, flvx.AMFBody("connect", 1.0, flvio.AMFMap{"app": "live"})))
	f.Add(chunk0(msgVideo, []byte{0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x40}))
	f.Add(chunk0(msgVideo, []byte{0x17, 0x00, 0, 0, 0, 0x01}))
	f.Add(chunk0(msgAudio, []byte{0xaf, 0x00, 0x12}))
	f.Add(chunk0(msgAudio, []byte{0xaf, 0x00}))
	f.Add(chunk0(msgDataAMF0, flvx.AMFBody("@setDataFrame", "onMetaData", flvio.AMFMap{"width": 1280.0})))
	f.Add([]byte{0xc3, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x3f, 0xff, 0xff, 0xff, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := Config{MaxChunkSize: 64 << 10, MaxMessageSize: 256 << 10}.withDefaults()
		c := newConn(memConn{bytes.NewReader(data)}, cfg, slog.New(slog.DiscardHandler), true)
		c.accepted.Store(true)
		for range 10000 {
			if err := c.readOne(); err != nil {
				return
			}
		}
		t.Fatalf("10000 messages from %d bytes of input", len(data))
	})
}

// FuzzServerHandshake feeds arbitrary bytes as C0C1 and C2, plain or
// digest: the server answers or refuses, never panics, and reads no more
// than the handshake's 1+1536+1536 bytes.
func FuzzServerHandshake(f *testing.F) {
	plain := make([]byte, 1+2*hsSize)
	plain[0] = 3
	f.Add(plain)
	digest := make([]byte, 1+2*hsSize)
	digest[0] = 3
	copy(digest[5:9], []byte{0x80, 0, 7, 2})
	for i := 9; i < 1+hsSize; i++ {
		digest[i] = byte(i * 7)
	}
	c1 := digest[1 : 1+hsSize]
	hsImprint(c1, hsClientPartialKey, 0)
	f.Add(digest)
	f.Add([]byte{6})
	f.Add([]byte{3, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		c := newConn(memConn{r}, Config{}.withDefaults(), slog.New(slog.DiscardHandler), true)
		err := c.serverHandshake()
		if err == nil && len(data) < 1+2*hsSize {
			t.Fatalf("handshake completed on %d bytes", len(data))
		}
		if consumed := len(data) - r.Len(); err == nil && c.br.Buffered() == 0 && consumed > 1+2*hsSize+16<<10 {
			t.Fatalf("handshake read %d bytes", consumed)
		}
	})
}
