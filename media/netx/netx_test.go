package netx_test

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/mediatest/syscalls"
	"github.com/livecluster/livecluster/media/netx"
)

// wrapper is a connection wrapper as node/connlimit's: Write is the
// wrapped connection's; with writev it also has WriteBuffers.
type wrapper struct{ net.Conn }

type writevWrapper struct{ net.Conn }

func (w writevWrapper) WriteBuffers(v *net.Buffers) (int64, error) { return v.WriteTo(w.Conn) }

// TestWriteBuffersOneWritev: through a wrapper with WriteBuffers the
// slices go out with one write system call (writev); through a wrapper
// without, one per slice, which is what the fan-out paid before. The
// peer gets the same bytes either way.
func TestWriteBuffersOneWritev(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
		want func(calls int) bool
	}{
		{"writev", func(c net.Conn) net.Conn { return writevWrapper{c} }, func(n int) bool { return n == 1 }},
		{"per-slice", func(c net.Conn) net.Conn { return wrapper{c} }, func(n int) bool { return n == 32 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			nc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c := tc.wrap(nc)
			var bufs net.Buffers
			var want []byte
			for i := range 32 {
				b := bytes.Repeat([]byte{byte(i)}, 100+i)
				bufs = append(bufs, b)
				want = append(want, b...)
			}
			runtime.LockOSThread()
			before := syscalls.ThreadWrites(t)
			n, err := netx.WriteBuffers(c, &bufs)
			calls := syscalls.ThreadWrites(t) - before
			runtime.UnlockOSThread()
			if err != nil || n != int64(len(want)) {
				t.Fatalf("WriteBuffers: %d bytes, %v; want %d", n, err, len(want))
			}
			if len(bufs) != 0 {
				t.Errorf("%d slices left unconsumed", len(bufs))
			}
			if !tc.want(calls) {
				t.Errorf("%d write system calls for 32 slices", calls)
			}
			c.Close()
			got, err := io.ReadAll(peer)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("peer got %d bytes (%v), want %d", len(got), err, len(want))
			}
		})
	}
}

// TryWrite never waits: into a socket whose peer does not read it writes
// what fits, returns ErrWouldBlock with the rest in v, and once the peer
// has read, the rest goes out: the peer gets every byte in order.
func TestTryWriteFullSocket(t *testing.T) {
	if !netx.Supported {
		t.Skip("no TryWriter on this system")
	}
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
	defer nc.Close()
	_ = nc.(*net.TCPConn).SetWriteBuffer(4096)
	w := netx.NewTryWriter(wrapper{nc}) // no SyscallConn, no Unwrap
	if w != nil {
		t.Fatal("a TryWriter for a connection that does not expose its socket")
	}
	w = netx.NewTryWriter(unwrapper{nc})
	if w == nil {
		t.Fatal("no TryWriter through Unwrap")
	}
	var want []byte
	var v net.Buffers
	for i := range 256 {
		b := bytes.Repeat([]byte{byte(i)}, 4000+i)
		v = append(v, b)
		want = append(want, b...)
	}
	var sent int64
	n, err := w.TryWrite(&v)
	sent += n
	if err != netx.ErrWouldBlock || n == 0 || n >= int64(len(want)) {
		t.Fatalf("TryWrite into a socket nobody reads: %d of %d bytes, %v; want some, and ErrWouldBlock", n, len(want), err)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	deadline := time.Now().Add(20 * time.Second)
	for len(v) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still unsent after 20 s", len(want)-int(sent))
		}
		n, err := w.TryWrite(&v)
		sent += n
		if err != nil && err != netx.ErrWouldBlock {
			t.Fatal(err)
		}
		runtime.Gosched()
	}
	nc.Close()
	if b := <-got; sent != int64(len(want)) || !bytes.Equal(b, want) {
		t.Fatalf("sent %d, peer got %d bytes, want %d in order", sent, len(b), len(want))
	}
}

type unwrapper struct{ net.Conn }

func (u unwrapper) Unwrap() net.Conn { return u.Conn }
