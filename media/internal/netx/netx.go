// Package netx writes shared slices to a connection with one writev.
package netx

import "net"

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
