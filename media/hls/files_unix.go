//go:build unix

package hls

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// appDir is a stream's app directory opened once. Files are created,
// written, renamed and removed by base name relative to its descriptor with
// plain system calls on plain descriptors: an os.File per segment cost five
// more calls per file (four fcntl and an epoll_ctl that fails for a regular
// file), and os.Root's rename a stat of the target. Every name is a single
// validated component (checkPart) and is opened with O_NOFOLLOW, so, as
// with os.Root, no ".." or symbolic link planted in the directory makes the
// writer touch a file outside it.
type appDir struct {
	f  *os.File // keeps fd open
	fd int
}

// openAppDir opens root/app (created if missing) as a directory.
func openAppDir(root *os.Root, app string) (*appDir, error) {
	if err := root.MkdirAll(app, 0o755); err != nil {
		return nil, err
	}
	f, err := root.Open(app)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil || !st.IsDir() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s is not a directory", app)
		}
		return nil, err
	}
	return &appDir{f: f, fd: int(f.Fd())}, nil
}

func (d *appDir) close() error { return d.f.Close() }

const openFlags = unix.O_NOFOLLOW | unix.O_CLOEXEC

// create opens name for writing, created or truncated.
func (d *appDir) create(name string) (int, error) {
	fd, err := retry(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|openFlags, 0o644)
	})
	if err != nil {
		return -1, &os.PathError{Op: "create", Path: name, Err: err}
	}
	return fd, nil
}

// openRW opens name for writing, created when missing, never truncated: a
// playlist file is rewritten in place (see state.writePlaylist).
func (d *appDir) openRW(name string) (int, error) {
	fd, err := retry(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|openFlags, 0o644)
	})
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return fd, nil
}

func (d *appDir) rename(from, to string) error {
	if err := unix.Renameat(d.fd, from, d.fd, to); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

func (d *appDir) remove(name string) error {
	if err := unix.Unlinkat(d.fd, name, 0); err != nil {
		return &os.PathError{Op: "remove", Path: name, Err: err}
	}
	return nil
}

// writeFD writes all of b to fd at its offset.
func writeFD(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("short write")
		}
		b = b[n:]
	}
	return nil
}

// rewriteFD replaces the content of fd with b: written from offset 0, then
// cut to its length. Not truncated to 0 first: on ext4 (auto_da_alloc) a
// file truncated to 0 and written is flushed to disk when closed.
func rewriteFD(fd int, b []byte) error {
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(fd, b[off:], int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("short write")
		}
		off += n
	}
	for {
		err := unix.Ftruncate(fd, int64(len(b)))
		if err != unix.EINTR {
			return err
		}
	}
}

func closeFD(fd int) error { return unix.Close(fd) }

func retry(f func() (int, error)) (int, error) {
	for {
		fd, err := f()
		if err != unix.EINTR {
			return fd, err
		}
	}
}
