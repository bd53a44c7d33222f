package netx

import (
	"net"
	"os"
	"syscall"
	"unsafe"
)

// maxIovec is Linux's IOV_MAX: a writev takes at most this many slices.
const maxIovec = 1024

// TryWriter writes to a non-blocking socket without ever waiting for it:
// a writev straight on the file descriptor, which takes what the socket
// has room for. It is what lets the hub's flushers write to thousands of
// players from a few goroutines: a player whose socket is full costs one
// system call returning EAGAIN, not a parked goroutine. It reuses its
// iovec and its callback, so a write allocates nothing. Not safe for
// concurrent use; the caller also keeps every other writer of the
// connection off it during TryWrite (the poller's write lock would
// otherwise make TryWrite wait).
type TryWriter struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool // w.writev, bound once
	iov []syscall.Iovec
	n   int
	err syscall.Errno
}

// NewTryWriter returns a TryWriter for c's socket, or nil when c has no
// file descriptor to write to (see RawConn).
func NewTryWriter(c net.Conn) *TryWriter {
	rc, ok := RawConn(c)
	if !ok {
		return nil
	}
	w := &TryWriter{rc: rc}
	w.fn = w.writev
	return w
}

func (w *TryWriter) writev(fd uintptr) bool {
	r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
	w.n, w.err = int(r), e
	// true even on EAGAIN: the caller hands the rest to a goroutine that
	// may wait; this one must not park in the poller.
	return true
}

// TryWrite writes v with writev as far as the socket takes it now,
// consuming v as far as written (not the bytes). It returns the bytes
// written and nil when all of v went, ErrWouldBlock when the socket took
// less (full: the rest is in v), or the write's error (a deadline that
// passed, a closed or reset connection).
func (w *TryWriter) TryWrite(v *net.Buffers) (int64, error) {
	var total int64
	for len(*v) > 0 {
		want := 0
		w.iov = w.iov[:0]
		for _, b := range *v {
			if len(b) == 0 {
				continue
			}
			var iv syscall.Iovec
			iv.Base = &b[0]
			iv.SetLen(len(b))
			w.iov = append(w.iov, iv)
			want += len(b)
			if len(w.iov) == maxIovec {
				break
			}
		}
		if want == 0 {
			*v = (*v)[:0]
			break
		}
		err := w.rc.Write(w.fn)
		clear(w.iov) // do not keep the bytes alive until the next write
		if err != nil {
			return total, err
		}
		switch {
		case w.err == syscall.EINTR:
			continue
		case w.err == syscall.EAGAIN:
			return total, ErrWouldBlock
		case w.err != 0:
			return total, os.NewSyscallError("writev", w.err)
		}
		total += int64(w.n)
		Consume(v, int64(w.n))
		if w.n < want {
			return total, ErrWouldBlock
		}
	}
	return total, nil
}

// Supported reports whether TryWriter works on this system.
const Supported = true
