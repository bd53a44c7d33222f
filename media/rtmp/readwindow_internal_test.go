package rtmp

import (
	"bytes"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// readCounter counts the reads of the connection under the Conn.
type readCounter struct {
	net.Conn
	reads atomic.Int64
}

func (r *readCounter) Read(p []byte) (int, error) {
	r.reads.Add(1)
	return r.Conn.Read(p)
}

// A publisher sending message by message, 5 ms apart: with the read window
// the server takes them with about one read per window, without it with
// one or more per message; either way every message arrives whole and in
// order.
func TestPublishReadWindow(t *testing.T) {
	for _, tc := range []struct {
		window   time.Duration
		min, max int64
	}{
		{window: 50 * time.Millisecond, min: 1, max: 15},
		{window: -1, min: 30, max: 1 << 30},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		const n = 60
		go func() {
			pc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return
			}
			defer pc.Close()
			for i := range n {
				body := bytes.Repeat([]byte{byte(i)}, 200)
				if _, err := pc.Write(appendMessage(nil, csVideo, msgVideo, 1, uint32(i*5), body, 128)); err != nil {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		nc, err := ln.Accept()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		rc := &readCounter{Conn: nc}
		c := newConn(rc, Config{PublishReadWindow: tc.window}.withDefaults(), slog.Default(), true)
		c.readWindow = c.cfg.PublishReadWindow
		for i := range n {
			m, err := c.readMessage()
			if err != nil {
				t.Fatalf("window %v, message %d: %v", tc.window, i, err)
			}
			if m.ts != uint32(i*5) || len(m.data) != 200 || m.data[0] != byte(i) || m.data[199] != byte(i) {
				t.Fatalf("window %v, message %d: ts %d, %d bytes, first %d", tc.window, i, m.ts, len(m.data), m.data[0])
			}
		}
		nc.Close()
		if r := rc.reads.Load(); r < tc.min || r > tc.max {
			t.Errorf("window %v: %d reads for %d messages over %v, want %d..%d", tc.window, r, n, n*5*time.Millisecond, tc.min, tc.max)
		} else {
			t.Logf("window %v: %d reads for %d messages", tc.window, r, n)
		}
	}
}
