package rtmp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nareix/joy4/av"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
)

// encOnly hides a connection's TryWriteBuffers: CopyWire then takes the
// reader-goroutine path (NextWire and WriteWire), the reference the
// flushers' bytes are compared with.
type encOnly struct{ hub.Encoder }

// unwrapConn is a wrapper like node/connlimit's: WriteBuffers with the
// socket's writev, Unwrap to reach it, and no SyscallConn of its own.
type unwrapConn struct{ writevConn }

func (u unwrapConn) Unwrap() net.Conn { return u.Conn }

// directPlayer is a server-side play connection on real loopback TCP and
// the bytes its peer received.
type directPlayer struct {
	c    *Conn
	peer net.Conn
	got  bytes.Buffer
	read sync.WaitGroup
	err  error // CopyWire's
	done chan struct{}
}

// newDirectPlayer connects a player. rbuf and wbuf, when > 0, shrink the
// peer's receive and the server's send buffer (a player whose socket
// fills); read false leaves the peer not reading until startReading.
func newDirectPlayer(t *testing.T, cfg Config, rbuf, wbuf int) *directPlayer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if rbuf > 0 {
		_ = peer.(*net.TCPConn).SetReadBuffer(rbuf)
	}
	if wbuf > 0 {
		_ = nc.(*net.TCPConn).SetWriteBuffer(wbuf)
	}
	// Wrapped as node/connlimit wraps every listener's connections: the
	// flushers reach the socket through Unwrap.
	c := newConn(unwrapConn{writevConn{nc}}, cfg.withDefaults(), slog.New(slog.DiscardHandler), true)
	c.outChunkSize, c.streamID = 4096, 1
	c.accepted.Store(true)
	p := &directPlayer{c: c, peer: peer, done: make(chan struct{})}
	t.Cleanup(func() {
		nc.Close()
		peer.Close()
		p.read.Wait()
	})
	return p
}

func (p *directPlayer) startReading() {
	p.read.Add(1)
	go func() {
		defer p.read.Done()
		_, _ = io.Copy(&p.got, p.peer)
	}()
}

// serve runs CopyWire for rd: direct (the connection as DirectWriter) or
// through the reader's goroutine. It closes the connection when CopyWire
// returns, so the peer's read ends.
func (p *directPlayer) serve(ctx context.Context, rd *hub.Reader, direct bool) {
	go func() {
		defer close(p.done)
		defer rd.Close()
		var enc hub.Encoder = p.c
		if !direct {
			enc = encOnly{p.c}
		}
		p.err = rd.CopyWire(ctx, enc, p.c.WriteWire)
		p.c.nc.Close()
	}()
}

// feeder publishes the test stream in order, looping with increasing
// timestamps, and ends a window every `per` packets.
type feeder struct {
	h    *hub.Hub
	src  *hub.Source
	pkts []av.Packet
	next int
	base time.Duration
}

func (f *feeder) feed(t *testing.T, n, per int) {
	t.Helper()
	for i := range n {
		p := f.pkts[f.next]
		p.Time += f.base
		if err := f.src.WritePacket(p); err != nil {
			t.Fatal(err)
		}
		if f.next++; f.next == len(f.pkts) {
			f.next, f.base = 0, f.base+f.pkts[len(f.pkts)-1].Time+40*time.Millisecond
		}
		if (i+1)%per == 0 {
			f.h.Flush()
		}
	}
	f.h.Flush()
}

// newDirectHub returns a hub whose windows end only at Flush, with the
// test stream published, and a feeder for it.
func newDirectHub(t *testing.T) *feeder {
	t.Helper()
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	h := hub.New("k", hub.Config{MergeWindow: time.Hour, QueuePackets: 1 << 16, QueueBytes: 1 << 30})
	t.Cleanup(h.Close)
	src, err := h.Publish(streams, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &feeder{h: h, src: src, pkts: pkts}
}

// waitDirect feeds windows of one packet until the flushers write n
// batches in one: every direct player's goroutine runs CopyWire, wrote
// what it had, and handed its connection to the flushers.
func waitDirect(t *testing.T, f *feeder, n int64) {
	t.Helper()
	mediatest.Eventually(t, 20*time.Second, "every player in direct mode", func() bool {
		d := f.h.Stats().DirectWrites
		f.feed(t, 1, 1)
		return f.h.Stats().DirectWrites-d == n
	})
}

// A player written by the hub's flushers receives the very bytes a player
// written by its own goroutine does, over real TCP.
func TestDirectSameBytesAsGoroutine(t *testing.T) {
	f := newDirectHub(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	direct, ref := newDirectPlayer(t, Config{}, 0, 0), newDirectPlayer(t, Config{}, 0, 0)
	for _, p := range []*directPlayer{direct, ref} {
		rd, err := f.h.NewReader() // both before any packet: the same start
		if err != nil {
			t.Fatal(err)
		}
		p.startReading()
		p.serve(ctx, rd, p == direct)
	}
	waitDirect(t, f, 1)
	f.feed(t, len(f.pkts), 4)
	st := f.h.Stats()
	f.h.Close()
	for _, p := range []*directPlayer{direct, ref} {
		<-p.done
		if p.err != nil {
			t.Fatalf("CopyWire: %v", p.err)
		}
		p.read.Wait()
	}
	if st.DirectWrites == 0 {
		t.Fatalf("no batch written by the flushers: %+v", st)
	}
	if direct.got.Len() == 0 || !bytes.Equal(direct.got.Bytes(), ref.got.Bytes()) {
		t.Fatalf("direct player got %d bytes, the goroutine path %d: not the same", direct.got.Len(), ref.got.Len())
	}
	if direct.c.BytesWritten() != int64(direct.got.Len()) {
		t.Fatalf("BytesWritten %d, the peer got %d", direct.c.BytesWritten(), direct.got.Len())
	}
	t.Logf("%d bytes; %+v", direct.got.Len(), st)
}

// A player whose peer stops reading: its socket fills, the flushers hand
// the rest to its goroutine, and the bytes stay in order; once the peer
// reads again the flushers write to it again.
func TestDirectStalledPlayerKeepsOrderAndResumes(t *testing.T) {
	f := newDirectHub(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The peer's receive buffer as the system makes it: a tiny one makes
	// TCP crawl (zero-window probes) once the peer reads again.
	stalled, ref := newDirectPlayer(t, Config{}, 0, 4096), newDirectPlayer(t, Config{}, 0, 0)
	for _, p := range []*directPlayer{stalled, ref} {
		rd, err := f.h.NewReader()
		if err != nil {
			t.Fatal(err)
		}
		p.serve(ctx, rd, p == stalled)
	}
	ref.startReading()
	waitDirect(t, f, 1)
	f.feed(t, len(f.pkts)/2, 3)
	st := f.h.Stats()
	if st.Handoffs == 0 {
		t.Fatalf("the stalled player's socket never filled: %+v", st)
	}
	stalled.startReading()
	// Resumed: the flushers write to it again (its goroutine drained what
	// queued meanwhile and handed it back). Windows go on until then.
	d0 := st.DirectWrites
	mediatest.Eventually(t, 20*time.Second, "direct writes after the peer reads again", func() bool {
		f.feed(t, 3, 3)
		return f.h.Stats().DirectWrites > d0
	})
	f.feed(t, 60, 3)
	st = f.h.Stats()
	f.h.Close()
	for _, p := range []*directPlayer{stalled, ref} {
		<-p.done
		if p.err != nil {
			t.Fatalf("CopyWire: %v", p.err)
		}
		p.read.Wait()
	}
	if !bytes.Equal(stalled.got.Bytes(), ref.got.Bytes()) {
		t.Fatalf("stalled player got %d bytes, the reference %d: not the same", stalled.got.Len(), ref.got.Len())
	}
	t.Logf("%d bytes; %+v", ref.got.Len(), st)
}

// A player that never reads again is dropped after the write timeout: its
// goroutine's blocking write of the rest times out.
func TestDirectStalledPlayerDropped(t *testing.T) {
	f := newDirectHub(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newDirectPlayer(t, Config{WriteTimeout: time.Second}, 4096, 4096)
	rd, err := f.h.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ctx, rd, true)
	start := time.Now()
	mediatest.Eventually(t, 30*time.Second, "the stalled player dropped", func() bool {
		select {
		case <-p.done:
			return true
		default:
			f.feed(t, 3, 3)
			return false
		}
	})
	if !errors.Is(p.err, os.ErrDeadlineExceeded) {
		t.Fatalf("CopyWire ended with %v, want a write deadline exceeded", p.err)
	}
	t.Logf("dropped after %v; %+v", time.Since(start).Round(time.Millisecond), f.h.Stats())
}

// With room in every socket a window's end wakes no player's goroutine:
// the flushers write every batch whole.
func TestDirectFlushWakesNoGoroutine(t *testing.T) {
	f := newDirectHub(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 20
	ps := make([]*directPlayer, n)
	for i := range ps {
		ps[i] = newDirectPlayer(t, Config{}, 4<<20, 4<<20)
		rd, err := f.h.NewReader()
		if err != nil {
			t.Fatal(err)
		}
		ps[i].startReading()
		ps[i].serve(ctx, rd, true)
	}
	waitDirect(t, f, n)
	st0 := f.h.Stats()
	const windows = 50
	f.feed(t, windows*3-1, 3) // and the feeder's last Flush: 50 windows
	st := f.h.Stats()
	if got := st.DirectWrites - st0.DirectWrites; got != windows*n {
		t.Errorf("%d batches written by the flushers in %d windows of %d players, want %d", got, windows, n, windows*n)
	}
	if st.ReaderWrites != st0.ReaderWrites || st.Handoffs != st0.Handoffs {
		t.Errorf("player goroutines wrote: reader writes %d → %d, handoffs %d → %d",
			st0.ReaderWrites, st.ReaderWrites, st0.Handoffs, st.Handoffs)
	}
	t.Logf("%+v", st)
}
