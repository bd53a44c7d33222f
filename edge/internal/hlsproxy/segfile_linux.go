package hlsproxy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// segFile holds a cached segment's bytes in an anonymous memory file
// (memfd), sealed against change, so a response is sent with sendfile from
// the page cache, as nginx serves files, instead of being copied from the
// heap into every player's socket: that copy was most of the edge's CPU
// under many HLS players.
//
// sendfile on Linux sends from the file's offset and moves it, so every
// response needs an open file description of its own: segFile keeps a pool
// of them (each opened through /proc/self/fd), as many as responses of the
// segment ran at once, up to maxFreeFiles kept between responses.
type segFile struct {
	size int64

	mu     sync.Mutex
	base   *os.File // the memfd; nil once closed
	path   string   // /proc/self/fd/N of base
	free   []*os.File
	closed bool
}

// maxFreeFiles bounds the open file descriptions a segment keeps for reuse:
// a cached segment holds at most 1 + maxFreeFiles descriptors between
// responses (plus one per response in flight), so a full cache of N
// segments stays well under the process's descriptor limit.
const maxFreeFiles = 16

// newSegFile copies body into a sealed memfd. It fails where memfd or
// /proc/self/fd is unavailable; the caller then serves body from memory.
func newSegFile(body []byte) (*segFile, error) {
	fd, err := unix.MemfdCreate("hls-segment", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	base := os.NewFile(uintptr(fd), "hls-segment")
	if _, err := base.Write(body); err != nil {
		base.Close()
		return nil, fmt.Errorf("write segment to memfd: %w", err)
	}
	// Sealed: the bytes players get can never change under them.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS,
		unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
		base.Close()
		return nil, fmt.Errorf("seal memfd: %w", err)
	}
	f := &segFile{size: int64(len(body)), base: base, path: "/proc/self/fd/" + strconv.Itoa(fd)}
	// One description up front: proves /proc/self/fd works here.
	r, err := f.open()
	if err != nil {
		base.Close()
		return nil, err
	}
	f.free = append(f.free, r)
	return f, nil
}

// open returns a new open file description of the memfd. f.mu must be held
// (or f not yet shared).
func (f *segFile) open() (*os.File, error) {
	if f.base == nil {
		return nil, errSegClosed
	}
	r, err := os.Open(f.path)
	if err != nil {
		return nil, fmt.Errorf("open segment memfd: %w", err)
	}
	return r, nil
}

var errSegClosed = errors.New("segment evicted from the cache")

// get returns a file description of the segment positioned at its start,
// for one response; give it back with put. It fails if the segment was
// evicted and no description is left.
func (f *segFile) get() (*os.File, error) {
	f.mu.Lock()
	var r *os.File
	if n := len(f.free); n > 0 {
		r, f.free = f.free[n-1], f.free[:n-1]
	} else {
		var err error
		if r, err = f.open(); err != nil {
			f.mu.Unlock()
			return nil, err
		}
	}
	f.mu.Unlock()
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		r.Close()
		return nil, fmt.Errorf("seek segment memfd: %w", err)
	}
	return r, nil
}

// put gives back a description from get; it is closed if the segment was
// evicted or enough are kept.
func (f *segFile) put(r *os.File) {
	f.mu.Lock()
	if !f.closed && len(f.free) < maxFreeFiles {
		f.free = append(f.free, r)
		r = nil
	}
	f.mu.Unlock()
	if r != nil {
		r.Close()
	}
}

// close releases the memfd (on eviction); descriptions in use stay valid
// until put.
func (f *segFile) close() {
	f.mu.Lock()
	free, base := f.free, f.base
	f.free, f.base, f.closed = nil, nil, true
	f.mu.Unlock()
	for _, r := range free {
		r.Close()
	}
	if base != nil {
		base.Close()
	}
}
