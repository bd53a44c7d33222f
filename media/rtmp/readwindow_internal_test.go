package rtmp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/mediatest"
)

// readCounter counts the reads of the connection under the Conn.
type readCounter struct {
	net.Conn
	reads atomic.Int64
	at    func(time.Time) // if set, told the time of every read
}

func (r *readCounter) Read(p []byte) (int, error) {
	r.reads.Add(1)
	if r.at != nil {
		r.at(time.Now())
	}
	return r.Conn.Read(p)
}

// Unwrap returns the connection underneath, as node/connlimit's wrapper
// does (the paced reader sets socket options through it).
func (r *readCounter) Unwrap() net.Conn { return r.Conn }

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

// countingListener wraps every accepted connection in a readCounter.
type countingListener struct {
	net.Listener
	conns chan *readCounter
}

func (l *countingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &readCounter{Conn: nc}
	l.conns <- rc
	return rc, nil
}

// countingHandler takes a publish's packets until the client stops.
type countingHandler struct{ done chan int }

func (h countingHandler) ServePublish(ctx context.Context, c *Conn) error {
	if _, err := c.Streams(); err != nil {
		return err
	}
	n := 0
	for {
		if _, err := c.ReadPacket(); err != nil {
			h.done <- n
			return nil
		}
		n++
	}
}

func (countingHandler) ServePlay(context.Context, *Conn) error { return errors.New("no play") }

// The window a Server applies to a publish: Config.PublishReadWindow's 0
// is the default (50 ms), negative is off, and PublishReadWindowFunc,
// when set, wins with 0 meaning off (what a configuration key's 0s says).
// A client publishes 60 packets 5 ms apart; the reads of the server's
// socket during the publish tell whether its reads were paced.
func TestServerPublishReadWindow(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	for _, tc := range []struct {
		name  string
		cfg   Config
		fn    func() time.Duration
		paced bool
	}{
		{name: "Config 0 (default)", paced: true},
		{name: "Config negative", cfg: Config{PublishReadWindow: -1}},
		{name: "Func 0 over Config default", fn: func() time.Duration { return 0 }},
		{name: "Func 50ms over Config negative", cfg: Config{PublishReadWindow: -1}, fn: func() time.Duration { return 50 * time.Millisecond }, paced: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cl := &countingListener{Listener: ln, conns: make(chan *readCounter, 1)}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan int, 1)
			srv := &Server{Handler: countingHandler{done: done}, Config: tc.cfg, PublishReadWindowFunc: tc.fn,
				Logger: slog.New(slog.DiscardHandler)}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ctx, cl) }()
			defer func() { cancel(); <-served }()

			c, err := Dial(ctx, "rtmp://"+ln.Addr().String()+"/live/s", Config{})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Publish(); err != nil {
				t.Fatal(err)
			}
			if err := c.WriteHeader(streams, nil); err != nil {
				t.Fatal(err)
			}
			rc := <-cl.conns
			time.Sleep(100 * time.Millisecond) // past the setup's reads
			before := rc.reads.Load()
			const n = 60
			for i := range n {
				if err := c.WritePacket(pkts[i%len(pkts)]); err != nil {
					t.Fatal(err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // the last window's read
			reads := rc.reads.Load() - before
			c.Close()
			if got := <-done; got < n {
				t.Fatalf("server read %d packets, want at least %d", got, n)
			}
			// Paced: about one read a window over the 0.3 s or more the
			// packets take (8 here); not paced: one per packet (60 here),
			// fewer only when a starved reader finds several waiting.
			if tc.paced && reads > 20 || !tc.paced && reads < n/2 {
				t.Errorf("%d reads for %d packets 5 ms apart; paced %v", reads, n, tc.paced)
			} else {
				t.Logf("%d reads for %d packets 5 ms apart", reads, n)
			}
		})
	}
}

// Paced reads start at the windows of the wall clock (multiples of the
// window), the same instants for every connection, whatever the phase at
// which each publisher started: so a process with many publishers wakes
// once per window for all of them. Two publishers start at different
// phases of a 100 ms window and send a message every 5 ms; once they are
// sending, every read of either comes within a few ms after a window
// start. (Timed each from when its read drained the socket, as before,
// the reads would keep each publisher's starting phase, 30 and 70 ms.)
func TestPublishReadWindowAligned(t *testing.T) {
	const window = 100 * time.Millisecond
	type read struct {
		conn int
		at   time.Time
	}
	reads := make(chan read, 1000)
	var done sync.WaitGroup
	for i, phase := range []time.Duration{30 * time.Millisecond, 70 * time.Millisecond} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		const n = 100
		go func() {
			pc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return
			}
			defer pc.Close()
			// Start sending at this publisher's phase of a window.
			now := time.Now()
			time.Sleep(time.Until(now.Truncate(window).Add(window + phase)))
			for j := range n {
				if _, err := pc.Write(appendMessage(nil, csVideo, msgVideo, 1, uint32(j*5), bytes.Repeat([]byte{byte(j)}, 200), 128)); err != nil {
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
		defer nc.Close()
		rc := &readCounter{Conn: nc, at: func(at time.Time) { reads <- read{i, at} }}
		c := newConn(rc, Config{PublishReadWindow: window}.withDefaults(), slog.Default(), true)
		c.readWindow = c.cfg.PublishReadWindow
		c.lowat = newRcvLowat(rc)
		done.Add(1)
		go func() {
			defer done.Done()
			for j := range n {
				if _, err := c.readMessage(); err != nil {
					t.Errorf("publisher %d, message %d: %v", i, j, err)
					return
				}
			}
		}()
	}
	done.Wait()
	close(reads)
	first := map[int]bool{}
	var late []string
	count := 0
	for r := range reads {
		if !first[r.conn] {
			// The read that found the first message: at the publisher's phase.
			first[r.conn] = true
			continue
		}
		count++
		// Generous for a loaded machine (a woken goroutine may run late);
		// unaligned reads would sit at 30 or 70 ms.
		if ph := r.at.Sub(r.at.Truncate(window)); ph > 20*time.Millisecond {
			late = append(late, fmt.Sprintf("publisher %d at %v into a window", r.conn, ph.Round(time.Millisecond)))
		}
	}
	// A read may come late now and then when the machine is busy, never
	// as a rule.
	if count < 6 || len(late) > count/4 {
		t.Errorf("%d of %d paced reads not at a window start: %v", len(late), count, late)
	} else {
		t.Logf("%d paced reads, %d more than 20 ms after a window start", count, len(late))
	}
}
