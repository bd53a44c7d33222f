//go:build !linux

package hlsproxy

import (
	"errors"
	"os"
)

// segFile: segments are served from memory where there is no memfd.
type segFile struct{ size int64 }

func newSegFile([]byte) (*segFile, error) {
	return nil, errors.New("memfd segments need Linux")
}

func (f *segFile) get() (*os.File, error) { return nil, errors.ErrUnsupported }
func (f *segFile) put(*os.File)           {}
func (f *segFile) close()                 {}
