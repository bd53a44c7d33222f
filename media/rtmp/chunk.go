package rtmp

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"time"
)

// RTMP message type ids.
const (
	msgSetChunkSize     = 1
	msgAbort            = 2
	msgAck              = 3
	msgUserControl      = 4
	msgWindowAckSize    = 5
	msgSetPeerBandwidth = 6
	msgAudio            = 8
	msgVideo            = 9
	msgDataAMF3         = 15
	msgCommandAMF3      = 17
	msgDataAMF0         = 18
	msgCommandAMF0      = 20
)

// User control event types.
const (
	ucStreamBegin  = 0
	ucPingRequest  = 6
	ucPingResponse = 7
)

// Chunk stream ids used for outgoing messages.
const (
	csControl = 2
	csCommand = 3
	csAudio   = 4
	csData    = 5
	csVideo   = 6
)

// maxChunkStreams bounds the per-connection chunk stream state a peer can
// make us keep.
const maxChunkStreams = 64

type message struct {
	typ      uint8
	streamID uint32
	ts       uint32
	data     []byte
}

type chunkStream struct {
	ts      uint32 // timestamp of the current message
	tsField uint32 // last timestamp/delta field, reused by fmt 3
	ext     bool   // the last header carried an extended timestamp
	length  uint32
	typ     uint8
	sid     uint32
	buf     []byte // partial message
	inMsg   bool
}

// readChunk reads one chunk and returns a message when it completes one.
// The message is valid until the next call (its data stays valid: each
// message gets its own buffer).
func (c *Conn) readChunk() (*message, error) {
	c.armReadDeadline()
	var hb [16]byte
	if _, err := io.ReadFull(c.br, hb[:1]); err != nil {
		return nil, err
	}
	format := hb[0] >> 6
	csid := uint32(hb[0] & 0x3f)
	switch csid {
	case 0:
		if _, err := io.ReadFull(c.br, hb[:1]); err != nil {
			return nil, err
		}
		csid = 64 + uint32(hb[0])
	case 1:
		if _, err := io.ReadFull(c.br, hb[:2]); err != nil {
			return nil, err
		}
		csid = 64 + uint32(hb[0]) + uint32(hb[1])<<8
	}
	var cs *chunkStream
	if csid < uint32(len(c.lowChunks)) {
		cs = c.lowChunks[csid]
	} else {
		cs = c.chunks[csid]
	}
	if cs == nil {
		if format != 0 {
			return nil, fmt.Errorf("chunk stream %d starts with a type %d header", csid, format)
		}
		if len(c.chunks) >= maxChunkStreams {
			return nil, fmt.Errorf("more than %d chunk streams", maxChunkStreams)
		}
		cs = &chunkStream{}
		c.chunks[csid] = cs
		if csid < uint32(len(c.lowChunks)) {
			c.lowChunks[csid] = cs
		}
	}
	hlen := [4]int{11, 7, 3, 0}[format]
	if _, err := io.ReadFull(c.br, hb[:hlen]); err != nil {
		return nil, err
	}
	if format < 3 {
		field := be24(hb[0:3])
		cs.ext = field == 0xffffff
		if format <= 1 {
			length := be24(hb[3:6])
			if cs.inMsg && length != cs.length {
				return nil, fmt.Errorf("chunk stream %d: message length changed mid-message", csid)
			}
			cs.length = length
			cs.typ = hb[6]
		}
		if format == 0 {
			cs.sid = binary.LittleEndian.Uint32(hb[7:11])
		}
		if cs.ext {
			if _, err := io.ReadFull(c.br, hb[:4]); err != nil {
				return nil, err
			}
			field = binary.BigEndian.Uint32(hb[:4])
		}
		if cs.inMsg {
			return nil, fmt.Errorf("chunk stream %d: new header inside a message", csid)
		}
		cs.tsField = field
		if format == 0 {
			cs.ts = field
		} else {
			cs.ts += field
		}
	} else {
		if cs.ext {
			// The extended timestamp is repeated in type 3 chunks.
			if _, err := io.ReadFull(c.br, hb[:4]); err != nil {
				return nil, err
			}
		}
		if !cs.inMsg {
			cs.ts += cs.tsField
		}
	}
	if !cs.inMsg {
		if cs.length > c.cfg.MaxMessageSize {
			return nil, fmt.Errorf("message of %d bytes exceeds the %d byte limit", cs.length, c.cfg.MaxMessageSize)
		}
		cs.inMsg = true
		// Grow with the data actually received, never by the announced size.
		cs.buf = make([]byte, 0, min(cs.length, 64<<10))
	}
	n := min(c.inChunkSize, cs.length-uint32(len(cs.buf)))
	start := len(cs.buf)
	cs.buf = append(cs.buf, make([]byte, n)...)
	if _, err := io.ReadFull(c.br, cs.buf[start:]); err != nil {
		return nil, err
	}
	if uint32(len(cs.buf)) < cs.length {
		return nil, nil
	}
	c.msg = message{typ: cs.typ, streamID: cs.sid, ts: cs.ts, data: cs.buf}
	cs.buf, cs.inMsg = nil, false
	c.msgDeadline = time.Time{} // the next message gets a fresh deadline
	return &c.msg, nil
}

// armReadDeadline sets the read deadline of the message being read, once
// per message: chunks trickled one by one never extend it. Until publish
// or play it is also bounded by the setup deadline.
func (c *Conn) armReadDeadline() {
	if c.noReadDeadline || c.cfg.ReadTimeout <= 0 {
		return
	}
	if !c.msgDeadline.IsZero() {
		return
	}
	d := time.Now().Add(c.cfg.ReadTimeout)
	if !c.setupDeadline.IsZero() && c.setupDeadline.Before(d) {
		d = c.setupDeadline
	}
	c.msgDeadline = d
	_ = c.nc.SetReadDeadline(d)
}

func be24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }

// writeMessageLocked chunks one message into the write buffer. c.wmu held.
func (c *Conn) writeMessageLocked(csid uint32, typ uint8, sid, ts uint32, body []byte) error {
	if c.werr != nil {
		return c.werr
	}
	var h [16]byte
	ext := ts >= 0xffffff
	field := ts
	if ext {
		field = 0xffffff
	}
	h[0] = byte(csid & 0x3f)
	h[1], h[2], h[3] = byte(field>>16), byte(field>>8), byte(field)
	n := len(body)
	h[4], h[5], h[6] = byte(n>>16), byte(n>>8), byte(n)
	h[7] = typ
	binary.LittleEndian.PutUint32(h[8:12], sid)
	hl := 12
	if ext {
		binary.BigEndian.PutUint32(h[12:16], ts)
		hl = 16
	}
	if _, err := c.bw.Write(h[:hl]); err != nil {
		return c.failWrite(err)
	}
	for off := 0; ; {
		k := min(int(c.outChunkSize), len(body)-off)
		if _, err := c.bw.Write(body[off : off+k]); err != nil {
			return c.failWrite(err)
		}
		off += k
		if off >= len(body) {
			break
		}
		var cont [5]byte
		cont[0] = 0xc0 | byte(csid&0x3f)
		cl := 1
		if ext {
			binary.BigEndian.PutUint32(cont[1:5], ts)
			cl = 5
		}
		if _, err := c.bw.Write(cont[:cl]); err != nil {
			return c.failWrite(err)
		}
	}
	return nil
}

// appendMessage appends one message chunked as writeMessageLocked writes
// it: a type-0 header, then a type-3 header (with the extended timestamp
// when there is one) before every further chunk.
func appendMessage(dst []byte, csid uint32, typ uint8, sid, ts uint32, body []byte, chunkSize uint32) []byte {
	ext := ts >= 0xffffff
	field := ts
	if ext {
		field = 0xffffff
	}
	cs := max(int(chunkSize), 1)
	n := len(body)
	chunks := (n + cs - 1) / cs
	size := 12 + n + max(chunks-1, 0)
	if ext {
		size += 4 * max(chunks, 1)
	}
	dst = slices.Grow(dst, size)
	dst = append(dst, byte(csid&0x3f), byte(field>>16), byte(field>>8), byte(field), byte(n>>16), byte(n>>8), byte(n), typ)
	dst = binary.LittleEndian.AppendUint32(dst, sid)
	if ext {
		dst = binary.BigEndian.AppendUint32(dst, ts)
	}
	for off := 0; ; {
		k := min(cs, n-off)
		dst = append(dst, body[off:off+k]...)
		off += k
		if off >= n {
			break
		}
		dst = append(dst, 0xc0|byte(csid&0x3f))
		if ext {
			dst = binary.BigEndian.AppendUint32(dst, ts)
		}
	}
	return dst
}

func (c *Conn) flushLocked() error {
	if c.werr != nil {
		return c.werr
	}
	c.armWriteDeadline()
	if err := c.bw.Flush(); err != nil {
		return c.failWrite(err)
	}
	return nil
}

// failWrite makes a write error sticky: a half-written chunk leaves the
// stream unusable.
func (c *Conn) failWrite(err error) error {
	c.werr = fmt.Errorf("rtmp write: %w", err)
	return c.werr
}

// writeControl sends a protocol control message and flushes.
func (c *Conn) writeControl(typ uint8, body []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeMessageLocked(csControl, typ, 0, 0, body); err != nil {
		return err
	}
	return c.flushLocked()
}

func u32(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return b[:]
}

func userControl(event uint16, v uint32) []byte {
	b := make([]byte, 6)
	binary.BigEndian.PutUint16(b, event)
	binary.BigEndian.PutUint32(b[2:], v)
	return b
}
