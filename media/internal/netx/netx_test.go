package netx_test

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"testing"

	"github.com/livecluster/livecluster/media/internal/netx"
	"github.com/livecluster/livecluster/media/mediatest/syscalls"
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
