package rtmp_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/media/rtmp"
)

// plainHandshake does C0C1 / S0S1S2 / C2 on a raw connection.
func plainHandshake(t *testing.T, nc net.Conn) {
	t.Helper()
	c0c1 := make([]byte, 1537)
	c0c1[0] = 3
	if _, err := nc.Write(c0c1); err != nil {
		t.Fatal(err)
	}
	s := make([]byte, 3073)
	if _, err := io.ReadFull(nc, s); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(s[1:1537]); err != nil {
		t.Fatal(err)
	}
}

// chunk0 encodes a whole message as one type-0 chunk (fits in 128 bytes or
// announces more than it sends).
func chunk0(csid byte, typ byte, length int, body []byte) []byte {
	b := []byte{csid, 0, 0, 0, byte(length >> 16), byte(length >> 8), byte(length), typ, 0, 0, 0, 0}
	return append(b, body...)
}

// expectClosed checks the server closes the connection promptly.
func expectClosed(t *testing.T, nc net.Conn, what string) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: server did not close the connection", what)
	}
}

func TestHostileInput(t *testing.T) {
	if testing.Short() {
		t.Skip("ffmpeg test")
	}
	ts := startServer(t, rtmp.Config{MaxMessageSize: 1 << 20, MaxChunkSize: 64 << 10})
	pub := publishFFmpeg(t, ts.url("good"))
	waitPublishing(t, ts, "default/live/good", pub)

	// A player of the good stream runs through all the abuse.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	player, err := rtmp.Dial(ctx, ts.url("good"), rtmp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer player.Close()
	if err := player.Play(); err != nil {
		t.Fatal(err)
	}
	if _, err := player.Streams(); err != nil {
		t.Fatal(err)
	}
	var frames atomic.Int64
	playErr := make(chan error, 1)
	go func() {
		for {
			if _, err := player.ReadPacket(); err != nil {
				playErr <- err
				return
			}
			frames.Add(1)
		}
	}()

	dial := func() net.Conn {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}

	// Garbage instead of a handshake.
	nc := dial()
	nc.Write(bytes.Repeat([]byte("GET / HTTP/1.1\r\n"), 200))
	expectClosed(t, nc, "garbage handshake")

	// Bare connect-and-close (a load balancer's TCP check).
	nc = dial()
	nc.Close()

	// Oversized Set Chunk Size.
	nc = dial()
	plainHandshake(t, nc)
	nc.Write(chunk0(2, 1, 4, []byte{0x7f, 0xff, 0xff, 0xff}))
	expectClosed(t, nc, "huge chunk size")

	// A message announcing 16 MiB (limit 1 MiB): refused before any allocation.
	nc = dial()
	plainHandshake(t, nc)
	nc.Write(chunk0(3, 20, 0xffffff, bytes.Repeat([]byte{2}, 128)))
	expectClosed(t, nc, "huge message")

	// Many chunk streams.
	nc = dial()
	plainHandshake(t, nc)
	// One complete 1-byte message on each of 100 chunk stream ids (two-byte
	// basic header: csid 64+i), so only the chunk-stream bound can stop it.
	for i := 0; i < 100; i++ {
		nc.Write([]byte{0, byte(i), 0, 0, 0, 0, 0, 1, 8, 0, 0, 0, 0, 0xaf})
	}
	expectClosed(t, nc, "many chunk streams")

	// Hostile stream names are refused with a reason.
	for _, name := range []string{"x%20y", "a%00b", strings.Repeat("n", 300), ".."} {
		c, err := rtmp.Dial(ctx, ts.url(name), rtmp.Config{})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Publish()
		c.Close()
		var se *rtmp.StatusError
		if !errors.As(err, &se) || se.Code != "NetStream.Publish.BadName" {
			t.Errorf("publish %q: %v, want BadName", name, err)
		}
	}

	before := frames.Load()
	mediatest.Eventually(t, 10*time.Second, "the good stream to keep flowing", func() bool {
		return frames.Load() > before+30
	})
	select {
	case err := <-playErr:
		t.Fatalf("player of the good stream failed: %v", err)
	default:
	}
	logs := ts.logs.String()
	for _, bad := range []string{"level=ERROR", "level=WARN"} {
		if strings.Contains(logs, bad) {
			t.Errorf("server logged %s:\n%s", bad, logs)
		}
	}
	if !strings.Contains(logs, "more than 64 chunk streams") {
		t.Errorf("chunk stream bound not what closed the connection:\n%s", logs)
	}
	if !strings.Contains(logs, "closed during handshake") {
		t.Errorf("bare connect not seen in debug log:\n%s", logs)
	}
}

var (
	clientKey = []byte("Genuine Adobe Flash Player 001")
	serverKey = append([]byte("Genuine Adobe Flash Media Server 001"),
		0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1,
		0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB,
		0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE)
)

func mac(key []byte, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, key)
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// digestOffset: the digest follows 4 offset bytes at base (8 or 772).
func digestOffset(p []byte, base int) int {
	return (int(p[base])+int(p[base+1])+int(p[base+2])+int(p[base+3]))%728 + base + 4
}

func TestDigestHandshake(t *testing.T) {
	ts := startServer(t, rtmp.Config{})
	for _, base := range []int{8, 772} {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		c1 := make([]byte, 1536)
		rand.Read(c1)
		binary.BigEndian.PutUint32(c1[0:4], 0)
		binary.BigEndian.PutUint32(c1[4:8], 0x80000702) // Flash player version: digest handshake
		off := digestOffset(c1, base)
		copy(c1[off:], mac(clientKey, c1[:off], c1[off+32:]))
		c1Digest := append([]byte(nil), c1[off:off+32]...)
		nc.Write(append([]byte{3}, c1...))
		s := make([]byte, 3073)
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(nc, s); err != nil {
			t.Fatal(err)
		}
		s1, s2 := s[1:1537], s[1537:]
		if s[0] != 3 || binary.BigEndian.Uint32(s1[4:8]) == 0 {
			t.Fatalf("base %d: S0 %d, S1 version %x: not a digest answer", base, s[0], s1[4:8])
		}
		// S1 carries a digest keyed with the server's partial key, in the
		// scheme the client used.
		soff := digestOffset(s1, base)
		if !hmac.Equal(s1[soff:soff+32], mac(serverKey[:36], s1[:soff], s1[soff+32:])) {
			t.Fatalf("base %d: S1 digest invalid", base)
		}
		// S2 is signed with a key derived from the client's digest.
		key := mac(serverKey, c1Digest)
		if !hmac.Equal(s2[1504:], mac(key, s2[:1504])) {
			t.Fatalf("base %d: S2 signature invalid", base)
		}
		nc.Write(s1) // C2
		nc.Close()
	}
	// A plain C1 gets the echo.
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c1 := make([]byte, 1536)
	rand.Read(c1[8:])
	nc.Write(append([]byte{3}, c1...))
	s := make([]byte, 3073)
	if _, err := io.ReadFull(nc, s); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s[1537:], c1) {
		t.Fatal("plain handshake: S2 is not C1")
	}
}
