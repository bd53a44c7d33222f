package rtmp

import (
	"net"
	"syscall"
)

// rcvLowat sets a TCP socket's receive low-water mark (SO_RCVLOWAT): until
// that many bytes are queued, Linux does not report the socket readable,
// so an edge-triggered poller is not woken by each arrival. A
// non-blocking read still returns whatever is queued, so the mark only
// matters to a reader that waits for data: keep it at 1 whenever one
// may. The zero value (a connection without a socket underneath, such as
// net.Pipe or TLS) does nothing.
type rcvLowat struct{ rc syscall.RawConn }

// newRcvLowat finds the socket under nc, through wrappers that expose the
// connection they wrap with Unwrap (node/connlimit's does).
func newRcvLowat(nc net.Conn) rcvLowat {
	for {
		u, ok := nc.(interface{ Unwrap() net.Conn })
		if !ok {
			break
		}
		nc = u.Unwrap()
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return rcvLowat{}
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return rcvLowat{}
	}
	return rcvLowat{rc: rc}
}

// set sets the mark to n bytes; it reports whether it did (false without
// a socket, or when the socket is closed or refused the option).
func (l rcvLowat) set(n int) bool {
	if l.rc == nil {
		return false
	}
	var serr error
	if err := l.rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, n)
	}); err != nil {
		return false
	}
	return serr == nil
}
