// Package netx writes shared slices to a connection with one writev,
// blocking (WriteBuffers) or without ever waiting (TryWriter).
package netx

import (
	"errors"
	"net"
	"syscall"
)

// BuffersWriter is a connection wrapper that writes a net.Buffers with the
// writev of the connection it wraps. net.Buffers.WriteTo uses writev only
// on the net package's own connections; through any other net.Conn (a
// wrapper that counts connections, say) it makes one write call per
// slice, and a fan-out's cost goes with the number of write calls. A
// wrapper whose Write is the wrapped connection's implements it as
// `return v.WriteTo(inner)` (or WriteBuffers(inner, v) for a wrapper of a
// wrapper).
type BuffersWriter interface {
	// WriteBuffers writes v as v.WriteTo does, consuming v (not the bytes).
	WriteBuffers(v *net.Buffers) (int64, error)
}

// WriteBuffers writes v to c, with c's WriteBuffers when c has one
// (one writev), otherwise with v.WriteTo(c). It returns the bytes written
// and the first write error; v is consumed as far as it was written.
func WriteBuffers(c net.Conn, v *net.Buffers) (int64, error) {
	if bw, ok := c.(BuffersWriter); ok {
		return bw.WriteBuffers(v)
	}
	return v.WriteTo(c)
}

// SyscallConner is a connection whose file descriptor can be reached
// (*net.TCPConn; a wrapper that exposes the one it wraps, as node/connlimit's
// does).
type SyscallConner interface {
	SyscallConn() (syscall.RawConn, error)
}

// RawConn returns the raw connection under c: c's own SyscallConn, or that
// of the connection c wraps, found through SyscallConn or Unwrap() net.Conn.
// ok is false when there is none (a pipe, a TLS connection).
func RawConn(c net.Conn) (rc syscall.RawConn, ok bool) {
	for range 8 { // wrappers of wrappers; a loop would be a bug, not a reason to hang
		if sc, yes := c.(SyscallConner); yes {
			rc, err := sc.SyscallConn()
			return rc, err == nil && rc != nil
		}
		u, yes := c.(interface{ Unwrap() net.Conn })
		if !yes {
			return nil, false
		}
		c = u.Unwrap()
	}
	return nil, false
}

// ErrWouldBlock is TryWriter.TryWrite's error when the socket took less
// than all it was given (full, or a partial write).
var ErrWouldBlock = errors.New("netx: socket full")

// Consume drops the first n bytes of v as a write of n bytes does.
func Consume(v *net.Buffers, n int64) {
	for len(*v) > 0 {
		l := int64(len((*v)[0]))
		if l > n {
			(*v)[0] = (*v)[0][n:]
			return
		}
		n -= l
		(*v)[0] = nil
		*v = (*v)[1:]
	}
}
