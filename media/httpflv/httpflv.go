// Package httpflv serves live streams as HTTP-FLV (GET /{app}/{name}.flv)
// from a hub, and reads HTTP-FLV streams back (Dial) so an edge can pull
// from an origin over HTTP.
package httpflv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/internal/flvx"
	"github.com/livecluster/livecluster/media/netx"
	"github.com/livecluster/livecluster/streamkey"
)

// ErrNotFound makes the handler answer 404; Lookup may wrap it.
var ErrNotFound = errors.New("stream not found")

// Lookup finds (or, at an edge, starts pulling) the hub of a stream. It
// returns nil or an error wrapping ErrNotFound when there is no such stream.
type Lookup func(ctx context.Context, key streamkey.Key) (*hub.Hub, error)

// Handler serves GET /{app}/{name}.flv[?vhost=v].
type Handler struct {
	Lookup Lookup
	// WriteTimeout bounds each write to the client (30 s).
	WriteTimeout time.Duration
	Logger       *slog.Logger // nil: slog.Default()
}

// ParsePath extracts the key of "/{app}/{name}{ext}" with vhost from the
// query (or the default one).
func ParsePath(r *http.Request, ext string) (streamkey.Key, error) {
	p, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/"), ext)
	if !ok {
		return streamkey.Key{}, fmt.Errorf("path %q does not end in %s", r.URL.Path, ext)
	}
	app, name, ok := strings.Cut(p, "/")
	if !ok {
		return streamkey.Key{}, fmt.Errorf("path %q: want /app/name%s", r.URL.Path, ext)
	}
	return streamkey.FromURL(app, name, r.URL.Query())
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Access-Control-Allow-Origin", "*")
	hd.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
	hd.Set("Access-Control-Allow-Headers", "*")
	switch r.Method {
	case http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodGet, http.MethodHead:
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	key, err := ParsePath(r, ".flv")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	hb, err := h.Lookup(r.Context(), key)
	if err != nil || hb == nil {
		if err == nil || errors.Is(err, ErrNotFound) {
			http.Error(w, "stream "+key.String()+" not found", http.StatusNotFound)
			return
		}
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	// An edge's pull is fed at once: the edge merges for its players.
	rd, err := hb.NewReaderWith(hub.ReaderOptions{NoMerge: streamkey.IsRelay(r.URL.Query())})
	if err != nil {
		http.Error(w, "stream "+key.String()+" not found", http.StatusNotFound)
		return
	}
	defer rd.Close()
	hd.Set("Content-Type", "video/x-flv")
	hd.Set("Cache-Control", "no-cache, no-store")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	err = h.stream(r.Context(), w, rd)
	log := h.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Debug("http-flv player left", "stream", key.String(), "remote", r.RemoteAddr, "err", err)
}

// BytesCounter is told the bytes written on a hijacked connection, which
// bypass the ResponseWriter: a wrapper that counts what it writes (an
// origin's client list) implements it. Found through Unwrap.
type BytesCounter interface {
	CountBytes(n int64)
}

// HeaderPreparer lets a wrapping ResponseWriter that sets headers when the
// response starts (in WriteHeader) set them on a hijacked response too: the
// handler calls PrepareHeader(200) on every wrapper that implements it,
// through Unwrap, before it writes the header itself.
type HeaderPreparer interface {
	PrepareHeader(code int)
}

func prepareHeader(w http.ResponseWriter, code int) {
	for {
		if p, ok := w.(HeaderPreparer); ok {
			p.PrepareHeader(code)
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

func counterOf(w http.ResponseWriter) BytesCounter {
	for {
		if c, ok := w.(BytesCounter); ok {
			return c
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
}

func (h *Handler) stream(ctx context.Context, w http.ResponseWriter, rd *hub.Reader) error {
	timeout := h.WriteTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	count := counterOf(w)
	// The response is written on the connection itself: the ResponseWriter
	// cannot write a batch of shared tags in one writev, and through it a
	// batch costs two or three write calls (its buffer, the chunk framing,
	// the flush). HTTP/2 cannot be hijacked: it takes the copying path.
	prepareHeader(w, http.StatusOK)
	var hd strings.Builder
	hd.WriteString("HTTP/1.1 200 OK\r\n")
	_ = w.Header().Write(&hd)
	hd.WriteString("Connection: close\r\n\r\n")
	nc, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return h.streamCopy(ctx, w, rd, timeout)
	}
	// The player sends nothing more; its closing ends the stream, which
	// the server no longer watches once the connection is hijacked.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cancel()
		_, _ = io.Copy(io.Discard, nc)
	}()
	defer func() {
		nc.Close()
		<-done
	}()
	head := make([]byte, 0, hd.Len()+flvio.FileHeaderLength+4)
	head = append(head, hd.String()...)
	fh := make([]byte, flvio.FileHeaderLength+4)
	flvio.FillFileHeader(fh, flvio.FILE_HAS_AUDIO|flvio.FILE_HAS_VIDEO)
	head = append(head, fh...)
	p := &player{nc: nc, count: count, timeout: timeout}
	if err := p.write([][]byte{head}); err != nil {
		return err
	}
	// The hub's flushers write the tags (one non-blocking writev of the
	// shared tags per window); this goroutine writes what a full socket
	// left, blocking, and the cached GOP first.
	err = rd.CopyDirect(ctx, p, nil, p.write)
	if err == nil {
		err = io.EOF // the stream ended, as Next tells
	}
	return err
}

// player is a hijacked HTTP-FLV connection, written by its goroutine
// (write, blocking) and by the hub's flushers (TryWriteBuffers), one at a
// time (mu).
type player struct {
	mu      sync.Mutex
	nc      net.Conn
	count   BytesCounter
	timeout time.Duration
	armed   time.Time
	nb      net.Buffers // write's: writev takes its address
	tryw    *netx.TryWriter
	trySet  bool
}

// armDeadline moves the write deadline at most once a second: a deadline
// change is a runtime timer update, per write a measurable share of the
// fan-out. p.mu held.
func (p *player) armDeadline() {
	if now := time.Now(); now.Sub(p.armed) >= time.Second {
		p.armed = now
		_ = p.nc.SetWriteDeadline(now.Add(p.timeout))
	}
}

// write writes b with one writev, waiting for the socket up to the write
// timeout, and consumes b (not the bytes). Its error is the connection's.
func (p *player) write(b [][]byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armDeadline()
	p.nb = b
	n, err := netx.WriteBuffers(p.nc, &p.nb)
	p.nb = nil
	if p.count != nil {
		p.count.CountBytes(n)
	}
	return err
}

var errBusy = errors.New("http-flv: connection busy writing")

// TryWriteBuffers implements hub.DirectWriter: one writev of v as far as
// the socket takes it now, never waiting; the rest stays in v with an
// error (netx.ErrWouldBlock for a full socket; errBusy while write runs;
// errors.ErrUnsupported without a socket to write to directly).
func (p *player) TryWriteBuffers(v *net.Buffers) (int64, error) {
	if !p.mu.TryLock() {
		return 0, errBusy
	}
	defer p.mu.Unlock()
	if !p.trySet {
		p.trySet = true
		p.tryw = netx.NewTryWriter(p.nc)
	}
	if p.tryw == nil {
		return 0, errors.ErrUnsupported
	}
	p.armDeadline()
	n, err := p.tryw.TryWrite(v)
	if p.count != nil {
		p.count.CountBytes(n)
	}
	return n, err
}

// streamCopy writes through the ResponseWriter (HTTP/2): each batch is
// copied into one buffer and written at once.
func (h *Handler) streamCopy(ctx context.Context, w http.ResponseWriter, rd *hub.Reader, timeout time.Duration) error {
	rc := http.NewResponseController(w)
	buf := make([]byte, flvio.FileHeaderLength+4, 64<<10)
	flvio.FillFileHeader(buf, flvio.FILE_HAS_AUDIO|flvio.FILE_HAS_VIDEO)
	for {
		_ = rc.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := w.Write(buf); err != nil {
			return err
		}
		if err := rc.Flush(); err != nil {
			return err
		}
		if cap(buf) > 4<<20 {
			buf = make([]byte, 0, 64<<10) // do not keep a keyframe burst's buffer
		}
		tags, err := rd.Next(ctx)
		if err != nil {
			return err
		}
		buf = buf[:0]
		for _, t := range tags {
			buf = append(buf, t...)
		}
	}
}

// Conn reads an HTTP-FLV stream (or any FLV byte stream, see NewReader);
// it is a stream.Source.
type Conn struct {
	body  io.ReadCloser
	br    *bufio.Reader
	demux *flvx.Demuxer
	hdr   [flvio.TagHeaderLength]byte
	stop  func() bool
}

// Dial GETs url and reads the FLV file header. ctx bounds the whole
// stream: when it ends the body is closed. client nil: http.DefaultClient.
func Dial(ctx context.Context, url string, client *http.Client) (*Conn, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("http-flv %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("http-flv %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		err := fmt.Errorf("http-flv %s: %s: %s", url, resp.Status, strings.TrimSpace(string(msg)))
		if resp.StatusCode == http.StatusNotFound {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { resp.Body.Close() })
	c, err := NewReader(resp.Body)
	if err != nil {
		stop()
		return nil, fmt.Errorf("http-flv %s: %w", url, err)
	}
	c.stop = stop
	return c, nil
}

// NewReader reads an FLV byte stream (an HTTP-FLV body, a file) from body
// and checks its file header. Close closes body.
func NewReader(body io.ReadCloser) (*Conn, error) {
	c := &Conn{body: body, br: bufio.NewReaderSize(body, 64<<10), demux: flvx.NewDemuxer()}
	var fh [flvio.FileHeaderLength + 4]byte
	if _, err := io.ReadFull(c.br, fh[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("read header: %w", err)
	}
	if _, skip, err := flvio.ParseFileHeader(fh[:]); err != nil || skip != 4 {
		c.Close()
		return nil, errors.New("not an FLV stream")
	}
	return c, nil
}

// Close ends the stream.
func (c *Conn) Close() error {
	if c.stop != nil {
		c.stop()
	}
	return c.body.Close()
}

// Metadata returns the last onMetaData (may be nil).
func (c *Conn) Metadata() flvio.AMFMap { return c.demux.Metadata() }

// Streams reads until the codecs are known.
func (c *Conn) Streams() ([]av.CodecData, error) {
	for !c.demux.Probed() {
		if err := c.readTag(); err != nil {
			return nil, err
		}
	}
	return c.demux.Streams(), nil
}

// ReadPacket returns the next packet; ErrCodecChanged when new codec
// headers arrived: call Streams and keep reading. io.EOF at the end.
func (c *Conn) ReadPacket() (av.Packet, error) {
	for {
		if c.demux.Probed() {
			if pkt, ok := c.demux.Packet(); ok {
				return pkt, nil
			}
		}
		if err := c.readTag(); err != nil {
			return av.Packet{}, err
		}
	}
}

// ErrCodecChanged is returned by ReadPacket when codec headers changed; it
// is stream.ErrCodecChanged.
var ErrCodecChanged = flvx.ErrCodecChanged

func (c *Conn) readTag() error {
	if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
		return err
	}
	typ := c.hdr[0]
	n := int(c.hdr[1])<<16 | int(c.hdr[2])<<8 | int(c.hdr[3])
	ts := int32(uint32(c.hdr[4])<<16 | uint32(c.hdr[5])<<8 | uint32(c.hdr[6]) | uint32(c.hdr[7])<<24)
	body := make([]byte, n+4) // the 24-bit size bounds this at 16 MiB
	if _, err := io.ReadFull(c.br, body); err != nil {
		return err
	}
	return c.demux.Push(typ, ts, body[:n])
}
