package rtmp

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/internal/flvx"
	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/media/mediatest/syscalls"
)

// The shared wire form (Encode, appendMessage) must be the very bytes the
// per-connection writer sends, for every chunking case: one chunk, an
// exact multiple of the chunk size, several chunks, extended timestamps.
func TestEncodeMatchesWriter(t *testing.T) {
	for _, cs := range []uint32{128, 4096} {
		for _, n := range []int{0, 1, 127, 128, 129, 4096, 4097, 10000} {
			for _, ts := range []uint32{0, 40, 0xfffffe, 0xffffff, 0x1234567} {
				for _, server := range []bool{true, false} {
					body := make([]byte, n)
					for i := range body {
						body[i] = byte(i * 31)
					}
					typ := uint8(flvio.TAG_VIDEO)
					if n == 1 {
						typ = flvio.TAG_SCRIPTDATA
					}
					tag := flvx.EncodeRaw(typ, int32(ts), body)
					var want bytes.Buffer
					c := &Conn{server: server, outChunkSize: cs, streamID: 1}
					c.bw = bufio.NewWriter(&want)
					if err := c.writeTags([][]byte{tag}); err == nil {
						c.bw.Flush()
					} else {
						// writeTags flushes to a nil net.Conn deadline; the
						// bytes are in want by then.
						t.Logf("writeTags: %v", err)
					}
					got, err := c.Encode(nil, tag)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want.Bytes()) {
						t.Fatalf("chunk %d, body %d, ts %#x, server %v: Encode gives %d bytes, the writer %d",
							cs, n, ts, server, len(got), want.Len())
					}
				}
			}
		}
	}
}

// player is one server-side play connection with its peer discarding
// what arrives, for the benchmark.
type player struct {
	c    *Conn
	peer net.Conn
}

func newPlayers(tb testing.TB, n int) []*player {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	out := make([]*player, 0, n)
	for range n {
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		nc, err := ln.Accept()
		if err != nil {
			tb.Fatal(err)
		}
		c := newConn(nc, Config{}.withDefaults(), slog.New(slog.DiscardHandler), true)
		c.outChunkSize, c.streamID = 4096, 1
		c.accepted.Store(true)
		go func() { _, _ = io.Copy(io.Discard, peer) }()
		out = append(out, &player{c: c, peer: peer})
	}
	tb.Cleanup(func() {
		for _, p := range out {
			p.c.nc.Close()
			p.peer.Close()
		}
	})
	return out
}

// BenchmarkPlayerWrite measures the hot path of fan-out per player: the hub
// queues one merge window's packets of the test stream (window=0: one
// packet) to N readers, and each reader writes them to a real loopback
// socket (its peer discards). One op is one window for all N players.
// Paths, in one run:
//
//   - direct: the hot path (CopyWire with the connection as DirectWriter:
//     the hub's flushers write every player's window with one non-blocking
//     writev; the readers' goroutines sleep unless a socket is full);
//   - wire: the path before the flushers (NextWire: RTMP chunks made once
//     per message and shared, one writev per player from its own goroutine,
//     all woken at the window's end);
//   - tags: what players did before (Next, then WriteTags: each player
//     chunks every message again through its write buffer);
//   - floor: the window's chunks, made once, written with one writev per
//     socket and nothing else (no hub), as cmd/floor does.
//
// allocs/op must not grow with N (nothing is allocated per player per
// window). cpu-ns/player is the process's CPU per player and window, and
// cpu-s/s/100 the CPU-seconds per second of stream per 100 players, the
// unit of scripts/bench-fanout.sh; both include the discarding peers'
// reads (same process), so compare paths with each other, not with
// bench-fanout's figures.
func BenchmarkPlayerWrite(b *testing.B) {
	streams, pkts := mediatest.ReadFLV(b, mediatest.TestFLV(b))
	for _, path := range []string{"direct", "wire", "tags", "floor"} {
		for _, w := range []time.Duration{0, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond} {
			if path == "tags" && w != 50*time.Millisecond {
				continue
			}
			for _, n := range []int{1, 100, 1000} {
				b.Run(fmt.Sprintf("path=%s/window=%dms/readers=%d", path, w.Milliseconds(), n), func(b *testing.B) {
					benchPlayers(b, streams, pkts, path, n, w)
				})
			}
		}
	}
}

func benchPlayers(b *testing.B, streams []av.CodecData, pkts []av.Packet, path string, n int, w time.Duration) {
	h := hub.New("k", hub.Config{MergeWindow: -1, QueuePackets: 1 << 16, QueueBytes: 1 << 30})
	defer h.Close()
	src, err := h.Publish(streams, nil)
	if err != nil {
		b.Fatal(err)
	}
	ps := newPlayers(b, n)
	ctx, cancel := context.WithCancel(context.Background())
	var (
		done   sync.WaitGroup
		errc   = make(chan error, n)
		wg     sync.WaitGroup
		window [][]byte // floor: this window's chunks, made once
	)
	starts := make([]chan struct{}, n)
	if path == "direct" {
		h.Close()
		h = hub.New("k", hub.Config{MergeWindow: time.Hour, QueuePackets: 1 << 16, QueueBytes: 1 << 30})
		defer h.Close()
		if src, err = h.Publish(streams, nil); err != nil {
			b.Fatal(err)
		}
	}
	for i, p := range ps {
		var rd *hub.Reader
		if path == "direct" {
			if rd, err = h.NewReader(); err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer rd.Close()
				if err := rd.CopyWire(ctx, p.c, p.c.WriteWire); err != nil && ctx.Err() == nil {
					errc <- err
				}
			}()
			continue
		}
		if path != "floor" {
			if rd, err = h.NewReader(); err != nil {
				b.Fatal(err)
			}
		}
		starts[i] = make(chan struct{}, 1)
		start := starts[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if rd != nil {
				defer rd.Close()
			}
			var bufs [][]byte
			for {
				select {
				case <-ctx.Done():
					return
				case <-start:
				}
				var err error
				switch path {
				case "wire":
					if bufs, err = rd.NextWire(ctx, p.c, bufs); err == nil {
						err = p.c.WriteWire(bufs)
					}
				case "tags":
					var tags [][]byte
					if tags, err = rd.Next(ctx); err == nil {
						err = p.c.WriteTags(tags)
					}
				default:
					bufs = append(bufs[:0], window...)
					err = p.c.WriteWire(bufs)
				}
				if err != nil {
					errc <- err
				}
				done.Done()
			}
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	var (
		base   time.Duration
		next   int
		mediaT time.Duration // stream time the rounds covered
	)
	round := func() {
		window = window[:0]
		end := pkts[next].Time + base + w
		for first := true; first || pkts[next].Time+base < end; first = false {
			if !first && w == 0 {
				break
			}
			p := pkts[next]
			p.Time += base
			if path == "floor" {
				tag := flvx.EncodePacket(p, streams[p.Idx])
				w, err := ps[0].c.Encode(nil, tag)
				if err != nil {
					b.Fatal(err)
				}
				window = append(window, w)
			} else if err := src.WritePacket(p); err != nil {
				b.Fatal(err)
			}
			if next++; next == len(pkts) {
				next, base = 0, base+pkts[len(pkts)-1].Time+40*time.Millisecond
			}
		}
		if path == "direct" {
			h.Flush() // returns when every batch is written or handed off
		} else {
			done.Add(n)
			for _, s := range starts {
				s <- struct{}{}
			}
			done.Wait()
		}
		select {
		case err := <-errc:
			b.Fatal(err)
		default:
		}
	}
	round() // the cached GOP and headers go out first
	if path == "direct" {
		// Every reader's goroutine wrote its GOP and handed its
		// connection to the flushers.
		for range 100 {
			time.Sleep(10 * time.Millisecond)
			round()
		}
	}
	st0 := h.Stats()
	t0 := pkts[next].Time + base
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		round()
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/player")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/player")
	if path == "direct" {
		st := h.Stats()
		b.ReportMetric(float64(st.Handoffs-st0.Handoffs+st.ReaderWrites-st0.ReaderWrites)/float64(b.N), "goroutine-writes/op")
	}
	mediaT = pkts[next].Time + base - t0
	if mediaT > 0 {
		b.ReportMetric(cpu.Seconds()/mediaT.Seconds()/float64(n)*100, "cpu-s/s/100")
	}
}

// writevConn wraps a connection as node/connlimit does (Write is the
// wrapped connection's) and writes net.Buffers with its writev.
type writevConn struct{ net.Conn }

func (c writevConn) WriteBuffers(v *net.Buffers) (int64, error) { return v.WriteTo(c.Conn) }

// TestWriteWireWritevThroughWrapper: a player's window of wire forms goes
// out in one write system call (writev) when the server's connection is a
// wrapper (every edge and origin listener is one), not one per message,
// and the peer gets the bytes in order.
func TestWriteWireWritevThroughWrapper(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(writevConn{nc}, Config{}.withDefaults(), slog.New(slog.DiscardHandler), true)
	c.outChunkSize, c.streamID = 4096, 1
	c.accepted.Store(true)
	var (
		bufs [][]byte
		want []byte
	)
	for i := range 16 {
		w, err := c.Encode(nil, flvx.EncodeRaw(flvio.TAG_VIDEO, int32(i*33), bytes.Repeat([]byte{byte(i)}, 500+i)))
		if err != nil {
			t.Fatal(err)
		}
		bufs = append(bufs, w)
		want = append(want, w...)
	}
	// The first write arms the write deadline (a runtime timer, whose
	// wake-up of the poller is a write system call too); the deadline is
	// moved at most once a second, so the next windows make no such call.
	if err := c.WriteWire([][]byte{want[:0]}); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	before := syscalls.ThreadWrites(t)
	err = c.WriteWire(bufs)
	calls := syscalls.ThreadWrites(t) - before
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Errorf("%d write system calls for 16 messages, want 1 (writev)", calls)
	}
	nc.Close()
	got, err := io.ReadAll(peer)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("peer got %d bytes (%v), want %d", len(got), err, len(want))
	}
}
