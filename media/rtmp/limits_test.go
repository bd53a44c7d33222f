package rtmp_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/media/rtmp"
)

// reasons records what the server reported through Server.Rejected.
type reasons struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *reasons) add(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[reason]++
}

func (r *reasons) get(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[reason]
}

// trickle writes b one byte at a time every gap until a write fails, then
// returns how long after start the server closed the connection.
func trickle(nc net.Conn, b []byte, gap time.Duration) time.Duration {
	start := time.Now()
	go func() {
		for _, x := range b {
			if _, err := nc.Write([]byte{x}); err != nil {
				return
			}
			time.Sleep(gap)
		}
	}()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, nc)
	return time.Since(start)
}

// A client trickling its handshake, or its connect after a quick
// handshake, is cut at the handshake timeout and counted; a normal client
// connects meanwhile.
func TestSlowHandshakeAndConnect(t *testing.T) {
	var rs reasons
	const hto = 600 * time.Millisecond
	ts := startServerWith(t, rtmp.Config{HandshakeTimeout: hto}, func(s *rtmp.Server) { s.Rejected = rs.add })

	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c0c1 := make([]byte, 1537)
	c0c1[0] = 3
	if d := trickle(nc, c0c1, 20*time.Millisecond); d > hto+time.Second {
		t.Errorf("trickled handshake held for %s (timeout %s)", d, hto)
	}

	nc2, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	plainHandshake(t, nc2)
	body := bodyOf("connect", 1.0, flvio.AMFMap{"app": "live", "tcUrl": "rtmp://x/live"})
	// Each chunk arrives well inside the idle timeout; only the setup
	// deadline can stop this.
	if d := trickle(nc2, chunk0(3, 20, len(body), body), 20*time.Millisecond); d > hto+time.Second {
		t.Errorf("trickled connect held for %s (timeout %s)", d, hto)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rtmp.Dial(ctx, ts.url("ok"), rtmp.Config{})
	if err != nil {
		t.Fatalf("normal client: %v", err)
	}
	c.Close()
	mediatest.Eventually(t, 3*time.Second, "two handshake timeouts counted", func() bool {
		return rs.get(rtmp.ReasonHandshakeTimeout) == 2
	})
}

func bodyOf(vals ...any) []byte {
	b := make([]byte, 0, 128)
	for _, v := range vals {
		n := flvio.LenAMF0Val(v)
		tmp := make([]byte, n)
		flvio.FillAMF0Val(tmp, v)
		b = append(b, tmp...)
	}
	return b
}

// A publisher trickling the chunks of one message after publish started
// is cut at the idle timeout: the deadline covers the whole message.
func TestTrickledChunksCut(t *testing.T) {
	var rs reasons
	const idle = 700 * time.Millisecond
	ts := startServerWith(t, rtmp.Config{ReadTimeout: idle}, func(s *rtmp.Server) { s.Rejected = rs.add })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = ctx
	plainHandshake(t, nc)
	// A video message announcing 4 KiB, sent in 128-byte chunks 200 ms
	// apart: every chunk inside the idle timeout, the message far past it.
	msg := chunk0(6, 9, 4096, make([]byte, 128))
	for i := 0; i < 31; i++ {
		msg = append(msg, 0xc6)
		msg = append(msg, make([]byte, 128)...)
	}
	start := time.Now()
	go func() {
		for off := 0; off < len(msg); off += 129 {
			if _, err := nc.Write(msg[off:min(off+129, len(msg))]); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, nc)
	if d := time.Since(start); d > idle+time.Second {
		t.Errorf("trickled message held the connection for %s (idle timeout %s)", d, idle)
	}
}

// A publisher above the bitrate ceiling is closed with
// NetStream.Publish.Rejected, which ffmpeg prints, and counted.
func TestPublishBitrateCeiling(t *testing.T) {
	if testing.Short() {
		t.Skip("ffmpeg test")
	}
	var rs reasons
	ts := startServerWith(t, rtmp.Config{}, func(s *rtmp.Server) {
		s.Rejected = rs.add
		s.PublishBitrate = func() (int64, time.Duration) { return 20_000, time.Second }
	})
	pub := publishFFmpeg(t, ts.url("fat"))
	if err := pub.Wait(t, 20*time.Second); err == nil {
		t.Fatal("ffmpeg publishing above the ceiling exited cleanly")
	}
	if s := pub.Stderr.String(); !strings.Contains(s, "above this server's limit of 20 kbit/s") {
		t.Errorf("ffmpeg did not print the reason:\n%s", s)
	}
	if rs.get(rtmp.ReasonBitrate) != 1 {
		t.Errorf("bitrate rejections = %d, want 1", rs.get(rtmp.ReasonBitrate))
	}
}

// Refuse answers connect with NetConnection.Connect.Rejected and the
// reason, which ffmpeg prints.
func TestRefuse(t *testing.T) {
	if testing.Short() {
		t.Skip("ffmpeg test")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := &rtmp.Server{Config: rtmp.Config{HandshakeTimeout: 5 * time.Second}}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				srv.Refuse(context.Background(), nc, errors.New("server at its connection limit, try again later"))
				nc.Close()
			}()
		}
	}()
	ffmpeg := mediatest.Tool(t, "ffmpeg")
	p := mediatest.Start(t, ffmpeg, "-v", "error", "-re", "-i", mediatest.TestFLV(t), "-c", "copy", "-f", "flv",
		"rtmp://"+ln.Addr().String()+"/live/x")
	if err := p.Wait(t, 15*time.Second); err == nil {
		t.Fatal("ffmpeg succeeded against a refusing server")
	}
	if s := p.Stderr.String(); !strings.Contains(s, "connection limit") {
		t.Errorf("ffmpeg did not print the reason:\n%s", s)
	}
}
