//go:build !linux

package netx

import "net"

// TryWriter is Linux only; elsewhere NewTryWriter returns nil and the
// hub's readers write from their own goroutines.
type TryWriter struct{}

// NewTryWriter returns nil: not supported on this system.
func NewTryWriter(net.Conn) *TryWriter { return nil }

// TryWrite is never called (NewTryWriter returns nil).
func (w *TryWriter) TryWrite(v *net.Buffers) (int64, error) { return 0, ErrWouldBlock }

// Supported reports whether TryWriter works on this system.
const Supported = false
