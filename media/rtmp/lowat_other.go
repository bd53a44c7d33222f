//go:build !linux

package rtmp

import "net"

// rcvLowat does nothing here: the receive low-water mark's effect on
// polling that the paced publish read relies on (lowat_linux.go) is
// Linux's. Reads are paced all the same; arrivals may wake the process.
type rcvLowat struct{}

func newRcvLowat(net.Conn) rcvLowat { return rcvLowat{} }

func (rcvLowat) set(int) bool { return false }
