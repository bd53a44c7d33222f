package httpflv_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/livecluster/livecluster/media/httpflv"
)

// flvHeader is an FLV file header (audio+video) and the first previous-tag size.
var flvHeader = []byte{'F', 'L', 'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0}

// FuzzFLVReader: an HTTP-FLV body of any bytes (an edge's pull from an
// origin) ends in an error or EOF after a bounded number of packets,
// never a panic or a hang.
func FuzzFLVReader(f *testing.F) {
	f.Add(flvHeader)
	f.Add(append(append([]byte{}, flvHeader...), 9, 0, 0, 13, 0, 0, 0, 0, 0, 0, 0,
		0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x40, 0, 0, 0, 24))
	f.Add(append(append([]byte{}, flvHeader...), 8, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xaf, 0x00, 0x12, 0x10, 0, 0, 0, 15))
	f.Add(append(append([]byte{}, flvHeader...), 9, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := httpflv.NewReader(io.NopCloser(bytes.NewReader(b)))
		if err != nil {
			return
		}
		defer c.Close()
		for range 10000 {
			_, err := c.ReadPacket()
			if errors.Is(err, httpflv.ErrCodecChanged) {
				if _, err := c.Streams(); err != nil {
					return
				}
				continue
			}
			if err != nil {
				return
			}
		}
		t.Fatalf("10000 packets from %d bytes", len(b))
	})
}
