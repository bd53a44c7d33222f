// Package rtmpplay is a minimal RTMP play client for the load generator:
// handshake, connect, createStream, play, then raw audio/video/data
// messages as FLV tag bodies, without decoding them. It is independent of
// the servers under test (media/rtmp's client demuxes every packet with
// joy4's prober, which gives up on nginx-rtmp's stream, and costs the load
// generator CPU per packet per player).
package rtmpplay

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/scripts/loadgen/internal/flvtag"
)

// Message types.
const (
	typSetChunkSize = 1
	typAbort        = 2
	typAck          = 3
	typUserControl  = 4
	typWindowAck    = 5
	typPeerBW       = 6
	typAudio        = 8
	typVideo        = 9
	typDataAMF3     = 15
	typCmdAMF3      = 17
	typDataAMF0     = 18
	typCmdAMF0      = 20
	typAggregate    = 22
)

// maxMessage bounds a message so a broken server cannot make us allocate
// without limit.
const maxMessage = 16 << 20

// StatusError is an onStatus of level "error" (the server refused).
type StatusError struct{ Code, Description string }

func (e *StatusError) Error() string { return e.Code + ": " + e.Description }

// ErrEnded is returned when the server ends the stream (Play.Stop,
// UnpublishNotify, Play.Complete).
var ErrEnded = errors.New("rtmp: the server ended the stream")

// Conn is one playing connection.
type Conn struct {
	nc      net.Conn
	br      *bufio.Reader
	rx      int64 // bytes read, for acknowledgements
	acked   int64
	window  int64
	inChunk int
	chunks  map[uint32]*chunkStream
	sid     uint32
	txn     float64
	stall   time.Duration
	// deadline is the read deadline last set; readChunk moves it only
	// when it is more than stall/8 old (setting it costs a timer update,
	// and a player at 2 Mbps reads ~60 chunks a second).
	deadline time.Time
	// prefix, when positive, bounds how much of an audio or video
	// message's body is kept (SetBodyPrefix).
	prefix int
}

// SetBodyPrefix makes ReadMessage and Tags deliver only the first n bytes
// of audio and video messages longer than n; the rest of each is read (and
// acknowledged) but not copied. 0 (the default) keeps whole messages. The
// start of a frame holds what a player measures: the keyframe flag and
// the embedded send time (package stamp puts it first).
func (c *Conn) SetBodyPrefix(n int) { c.prefix = max(n, 0) }

type chunkStream struct {
	ts, delta uint32
	length    uint32
	typ       uint8
	sid       uint32
	extended  bool
	buf       []byte
	got       int
	keep      int // bytes of the body kept in buf (the rest discarded)
	inMsg     bool
}

// Message is one complete RTMP message.
type Message struct {
	Type uint8
	TS   uint32
	Body []byte // valid until the next ReadMessage
}

// Dial connects to rawURL (rtmp://host[:port]/app/name), plays the stream
// and returns once the server sent NetStream.Play.Start. Each wait for the
// server is bounded by stall; conn wraps the TCP connection (to count
// bytes), nil for none. A refusal is a *StatusError.
func Dial(ctx context.Context, rawURL string, stall time.Duration, wrap func(net.Conn) net.Conn) (*Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "rtmp" {
		return nil, fmt.Errorf("%s: scheme must be rtmp", rawURL)
	}
	app, name, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !ok || app == "" || name == "" {
		return nil, fmt.Errorf("%s: want rtmp://host/app/name", rawURL)
	}
	if u.RawQuery != "" {
		name += "?" + u.RawQuery
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "1935")
	}
	d := net.Dialer{Timeout: stall}
	nc, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if wrap != nil {
		nc = wrap(nc)
	}
	c := &Conn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10), inChunk: 128, chunks: map[uint32]*chunkStream{}, stall: stall}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	if err := c.start(u.Host, app, name); err != nil {
		stop()
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return c, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

func (c *Conn) start(host, app, name string) error {
	if err := c.nc.SetDeadline(time.Now().Add(c.stall)); err != nil {
		return err
	}
	c0c1 := make([]byte, 1+1536)
	c0c1[0] = 3
	binary.BigEndian.PutUint32(c0c1[1:], uint32(time.Now().Unix()))
	_, _ = rand.Read(c0c1[9:])
	if _, err := c.nc.Write(c0c1); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	s := make([]byte, 1+2*1536)
	if _, err := io.ReadFull(c.br, s); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if s[0] != 3 {
		return fmt.Errorf("handshake: server version %d", s[0])
	}
	if _, err := c.nc.Write(s[1 : 1+1536]); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if err := c.write(2, typSetChunkSize, 0, binary.BigEndian.AppendUint32(nil, 4096)); err != nil {
		return err
	}
	tcURL := "rtmp://" + host + "/" + app
	if _, err := c.call("connect", flvio.AMFMap{
		"app": app, "flashVer": "LNX 9,0,124,2", "tcUrl": tcURL, "fpad": false,
		"capabilities": 15.0, "audioCodecs": 3575.0, "videoCodecs": 252.0, "videoFunction": 1.0,
	}); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	res, err := c.call("createStream", nil)
	if err != nil {
		return fmt.Errorf("createStream: %w", err)
	}
	for _, v := range res {
		if f, ok := v.(float64); ok {
			c.sid = uint32(f)
		}
	}
	if err := c.write(8, typCmdAMF0, c.sid, amf("play", 0.0, nil, name, -2000.0)); err != nil {
		return err
	}
	buf := make([]byte, 10) // SetBufferLength 1000 ms
	binary.BigEndian.PutUint16(buf, 3)
	binary.BigEndian.PutUint32(buf[2:], c.sid)
	binary.BigEndian.PutUint32(buf[6:], 1000)
	if err := c.write(2, typUserControl, 0, buf); err != nil {
		return err
	}
	for {
		m, err := c.ReadMessage()
		if err != nil {
			return fmt.Errorf("play %s: %w", name, err)
		}
		if m.Type != typCmdAMF0 && m.Type != typCmdAMF3 {
			continue
		}
		vals := parseCmd(m)
		if len(vals) > 0 && vals[0] == "onStatus" {
			code, level, desc := status(vals)
			if level == "error" {
				return &StatusError{code, desc}
			}
			if code == "NetStream.Play.Start" {
				c.deadline = time.Time{} // readChunk sets the next one
				return c.nc.SetDeadline(time.Time{})
			}
		}
	}
}

func amf(vals ...any) []byte {
	n := 0
	for _, v := range vals {
		n += flvio.LenAMF0Val(v)
	}
	b := make([]byte, n)
	off := 0
	for _, v := range vals {
		off += flvio.FillAMF0Val(b[off:], v)
	}
	return b
}

func parseCmd(m Message) []any {
	b := m.Body
	if m.Type == typCmdAMF3 && len(b) > 0 {
		b = b[1:]
	}
	var vals []any
	for off := 0; off < len(b); {
		v, n, err := flvio.ParseAMF0Val(b[off:])
		if err != nil {
			break
		}
		vals = append(vals, v)
		off += n
	}
	return vals
}

func status(vals []any) (code, level, desc string) {
	for _, v := range vals {
		var m flvio.AMFMap
		switch o := v.(type) {
		case flvio.AMFMap:
			m = o
		case flvio.AMFECMAArray:
			m = flvio.AMFMap(o)
		default:
			continue
		}
		code, _ = m["code"].(string)
		level, _ = m["level"].(string)
		desc, _ = m["description"].(string)
	}
	return
}

// call sends a command on stream 0 and waits for its _result.
func (c *Conn) call(name string, obj any) ([]any, error) {
	c.txn++
	txn := c.txn
	if err := c.write(3, typCmdAMF0, 0, amf(name, txn, obj)); err != nil {
		return nil, err
	}
	for {
		m, err := c.ReadMessage()
		if err != nil {
			return nil, err
		}
		if m.Type != typCmdAMF0 && m.Type != typCmdAMF3 {
			continue
		}
		vals := parseCmd(m)
		if len(vals) < 2 {
			continue
		}
		if t, _ := vals[1].(float64); t != txn {
			continue
		}
		switch vals[0] {
		case "_result":
			return vals[2:], nil
		case "_error":
			code, _, desc := status(vals)
			return nil, &StatusError{code, desc}
		}
	}
}

// write sends one message as a single chunk (our messages are small and
// the chunk size is 4096 once announced; the first, Set Chunk Size, is 4
// bytes).
func (c *Conn) write(csid uint32, typ uint8, sid uint32, body []byte) error {
	if len(body) > 4096 {
		return fmt.Errorf("rtmp: message of %d bytes is too big to send", len(body))
	}
	h := make([]byte, 0, 12+len(body))
	h = append(h, byte(csid), 0, 0, 0, byte(len(body)>>16), byte(len(body)>>8), byte(len(body)), typ)
	h = binary.LittleEndian.AppendUint32(h, sid)
	h = append(h, body...)
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.stall)); err != nil {
		return err
	}
	_, err := c.nc.Write(h)
	return err
}

func (c *Conn) readFull(b []byte) error {
	n, err := io.ReadFull(c.br, b)
	c.rx += int64(n)
	return err
}

// ReadMessage returns the next message that is not protocol control
// (control messages are handled on the way). Reads wait at most the stall
// time each.
func (c *Conn) ReadMessage() (Message, error) {
	for {
		m, err := c.readChunk()
		if err != nil {
			return Message{}, err
		}
		if c.window > 0 && c.rx-c.acked >= c.window {
			c.acked = c.rx
			if err := c.write(2, typAck, 0, binary.BigEndian.AppendUint32(nil, uint32(c.rx))); err != nil {
				return Message{}, err
			}
		}
		if m == nil {
			continue
		}
		switch m.Type {
		case typSetChunkSize:
			if len(m.Body) < 4 {
				return Message{}, errors.New("rtmp: short Set Chunk Size")
			}
			n := binary.BigEndian.Uint32(m.Body) & 0x7fffffff
			if n == 0 || n > maxMessage {
				return Message{}, fmt.Errorf("rtmp: chunk size %d", n)
			}
			c.inChunk = int(n)
		case typWindowAck:
			if len(m.Body) >= 4 {
				c.window = int64(binary.BigEndian.Uint32(m.Body))
			}
		case typUserControl:
			if len(m.Body) >= 6 && binary.BigEndian.Uint16(m.Body) == 6 { // ping request
				resp := append([]byte{0, 7}, m.Body[2:6]...)
				if err := c.write(2, typUserControl, 0, resp); err != nil {
					return Message{}, err
				}
			}
		case typAbort, typAck, typPeerBW:
		default:
			return *m, nil
		}
	}
}

// readChunk reads one chunk; it returns a message when one completed.
func (c *Conn) readChunk() (*Message, error) {
	// A read fails after 7/8 to all of the stall time without data.
	if dl := time.Now().Add(c.stall); dl.Sub(c.deadline) > c.stall/8 {
		if err := c.nc.SetReadDeadline(dl); err != nil {
			return nil, err
		}
		c.deadline = dl
	}
	var b [11]byte
	if err := c.readFull(b[:1]); err != nil {
		return nil, err
	}
	f := b[0] >> 6
	csid := uint32(b[0] & 0x3f)
	switch csid {
	case 0:
		if err := c.readFull(b[:1]); err != nil {
			return nil, err
		}
		csid = 64 + uint32(b[0])
	case 1:
		if err := c.readFull(b[:2]); err != nil {
			return nil, err
		}
		csid = 64 + uint32(b[0]) + uint32(b[1])<<8
	}
	cs := c.chunks[csid]
	if cs == nil {
		if f != 0 {
			return nil, fmt.Errorf("rtmp: chunk stream %d starts with a type-%d header", csid, f)
		}
		cs = &chunkStream{}
		c.chunks[csid] = cs
	}
	hl := [4]int{11, 7, 3, 0}[f]
	if err := c.readFull(b[:hl]); err != nil {
		return nil, err
	}
	var tsField uint32
	if hl >= 3 {
		tsField = u24(b[:])
	}
	if hl >= 7 {
		cs.length = u24(b[3:])
		cs.typ = b[6]
	}
	if hl == 11 {
		cs.sid = binary.LittleEndian.Uint32(b[7:])
	}
	if hl > 0 {
		cs.extended = tsField == 0xffffff
	}
	if cs.extended {
		var e [4]byte
		if err := c.readFull(e[:]); err != nil {
			return nil, err
		}
		tsField = binary.BigEndian.Uint32(e[:])
	}
	if !cs.inMsg {
		switch f {
		case 0:
			cs.ts, cs.delta = tsField, 0
		case 1, 2:
			cs.delta = tsField
			cs.ts += tsField
		case 3:
			cs.ts += cs.delta
		}
		if cs.length > maxMessage {
			return nil, fmt.Errorf("rtmp: message of %d bytes", cs.length)
		}
		cs.keep = int(cs.length)
		if c.prefix > 0 && (cs.typ == typAudio || cs.typ == typVideo) {
			cs.keep = min(cs.keep, c.prefix)
		}
		if cap(cs.buf) < cs.keep {
			cs.buf = make([]byte, cs.keep)
		}
		cs.buf = cs.buf[:cs.keep]
		cs.got, cs.inMsg = 0, true
	}
	n := min(c.inChunk, int(cs.length)-cs.got)
	if k := min(n, max(cs.keep-cs.got, 0)); k > 0 {
		if err := c.readFull(cs.buf[cs.got : cs.got+k]); err != nil {
			return nil, err
		}
	}
	if d := n - max(cs.keep-cs.got, 0); d > 0 {
		m, err := c.br.Discard(d)
		c.rx += int64(m)
		if err != nil {
			return nil, err
		}
	}
	cs.got += n
	if cs.got < int(cs.length) {
		return nil, nil
	}
	cs.inMsg = false
	return &Message{Type: cs.typ, TS: cs.ts, Body: cs.buf}, nil
}

func u24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }

// Tags reads messages and calls fn with each audio, video or data message
// as an FLV tag (aggregate messages split into their tags) until an error,
// ErrEnded, or fn's error. Tag bodies are valid only during fn.
func (c *Conn) Tags(fn func(flvtag.Tag) error) error {
	for {
		m, err := c.ReadMessage()
		if err != nil {
			return err
		}
		switch m.Type {
		case typAudio, typVideo:
			if err := fn(flvtag.Tag{Type: m.Type, TS: m.TS, Body: m.Body}); err != nil {
				return err
			}
		case typDataAMF0:
			if err := fn(flvtag.Tag{Type: flvtag.Script, TS: m.TS, Body: m.Body}); err != nil {
				return err
			}
		case typAggregate:
			if err := aggregate(m, fn); err != nil {
				return err
			}
		case typCmdAMF0, typCmdAMF3:
			vals := parseCmd(m)
			if len(vals) > 0 && vals[0] == "onStatus" {
				code, level, desc := status(vals)
				if level == "error" {
					return &StatusError{code, desc}
				}
				switch code {
				case "NetStream.Play.Stop", "NetStream.Play.UnpublishNotify", "NetStream.Play.Complete":
					return ErrEnded
				}
			}
		}
	}
}

// aggregate splits an aggregate message into its FLV tags; their
// timestamps are rebased on the message's.
func aggregate(m Message, fn func(flvtag.Tag) error) error {
	b := m.Body
	var base uint32
	first := true
	for len(b) >= 11 {
		n := int(u24(b[1:]))
		if len(b) < 11+n+4 {
			return errors.New("rtmp: truncated aggregate message")
		}
		ts := u24(b[4:]) | uint32(b[7])<<24
		if first {
			base, first = ts, false
		}
		t := flvtag.Tag{Type: b[0] & 0x1f, TS: m.TS + ts - base, Body: b[11 : 11+n]}
		if t.Type == flvtag.Audio || t.Type == flvtag.Video {
			if err := fn(t); err != nil {
				return err
			}
		}
		b = b[11+n+4:]
	}
	return nil
}
