package flvx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nareix/joy4/format/flv/flvio"
)

// maxAMFDepth bounds nesting of objects and arrays. Real metadata and
// commands nest two or three levels; a hostile peer could otherwise nest
// one level per byte of a 16 MiB message.
const maxAMFDepth = 32

// AMF0 markers (AMF0 specification, section 2.1).
const (
	amfNumber      = 0x00
	amfBoolean     = 0x01
	amfString      = 0x02
	amfObject      = 0x03
	amfNull        = 0x05
	amfUndefined   = 0x06
	amfECMAArray   = 0x08
	amfObjectEnd   = 0x09
	amfStrictArray = 0x0a
	amfDate        = 0x0b
	amfLongString  = 0x0c
)

var errAMFTruncated = errors.New("truncated")

// parseAMF0 decodes one AMF0 value into joy4's types (float64, bool,
// string, flvio.AMFMap for objects and ECMA arrays, flvio.AMFArray, nil,
// time.Time), so callers and joy4's encoder agree. joy4's own decoder is
// not used on peer input: it allocates a strict array of whatever length
// the peer claims (4 G entries from 5 bytes) and recurses without bound.
func parseAMF0(b []byte, depth int) (any, int, error) {
	if len(b) < 1 {
		return nil, 0, fmt.Errorf("marker: %w", errAMFTruncated)
	}
	n := 1
	switch b[0] {
	case amfNumber:
		if len(b) < n+8 {
			return nil, 0, fmt.Errorf("number: %w", errAMFTruncated)
		}
		return math.Float64frombits(binary.BigEndian.Uint64(b[n:])), n + 8, nil
	case amfBoolean:
		if len(b) < n+1 {
			return nil, 0, fmt.Errorf("boolean: %w", errAMFTruncated)
		}
		return b[n] != 0, n + 1, nil
	case amfString:
		s, m, err := amfString16(b[n:])
		return s, n + m, err
	case amfLongString:
		if len(b) < n+4 {
			return nil, 0, fmt.Errorf("long string length: %w", errAMFTruncated)
		}
		l := binary.BigEndian.Uint32(b[n:])
		n += 4
		if uint64(len(b)-n) < uint64(l) {
			return nil, 0, fmt.Errorf("long string of %d bytes: %w", l, errAMFTruncated)
		}
		return string(b[n : n+int(l)]), n + int(l), nil
	case amfNull, amfUndefined:
		return nil, n, nil
	case amfObject, amfECMAArray:
		if depth >= maxAMFDepth {
			return nil, 0, fmt.Errorf("nested deeper than %d", maxAMFDepth)
		}
		if b[0] == amfECMAArray {
			// The count is a hint only; the end marker ends the array.
			if len(b) < n+4 {
				return nil, 0, fmt.Errorf("ecma array count: %w", errAMFTruncated)
			}
			n += 4
		}
		obj := flvio.AMFMap{}
		for {
			key, m, err := amfString16(b[n:])
			if err != nil {
				return nil, 0, fmt.Errorf("object key: %w", err)
			}
			n += m
			if key == "" {
				if len(b) < n+1 {
					return nil, 0, fmt.Errorf("object end: %w", errAMFTruncated)
				}
				// The end marker; joy4 and several encoders do not check
				// its value, and neither do we.
				return obj, n + 1, nil
			}
			v, m, err := parseAMF0(b[n:], depth+1)
			if err != nil {
				return nil, 0, fmt.Errorf("object value %q: %w", key, err)
			}
			n += m
			obj[key] = v
		}
	case amfStrictArray:
		if depth >= maxAMFDepth {
			return nil, 0, fmt.Errorf("nested deeper than %d", maxAMFDepth)
		}
		if len(b) < n+4 {
			return nil, 0, fmt.Errorf("strict array count: %w", errAMFTruncated)
		}
		count := binary.BigEndian.Uint32(b[n:])
		n += 4
		// Every value takes at least one byte, so a count larger than the
		// bytes left is a lie; refuse it before allocating anything.
		if uint64(count) > uint64(len(b)-n) {
			return nil, 0, fmt.Errorf("strict array of %d values in %d bytes: %w", count, len(b)-n, errAMFTruncated)
		}
		arr := make(flvio.AMFArray, 0, count)
		for i := uint32(0); i < count; i++ {
			v, m, err := parseAMF0(b[n:], depth+1)
			if err != nil {
				return nil, 0, fmt.Errorf("strict array value %d: %w", i, err)
			}
			n += m
			arr = append(arr, v)
		}
		return arr, n, nil
	case amfDate:
		if len(b) < n+10 {
			return nil, 0, fmt.Errorf("date: %w", errAMFTruncated)
		}
		ms := math.Float64frombits(binary.BigEndian.Uint64(b[n:]))
		if math.IsNaN(ms) || math.IsInf(ms, 0) || math.Abs(ms) > 1e15 {
			return nil, 0, fmt.Errorf("date %v out of range", ms)
		}
		return time.UnixMilli(int64(ms)), n + 10, nil
	case amfObjectEnd:
		return nil, 0, errors.New("object end outside an object")
	default:
		return nil, 0, fmt.Errorf("unsupported marker 0x%02x", b[0])
	}
}

func amfString16(b []byte) (string, int, error) {
	if len(b) < 2 {
		return "", 0, fmt.Errorf("string length: %w", errAMFTruncated)
	}
	l := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+l {
		return "", 0, fmt.Errorf("string of %d bytes: %w", l, errAMFTruncated)
	}
	return string(b[2 : 2+l]), 2 + l, nil
}
