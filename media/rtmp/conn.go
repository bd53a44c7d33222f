package rtmp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/internal/flvx"
	"github.com/livecluster/livecluster/media/netx"
	"github.com/livecluster/livecluster/streamkey"
)

// ErrCodecChanged is returned by ReadPacket when the peer sent new codec
// sequence headers; call Streams for the new codecs and keep reading.
var ErrCodecChanged = flvx.ErrCodecChanged

var errBadHandshake = errors.New("rtmp: bad handshake")

// Config holds limits and timeouts. Zero fields take the defaults.
type Config struct {
	// HandshakeTimeout bounds, on the server, the handshake and the
	// commands up to publish or play together (10 s): a client trickling
	// its handshake or its connect is cut there. On the client it bounds
	// the handshake.
	HandshakeTimeout time.Duration
	// ReadTimeout bounds the wait for each whole message (a peer trickling
	// chunks is cut), and on the server a publisher that sent no audio or
	// video this long is closed (30 s). A server's players are not read
	// with a deadline (they owe us nothing but acks, which may come
	// minutes apart at low bitrates); WriteTimeout tells whether they are
	// there. WriteTimeout bounds each flush (30 s).
	// A publishing client reads with no deadline once publishing: the server
	// owes a publisher nothing, and its writes tell whether the server is there.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// MaxChunkSize is the largest Set Chunk Size accepted from a peer (1 MiB).
	MaxChunkSize uint32
	// MaxMessageSize is the largest message accepted (16 MiB).
	MaxMessageSize uint32
	// ChunkSize is announced for outgoing messages (4096; nginx-rtmp and SRS
	// refuse very large values).
	ChunkSize uint32
	// WindowAckSize is announced to peers (2500000).
	WindowAckSize uint32
	// PublishReadWindow paces the server's reads of a publisher: after a
	// read that took all the socket held, the next one waits for the start
	// of the next window, at most this long after it (windows start at
	// multiples of it on the wall clock, so all publishers are read
	// together, one wake-up of the process per window; meanwhile the
	// socket's receive low-water mark keeps arrivals from waking it, on
	// Linux). 0 means DefaultPublishReadWindow; negative turns the
	// pacing off (read as soon as data comes). An encoder sends tag by
	// tag, so reading on every arrival costs a wake-up and two read calls
	// per message; one read per window takes them all at once, for up to
	// this much more latency from publisher to players. A read that fills
	// the buffer is followed at once, so the bitrate is not limited.
	// Server.PublishReadWindowFunc, when set, replaces it.
	PublishReadWindow time.Duration
}

// DefaultPublishReadWindow is Config.PublishReadWindow's default: the
// ingest profile's largest cost, a wake-up and two reads per message,
// shrinks to about one read per window (docs/benchmarks.md), for at most
// this much more latency per RTMP hop.
const DefaultPublishReadWindow = 50 * time.Millisecond

func (c Config) withDefaults() Config {
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.MaxChunkSize == 0 {
		c.MaxChunkSize = 1 << 20
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 16 << 20
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = 4096
	}
	if c.WindowAckSize == 0 {
		c.WindowAckSize = 2500000
	}
	if c.PublishReadWindow == 0 {
		c.PublishReadWindow = DefaultPublishReadWindow
	}
	return c
}

// Request describes what a client asked for.
type Request struct {
	Publish     bool   // publish (true) or play (false)
	App         string // application, without query
	Name        string // stream name, without query
	Query       string // raw query of the stream name (and of the app, joined by &)
	PublishType string // "live", "record" or "append" for a publish
	TcURL       string
	Vhost       string // query parameter vhost, else streamkey.DefaultVhost
	RemoteAddr  net.Addr
}

// Key returns the validated stream key of the request.
func (r Request) Key() (streamkey.Key, error) { return streamkey.New(r.Vhost, r.App, r.Name) }

// StatusError lets a Handler choose the onStatus code sent to the client
// when it refuses a request; Description is what ffmpeg prints.
type StatusError struct {
	Code        string // e.g. "NetStream.Publish.BadName"
	Description string
}

func (e *StatusError) Error() string { return e.Code + ": " + e.Description }

// countingReader reads the connection under its bufio.Reader: it counts
// bytes for Acknowledgement messages and paces a publisher's reads (see
// Config.PublishReadWindow).
type countingReader struct{ c *Conn }

func (r countingReader) Read(p []byte) (int, error) {
	c := r.c
	if c.readWindow > 0 && !c.drainedAt.IsZero() {
		// The last read took all there was: let this window's messages
		// gather in the socket and take them with one read, at the start
		// of the next window.
		if d := time.Until(nextReadWindow(c.drainedAt, c.readWindow)); d > 0 {
			// While we wait, data arriving on the socket must not wake
			// the process: Go's poller watches every socket
			// edge-triggered, so each arrival (an encoder's every tag)
			// returned the idle scheduler from epoll_wait only to find
			// nobody reading. A receive low-water mark above what a
			// window brings keeps the socket quiet; it goes back to 1
			// before the read, which may have to block for data.
			raised := c.lowat.set(publishReadBuffer)
			time.Sleep(min(d, c.readWindow))
			if raised {
				c.lowat.set(1)
			}
		}
	}
	n, err := c.nc.Read(p)
	c.rx.Add(int64(n))
	if c.readWindow > 0 {
		c.drainedAt = time.Time{}
		if n < len(p) {
			c.drainedAt = time.Now()
		}
	}
	return n, err
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// Conn is one RTMP connection, server or client side. Reading (Streams,
// ReadPacket) is for one goroutine; writing (WriteHeader, WritePacket,
// WriteTags) is safe alongside it.
type Conn struct {
	nc     net.Conn
	cfg    Config
	log    *slog.Logger
	br     *bufio.Reader
	rx, tx atomic.Int64

	// read side
	chunks map[uint32]*chunkStream
	// lowChunks holds chunk streams 0..15 (every one an encoder uses)
	// too: a map lookup per chunk showed in the ingest profile.
	lowChunks   [16]*chunkStream
	msg         message // readChunk's last message, reused
	inChunkSize uint32
	ackWindow   uint32
	lastAck     int64
	demux       *flvx.Demuxer
	eof         bool // peer ended the stream (FCUnpublish, deleteStream)
	// setupDeadline, on a server connection until publish or play, is when
	// the handshake and commands must be done by.
	setupDeadline  time.Time
	noReadDeadline bool          // a server's player: see Config.ReadTimeout
	msgDeadline    time.Time     // the read deadline of the message being read
	lastMedia      time.Time     // a server's publisher: last audio or video
	readWindow     time.Duration // a server's publisher: Server.publishReadWindow; ≤ 0: off
	drainedAt      time.Time     // when a read last took all the socket had
	lowat          rcvLowat      // a paced publisher's socket: its receive low-water mark
	bitrate        bitrateLimit
	rejected       func(reason string)

	// write side
	wmu          sync.Mutex
	bw           *bufio.Writer
	outChunkSize uint32
	werr         error
	outStreams   []av.CodecData
	deadlineSet  time.Time       // when the write deadline was last moved
	wbufs        net.Buffers     // WriteWire's: a field, so writev does not allocate it
	tryw         *netx.TryWriter // TryWriteBuffers' (nil until first used, or without a socket)
	trywSet      bool

	server   bool
	id       string
	req      Request
	streamID uint32
	accepted atomic.Bool
	acceptFn func() error

	// client side
	txn       float64
	drainDone chan struct{} // publishing client: closed when drainPublish ends
	peerErr   atomic.Pointer[StatusError]

	closeOnce sync.Once
	stopAfter func() bool
}

// nextReadWindow is when the read window after t starts. Windows are
// aligned on multiples of w of the wall clock, the same instants for every
// connection of every server: the paced publishers of a process wake
// together, once per window, instead of each at its own phase (with n
// publishers, n wake-ups of the process per window; the runtime's timers
// that expire together are run in one pass). A read is still at most w
// after the one that drained the socket.
func nextReadWindow(t time.Time, w time.Duration) time.Time {
	return t.Truncate(w).Add(w)
}

// publishReadBuffer is the read buffer of a connection: it holds about
// 130 ms of a 1 Mbps stream. It is also the receive low-water mark while a
// paced publisher waits for its window (rcvLowat): a socket holding more
// wakes the process, and more fills the buffer, which is read at once.
const publishReadBuffer = 16 << 10

func newConn(nc net.Conn, cfg Config, log *slog.Logger, server bool) *Conn {
	c := &Conn{
		nc: nc, cfg: cfg, log: log, server: server,
		chunks: map[uint32]*chunkStream{}, inChunkSize: 128, outChunkSize: 128,
		demux: flvx.NewDemuxer(),
	}
	c.br = bufio.NewReaderSize(countingReader{c}, publishReadBuffer)
	// A server writes media to players with WriteWire, not through this
	// buffer: it carries only control messages and commands, and with
	// thousands of players every KiB here is a KiB per player. A client
	// (an edge's forward to an origin) sends media through it.
	wsize := 64 << 10
	if server {
		wsize = 4 << 10
	}
	c.bw = bufio.NewWriterSize(countingWriter{nc, &c.tx}, wsize)
	return c
}

// shrinkReader replaces the read buffer with a small one when nothing is
// buffered: a player sends only small control messages once it plays.
// Called before the play's read goroutine starts.
func (c *Conn) shrinkReader() {
	if c.br.Buffered() == 0 {
		c.br = bufio.NewReaderSize(countingReader{c}, 512)
	}
}

// Request returns what the client asked for (server side) or dialed (client side).
func (c *Conn) Request() Request { return c.req }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// ID is the server-side connection's id, unique within its Server ("" on
// a client): the same for its connect and its publish or play.
func (c *Conn) ID() string { return c.id }

// BytesRead and BytesWritten count the bytes on the wire.
func (c *Conn) BytesRead() int64    { return c.rx.Load() }
func (c *Conn) BytesWritten() int64 { return c.tx.Load() }

// Close closes the connection. For a publishing client it returns once the
// goroutine reading the server's messages has ended.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.stopAfter != nil {
			c.stopAfter()
		}
		err = c.nc.Close()
	})
	if c.drainDone != nil {
		<-c.drainDone
	}
	return err
}

// CloseWithError ends a server-side session with an onStatus error whose
// description is err's text (a kick, a lost ownership), so the client
// learns why, then closes. The status write is bounded by a short deadline.
func (c *Conn) CloseWithError(err error) error {
	c.writeError(err)
	return c.Close()
}

// closeLingering is CloseWithError for a connection nobody else reads: a
// publisher still sending would reset the connection when closed with
// unread data, and a reset can discard the status before the client reads
// it. So it half-closes and reads what the client still sends, for up to
// a second, before closing.
func (c *Conn) closeLingering(err error) error {
	c.writeError(err)
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, 4<<20))
	}
	return c.Close()
}

// writeError sends err as an onStatus error on an accepted server session.
func (c *Conn) writeError(err error) {
	if c.server && c.accepted.Load() && err != nil {
		code := "NetStream.Failed"
		desc := err.Error()
		var se *StatusError
		if errors.As(err, &se) {
			code, desc = se.Code, se.Description
		}
		// A client that does not read must not hold this up.
		t := time.AfterFunc(time.Second, func() { c.nc.Close() })
		_ = c.writeStatus("error", code, desc)
		t.Stop()
	}
}

// Accept tells the client its publish or play started (onStatus
// NetStream.Publish.Start or NetStream.Play.Start). A handler calls it once it
// decided to serve; reading or writing media accepts implicitly. Only for
// server-side connections.
func (c *Conn) Accept() error {
	if !c.server || c.accepted.Load() || c.accepted.Swap(true) {
		return nil
	}
	return c.acceptFn()
}

// readMessage returns the next non-control message, handling protocol
// control messages on the way.
func (c *Conn) readMessage() (*message, error) {
	for {
		m, err := c.readChunk()
		if err != nil {
			return nil, err
		}
		if c.ackWindow > 0 {
			if rx := c.rx.Load(); rx-c.lastAck >= int64(c.ackWindow) {
				c.lastAck = rx
				if err := c.writeControl(msgAck, u32(uint32(rx))); err != nil {
					return nil, err
				}
			}
		}
		if m == nil {
			continue
		}
		switch m.typ {
		case msgSetChunkSize:
			if len(m.data) < 4 {
				return nil, errors.New("short Set Chunk Size")
			}
			v := be32(m.data)
			if v == 0 || v&0x80000000 != 0 || v > c.cfg.MaxChunkSize {
				return nil, fmt.Errorf("peer chunk size %d outside 1..%d", v, c.cfg.MaxChunkSize)
			}
			c.inChunkSize = v
		case msgAbort:
			if len(m.data) >= 4 {
				if cs := c.chunks[be32(m.data)]; cs != nil {
					cs.buf, cs.inMsg = nil, false
				}
			}
		case msgAck, msgSetPeerBandwidth:
		case msgWindowAckSize:
			if len(m.data) >= 4 {
				c.ackWindow = be32(m.data)
			}
		case msgUserControl:
			if len(m.data) >= 6 && be16(m.data) == ucPingRequest {
				if err := c.writeControl(msgUserControl, userControl(ucPingResponse, be32(m.data[2:]))); err != nil {
					return nil, err
				}
			}
		default:
			return m, nil
		}
	}
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }

// command is a decoded AMF command message.
type command struct {
	name     string
	txn      float64
	obj      flvio.AMFMap // command object, may be nil
	args     []interface{}
	streamID uint32
}

func parseCommand(m *message) (*command, error) {
	data := m.data
	if m.typ == msgCommandAMF3 && len(data) > 0 {
		data = data[1:] // AMF3 command messages start with a format byte, then AMF0
	}
	vals, err := flvx.ParseAMF(data)
	if err != nil && len(vals) < 2 {
		return nil, fmt.Errorf("decode command: %w", err)
	}
	if len(vals) < 2 {
		return nil, errors.New("decode command: too few values")
	}
	name, ok := vals[0].(string)
	if !ok {
		return nil, errors.New("decode command: name is not a string")
	}
	txn, _ := vals[1].(float64)
	cmd := &command{name: name, txn: txn, streamID: m.streamID}
	if len(vals) > 2 {
		switch o := vals[2].(type) {
		case flvio.AMFMap:
			cmd.obj = o
		case flvio.AMFECMAArray:
			cmd.obj = flvio.AMFMap(o)
		}
		cmd.args = vals[3:]
	}
	return cmd, nil
}

func (cmd *command) argString(i int) string {
	if i < len(cmd.args) {
		if s, ok := cmd.args[i].(string); ok {
			return s
		}
	}
	return ""
}

// writeCommand sends an AMF0 command and flushes.
func (c *Conn) writeCommand(csid, sid uint32, vals ...interface{}) error {
	body := flvx.AMFBody(vals...)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeMessageLocked(csid, msgCommandAMF0, sid, 0, body); err != nil {
		return err
	}
	return c.flushLocked()
}

func (c *Conn) writeStatus(level, code, desc string) error {
	return c.writeCommand(csCommand, c.streamID, "onStatus", 0.0, nil,
		flvio.AMFMap{"level": level, "code": code, "description": desc})
}

// setChunkSize announces and applies our outgoing chunk size.
func (c *Conn) setChunkSize() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeMessageLocked(csControl, msgSetChunkSize, 0, 0, u32(c.cfg.ChunkSize)); err != nil {
		return err
	}
	c.outChunkSize = c.cfg.ChunkSize
	return c.flushLocked()
}

// pushMedia feeds an audio, video or data message to the demuxer.
func (c *Conn) pushMedia(m *message) error {
	switch m.typ {
	case msgAudio:
		return c.demux.Push(flvio.TAG_AUDIO, int32(m.ts), m.data)
	case msgVideo:
		return c.demux.Push(flvio.TAG_VIDEO, int32(m.ts), m.data)
	case msgDataAMF0, msgDataAMF3:
		data := m.data
		if m.typ == msgDataAMF3 && len(data) > 0 {
			data = data[1:]
		}
		return c.demux.Push(flvio.TAG_SCRIPTDATA, int32(m.ts), data)
	}
	return nil
}

// Streams reads until the codecs are known (metadata and sequence headers).
func (c *Conn) Streams() ([]av.CodecData, error) {
	if err := c.Accept(); err != nil {
		return nil, err
	}
	for !c.demux.Probed() {
		if err := c.readOne(); err != nil {
			return nil, err
		}
	}
	return c.demux.Streams(), nil
}

// Metadata returns the last onMetaData received (may be nil).
func (c *Conn) Metadata() flvio.AMFMap { return c.demux.Metadata() }

// ReadPacket returns the next media packet. It returns io.EOF when the peer
// ended the stream and ErrCodecChanged when new codec headers arrived.
func (c *Conn) ReadPacket() (av.Packet, error) {
	if err := c.Accept(); err != nil {
		return av.Packet{}, err
	}
	for {
		if c.demux.Probed() {
			if pkt, ok := c.demux.Packet(); ok {
				return pkt, nil
			}
		}
		if err := c.readOne(); err != nil {
			return av.Packet{}, err
		}
	}
}

// readOne reads and dispatches one message on a media-receiving connection.
func (c *Conn) readOne() error {
	if c.eof {
		return io.EOF
	}
	m, err := c.readMessage()
	if err != nil {
		return err
	}
	if c.server && c.req.Publish {
		if err := c.checkPublisher(m.typ == msgAudio || m.typ == msgVideo); err != nil {
			return err
		}
	}
	switch m.typ {
	case msgAudio, msgVideo, msgDataAMF0, msgDataAMF3:
		return c.pushMedia(m)
	case msgCommandAMF0, msgCommandAMF3:
		cmd, err := parseCommand(m)
		if err != nil {
			return err
		}
		return c.handleSessionCommand(cmd)
	}
	return nil
}

// handleSessionCommand handles commands after publish/play started.
func (c *Conn) handleSessionCommand(cmd *command) error {
	switch cmd.name {
	case "FCUnpublish", "deleteStream", "closeStream":
		c.eof = true
		return io.EOF
	case "onStatus":
		code, level, desc := statusFields(cmd)
		if level == "error" {
			return fmt.Errorf("rtmp: %s: %s", code, desc)
		}
		if code == "NetStream.Play.Stop" || code == "NetStream.Play.UnpublishNotify" || code == "NetStream.Play.Complete" {
			c.eof = true
			return io.EOF
		}
	default:
		if c.server && cmd.txn != 0 {
			return c.writeCommand(csCommand, cmd.streamID, "_result", cmd.txn, nil)
		}
	}
	return nil
}

func statusFields(cmd *command) (code, level, desc string) {
	var info flvio.AMFMap
	for _, a := range cmd.args {
		switch v := a.(type) {
		case flvio.AMFMap:
			info = v
		case flvio.AMFECMAArray:
			info = flvio.AMFMap(v)
		}
	}
	if info == nil {
		info = cmd.obj
	}
	code, _ = info["code"].(string)
	level, _ = info["level"].(string)
	desc, _ = info["description"].(string)
	return
}

// WriteHeader sends metadata (nil: derived from streams) and codec headers
// and sets the codecs WritePacket uses.
func (c *Conn) WriteHeader(streams []av.CodecData, meta flvio.AMFMap) error {
	if err := c.Accept(); err != nil {
		return err
	}
	tags, err := flvx.EncodeHeaders(streams, meta, 0)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	c.outStreams = streams
	c.wmu.Unlock()
	return c.WriteTags(tags)
}

// WritePacket sends one packet of the codecs given to WriteHeader, unflushed
// writes are flushed at once.
func (c *Conn) WritePacket(pkt av.Packet) error {
	c.wmu.Lock()
	streams := c.outStreams
	c.wmu.Unlock()
	if int(pkt.Idx) < 0 || int(pkt.Idx) >= len(streams) {
		return fmt.Errorf("rtmp: packet for stream %d, %d streams announced", pkt.Idx, len(streams))
	}
	return c.WriteTags([][]byte{flvx.EncodePacket(pkt, streams[pkt.Idx])})
}

// WriteTags sends complete FLV tags (as hub.Reader.Next returns them) as
// RTMP messages and flushes once.
func (c *Conn) WriteTags(tags [][]byte) error {
	if err := c.Accept(); err != nil {
		return err
	}
	if err := c.writeTags(tags); err != nil {
		return c.publishErr(err)
	}
	return nil
}

func (c *Conn) writeTags(tags [][]byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for _, t := range tags {
		typ, ts, body, err := flvx.TagInfo(t)
		if err != nil {
			return err
		}
		csid, body, ok := c.tagMessage(typ, body)
		if !ok {
			continue
		}
		if err := c.writeMessageLocked(csid, typ, c.streamID, ts, body); err != nil {
			return err
		}
	}
	return c.flushLocked()
}

// wireKeyRTMP marks the RTMP wire forms among hub.Encoder keys (the top
// byte names the protocol).
const wireKeyRTMP = uint64(1) << 56

// EncoderKey implements hub.Encoder: connections with the same outgoing
// chunk size, message stream id and side chunk a tag to the same bytes
// (every message has a full type-0 header with an absolute timestamp and
// a fixed chunk stream per media type), so their players share one
// serialization of each message. Servers answer createStream with stream
// id 1 and announce the same chunk size to every player, so all players
// of a server share it.
func (c *Conn) EncoderKey() uint64 {
	c.wmu.Lock()
	cs, sid := c.outChunkSize, c.streamID
	c.wmu.Unlock()
	k := wireKeyRTMP | uint64(cs&(1<<23-1))<<32 | uint64(sid)
	if c.server {
		k |= 1 << 55
	}
	if cs >= 1<<23 {
		k = wireKeyRTMP | 1<<54 | uint64(sid) // not shared with anything
	}
	return k
}

// Encode implements hub.Encoder: it appends the RTMP chunks of one FLV tag
// (audio, video or script data; other tags encode to nothing) as WriteTags
// would send them.
func (c *Conn) Encode(dst, tag []byte) ([]byte, error) {
	typ, ts, body, err := flvx.TagInfo(tag)
	if err != nil {
		return dst, err
	}
	c.wmu.Lock()
	cs, sid := c.outChunkSize, c.streamID
	c.wmu.Unlock()
	csid, body, ok := c.tagMessage(typ, body)
	if !ok {
		return dst, nil
	}
	return appendMessage(dst, csid, typ, sid, ts, body, cs), nil
}

// tagMessage returns the chunk stream and message body of an FLV tag's
// type, ok false for a tag RTMP does not carry.
func (c *Conn) tagMessage(typ uint8, body []byte) (csid uint32, msg []byte, ok bool) {
	switch typ {
	case flvio.TAG_AUDIO:
		return csAudio, body, true
	case flvio.TAG_VIDEO:
		return csVideo, body, true
	case flvio.TAG_SCRIPTDATA:
		if !c.server {
			// Publishers wrap metadata in @setDataFrame so the server stores it.
			body = append(flvx.AMFBody("@setDataFrame"), body...)
		}
		return csData, body, true
	}
	return 0, nil, false
}

// WriteWire sends wire forms made by Encode (as hub.Reader.NextWire returns
// them: shared slices) with one writev, and consumes bufs (not the bytes).
// The connection's write lock is held during the write so control messages
// do not interleave; no other lock is. A failed or timed-out write makes
// every later write fail.
func (c *Conn) WriteWire(bufs [][]byte) error {
	if err := c.Accept(); err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if c.bw.Buffered() > 0 {
		if err := c.flushLocked(); err != nil {
			return err
		}
	}
	c.armWriteDeadline()
	c.wbufs = bufs
	n, err := netx.WriteBuffers(c.nc, &c.wbufs)
	c.wbufs = nil
	c.tx.Add(n)
	if err != nil {
		return c.publishErr(c.failWrite(err))
	}
	return nil
}

// errWriteBusy is TryWriteBuffers' error when another write holds the
// connection (a control message, or bytes buffered for one).
var errWriteBusy = errors.New("rtmp: connection busy writing")

// TryWriteBuffers implements hub.DirectWriter: it writes wire forms (as
// WriteWire) with one writev as far as the socket takes them without
// waiting, and counts them in BytesWritten. It never waits: when another
// write holds the connection (a control message: messages never
// interleave inside one another) or has bytes buffered, when the session
// is not accepted yet or a write failed before, or when the connection has
// no socket to write to directly, it writes nothing and returns an error;
// a socket that takes less than all returns netx.ErrWouldBlock. The rest
// is in v either way, for WriteWire. The write deadline moves as
// WriteWire moves it.
func (c *Conn) TryWriteBuffers(v *net.Buffers) (int64, error) {
	if !c.accepted.Load() {
		return 0, errWriteBusy
	}
	if !c.wmu.TryLock() {
		return 0, errWriteBusy
	}
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.bw.Buffered() > 0 {
		return 0, errWriteBusy
	}
	if !c.trywSet {
		c.trywSet = true
		c.tryw = netx.NewTryWriter(c.nc)
	}
	if c.tryw == nil {
		return 0, errors.ErrUnsupported
	}
	c.armWriteDeadline()
	n, err := c.tryw.TryWrite(v)
	c.tx.Add(n)
	return n, err
}

// armWriteDeadline moves the write deadline to WriteTimeout from now, at
// most once a second: a deadline change costs a runtime timer update, and
// at one write per merge window per player that was a measurable share of
// the fan-out. A write may so time out up to a second early. c.wmu held.
func (c *Conn) armWriteDeadline() {
	if c.cfg.WriteTimeout <= 0 {
		return
	}
	now := time.Now()
	if now.Sub(c.deadlineSet) < time.Second {
		return
	}
	c.deadlineSet = now
	_ = c.nc.SetWriteDeadline(now.Add(c.cfg.WriteTimeout))
}

// parseStreamName splits "name?query" and app "app?query".
func parseRequest(app, name, tcURL string) Request {
	r := Request{TcURL: tcURL}
	var qs []string
	if i := strings.IndexByte(app, '?'); i >= 0 {
		qs = append(qs, app[i+1:])
		app = app[:i]
	}
	if i := strings.IndexByte(name, '?'); i >= 0 {
		qs = append(qs, name[i+1:])
		name = name[:i]
	}
	r.App, r.Name, r.Query = strings.TrimSuffix(app, "/"), name, strings.Join(qs, "&")
	r.Vhost = streamkey.DefaultVhost
	if q, err := url.ParseQuery(r.Query); err == nil && q.Get(streamkey.VhostParam) != "" {
		r.Vhost = q.Get(streamkey.VhostParam)
	}
	return r
}

// Rejection reasons passed to Server.Rejected; the same words as
// node/connlimit's reason label.
const (
	ReasonHandshakeTimeout = "handshake_timeout"
	ReasonIdleTimeout      = "idle_timeout"
	ReasonBitrate          = "bitrate"
	ReasonMaxConns         = "max_conns"
)

// bitrateLimit is a publisher's bitrate ceiling and its current window.
type bitrateLimit struct {
	max    int64         // bits per second; 0: none
	window time.Duration // averaging window
	start  time.Time     // of the current window
	rx0    int64         // bytes read at start
}

// checkPublisher enforces, on a server's publisher, the media idle timeout
// and the bitrate ceiling; media tells whether the message just read was
// audio or video. The error is a *StatusError the publisher is sent.
func (c *Conn) checkPublisher(media bool) error {
	now := time.Now()
	if c.lastMedia.IsZero() || media {
		c.lastMedia = now
	} else if c.cfg.ReadTimeout > 0 && now.Sub(c.lastMedia) > c.cfg.ReadTimeout {
		c.reject(ReasonIdleTimeout)
		return &StatusError{Code: "NetStream.Publish.Idle",
			Description: fmt.Sprintf("no audio or video for %s", c.cfg.ReadTimeout)}
	}
	b := &c.bitrate
	if b.max <= 0 || b.window <= 0 {
		return nil
	}
	rx := c.rx.Load()
	if b.start.IsZero() {
		b.start, b.rx0 = now, rx
		return nil
	}
	el := now.Sub(b.start)
	if el < b.window {
		return nil
	}
	rate := float64(rx-b.rx0) * 8 / el.Seconds()
	b.start, b.rx0 = now, rx
	if rate > float64(b.max) {
		c.reject(ReasonBitrate)
		return &StatusError{Code: "NetStream.Publish.Rejected",
			Description: fmt.Sprintf("publish bitrate %.0f kbit/s over %s is above this server's limit of %d kbit/s",
				rate/1000, el.Round(100*time.Millisecond), b.max/1000)}
	}
	return nil
}

func (c *Conn) reject(reason string) {
	if c.rejected != nil {
		c.rejected(reason)
	}
}
