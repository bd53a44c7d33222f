package hls

import (
	"errors"

	"golang.org/x/sys/unix"
)

// exchange swaps the names a and b atomically (renameat2 RENAME_EXCHANGE):
// both files stay, neither is freed nor created.
func (d *appDir) exchange(a, b string) error {
	return unix.Renameat2(d.fd, a, d.fd, b, unix.RENAME_EXCHANGE)
}

// exchangeUnsupported reports an error of exchange that means the volume
// (NFS, some FUSE file systems) or kernel cannot exchange names at all.
func exchangeUnsupported(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP)
}
