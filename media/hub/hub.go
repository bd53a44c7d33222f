// Package hub fans one live source out to many readers.
//
// Each packet is serialized once into FLV tag bytes (the HTTP-FLV wire form;
// the tag body is also the RTMP message payload) and the same bytes are
// queued to every reader. A reader starts at the latest keyframe of a GOP
// cache, after the metadata and codec sequence headers. Every queue is
// bounded: a reader whose queue overflows is moved to the next keyframe
// (counted as skipped), and after repeated overflows it is dropped (counted
// as dropped). The publisher never waits for a reader.
//
// A hub outlives its sources: Splice starts a new source under the attached
// readers (codec headers are sent again and the timestamps readers see stay
// monotonic), which is how an edge switches upstream without disconnecting
// players. Close ends the stream for everyone.
package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/internal/flvx"
)

var (
	// ErrBusy is returned by Publish while another source is active.
	ErrBusy = errors.New("hub: stream is already being published")
	// ErrClosed is returned once the hub is closed.
	ErrClosed = errors.New("hub: closed")
	// ErrSourceReplaced is returned to a source superseded by Splice or closed.
	ErrSourceReplaced = errors.New("hub: source replaced or closed")
	// ErrTooSlow ends a reader that overflowed its queue too often.
	ErrTooSlow = errors.New("hub: reader too slow, dropped")
)

// Config bounds the buffers of a hub. Zero fields take the defaults.
type Config struct {
	// QueuePackets and QueueBytes bound each reader's queue (1024, 8 MiB).
	QueuePackets int
	QueueBytes   int
	// MaxOverflows is how many overflows within OverflowReset a reader may
	// have before it is dropped (3, 30 s).
	MaxOverflows  int
	OverflowReset time.Duration
	// GOPPackets and GOPBytes bound the GOP cache (2048, 16 MiB). A GOP
	// exceeding them is not cached: new readers wait for the next keyframe.
	GOPPackets int
	GOPBytes   int
	// MergeWindow is how long Reader.Next waits after the first queued tag
	// to collect more, merging writes into fewer syscalls (30 ms; negative:
	// no wait).
	MergeWindow time.Duration
	// SpliceGap is the timestamp step readers see at a source change (40 ms).
	SpliceGap time.Duration
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.QueuePackets, 1024)
	def(&c.QueueBytes, 8<<20)
	def(&c.MaxOverflows, 3)
	def(&c.GOPPackets, 2048)
	def(&c.GOPBytes, 16<<20)
	if c.OverflowReset <= 0 {
		c.OverflowReset = 30 * time.Second
	}
	if c.MergeWindow == 0 {
		c.MergeWindow = 30 * time.Millisecond
	}
	if c.SpliceGap <= 0 {
		c.SpliceGap = 40 * time.Millisecond
	}
	return c
}

// tag is one serialized FLV tag shared by all readers; never modified. It
// keeps what it was made from, so a sink that needs packets (a muxer other
// than FLV) gets them without parsing the FLV again for every player.
type tag struct {
	b       []byte
	key     bool           // a point a reader may start from
	streams []av.CodecData // set on the first header of a source: the codecs from here on
	pkt     av.Packet      // the packet, when isPkt
	isPkt   bool
}

// Stats are the hub's counters.
type Stats struct {
	Readers    int
	Sources    int64 // sources ever started
	PacketsIn  int64
	BytesIn    int64 // serialized tag bytes accepted from sources
	BytesOut   int64 // tag bytes handed to readers
	Skipped    int64 // reader overflows resolved by skipping to a keyframe
	Dropped    int64 // readers dropped after repeated overflows
	ReadersAll int64 // readers ever attached
}

// Hub is one stream: at most one active source and any number of readers.
type Hub struct {
	key string
	cfg Config
	reg *Registry

	mu       sync.Mutex
	closed   bool
	src      *Source
	streams  []av.CodecData
	headers  []*tag
	gop      []*tag
	gopBytes int
	gopOK    bool
	readers  map[*Reader]struct{}
	lastTS   time.Duration // highest timestamp handed to readers
	haveTS   bool
	done     chan struct{}

	sources, packetsIn, bytesIn, bytesOut, skipped, dropped, readersAll atomic.Int64
}

// New returns a hub outside any registry.
func New(key string, cfg Config) *Hub {
	return &Hub{key: key, cfg: cfg.withDefaults(), readers: map[*Reader]struct{}{}, done: make(chan struct{})}
}

// Key returns the key the hub was created with.
func (h *Hub) Key() string { return h.key }

// Done is closed when the hub is closed.
func (h *Hub) Done() <-chan struct{} { return h.done }

// Streams returns the codecs of the current (or last) source.
func (h *Hub) Streams() []av.CodecData {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams
}

// Publishing reports whether a source is active.
func (h *Hub) Publishing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.src != nil
}

// NumReaders returns the number of attached readers.
func (h *Hub) NumReaders() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.readers)
}

// Stats returns a snapshot of the counters.
func (h *Hub) Stats() Stats {
	return Stats{
		Readers: h.NumReaders(), Sources: h.sources.Load(), PacketsIn: h.packetsIn.Load(),
		BytesIn: h.bytesIn.Load(), BytesOut: h.bytesOut.Load(), Skipped: h.skipped.Load(),
		Dropped: h.dropped.Load(), ReadersAll: h.readersAll.Load(),
	}
}

// Publish starts a source; it fails with ErrBusy while another is active.
// meta may be nil (derived from streams).
func (h *Hub) Publish(streams []av.CodecData, meta flvio.AMFMap) (*Source, error) {
	return h.start(streams, meta, false)
}

// Splice starts a source that replaces the active one, if any; the old
// source's writes fail with ErrSourceReplaced from then on. Readers stay
// attached, get the new codec headers and monotonic timestamps.
func (h *Hub) Splice(streams []av.CodecData, meta flvio.AMFMap) (*Source, error) {
	return h.start(streams, meta, true)
}

func (h *Hub) start(streams []av.CodecData, meta flvio.AMFMap, replace bool) (*Source, error) {
	if len(streams) == 0 {
		return nil, fmt.Errorf("hub %s: source has no streams", h.key)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if h.src != nil && !replace {
		return nil, ErrBusy
	}
	ts := time.Duration(0)
	if h.haveTS {
		ts = h.lastTS
	}
	hb, err := flvx.EncodeHeaders(streams, meta, flvio.TimeToTs(ts))
	if err != nil {
		return nil, fmt.Errorf("hub %s: %w", h.key, err)
	}
	s := &Source{h: h, streams: streams}
	for i, c := range streams {
		if c.Type().IsVideo() {
			s.hasVideo = true
			s.videoIdx = i
		}
	}
	h.src = s
	h.streams = streams
	h.headers = h.headers[:0:0]
	for i, b := range hb {
		t := &tag{b: b}
		if i == 0 {
			t.streams = streams
		}
		h.headers = append(h.headers, t)
		h.bytesIn.Add(int64(len(b)))
	}
	// The cached GOP belongs to the old codecs.
	h.gop, h.gopBytes, h.gopOK = nil, 0, false
	h.sources.Add(1)
	// Every reader gets the new headers with the new source's first
	// keyframe, not before: a source may start mid-GOP, and frames that
	// depend on a picture the decoder never saw are garbage on screen.
	for r := range h.readers {
		r.needHeaders = true
	}
	return s, nil
}

// Close ends the stream: readers get io.EOF after their queue, sources get
// ErrClosed, and the hub leaves its registry.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	h.src = nil
	h.gop = nil
	for r := range h.readers {
		r.finish(io.EOF)
	}
	h.readers = map[*Reader]struct{}{}
	close(h.done)
	h.mu.Unlock()
	if h.reg != nil {
		h.reg.remove(h)
	}
}

// Source is one publisher's handle on a hub.
type Source struct {
	h        *Hub
	streams  []av.CodecData
	hasVideo bool
	videoIdx int
	started  bool
	offset   time.Duration
}

// Streams returns the codecs given when the source started.
func (s *Source) Streams() []av.CodecData { return s.streams }

// WritePacket serializes pkt once and queues it to every reader.
func (s *Source) WritePacket(pkt av.Packet) error {
	h := s.h
	if int(pkt.Idx) < 0 || int(pkt.Idx) >= len(s.streams) {
		return fmt.Errorf("hub %s: packet for stream %d of %d", h.key, pkt.Idx, len(s.streams))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	if h.src != s {
		return ErrSourceReplaced
	}
	if !s.started {
		s.started = true
		if h.haveTS {
			// Readers must never see time go backwards across a source change.
			s.offset = h.lastTS + h.cfg.SpliceGap - pkt.Time
		}
	}
	pkt.Time += s.offset
	if pkt.Time < 0 {
		pkt.Time = 0
	}
	if !h.haveTS || pkt.Time > h.lastTS {
		h.lastTS, h.haveTS = pkt.Time, true
	}
	isVideo := int(pkt.Idx) == s.videoIdx && s.hasVideo
	t := &tag{
		b:   flvx.EncodePacket(pkt, s.streams[pkt.Idx]),
		key: (isVideo && pkt.IsKeyFrame) || !s.hasVideo,
		pkt: pkt, isPkt: true,
	}
	h.packetsIn.Add(1)
	h.bytesIn.Add(int64(len(t.b)))
	h.cacheGOP(t)
	for r := range h.readers {
		if r.needHeaders {
			if !t.key {
				continue
			}
			if !r.pushAll(h.headers) {
				h.overflow(r)
				continue
			}
			r.needHeaders = false
		}
		if !r.push(t) {
			h.overflow(r)
		}
	}
	return nil
}

func (h *Hub) cacheGOP(t *tag) {
	if t.key {
		clear(h.gop[:cap(h.gop)]) // release the old GOP's tags
		h.gop, h.gopBytes, h.gopOK = h.gop[:0], 0, true
	}
	if !h.gopOK {
		return
	}
	if len(h.gop) >= h.cfg.GOPPackets || h.gopBytes+len(t.b) > h.cfg.GOPBytes {
		h.gop, h.gopBytes, h.gopOK = nil, 0, false
		return
	}
	h.gop = append(h.gop, t)
	h.gopBytes += len(t.b)
}

// Close ends this source; readers stay attached waiting for a new one. It is
// a no-op for a source already replaced.
func (s *Source) Close() {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.src == s {
		h.src = nil
	}
}

// overflow handles a reader whose queue is full. Called with h.mu held.
func (h *Hub) overflow(r *Reader) {
	now := time.Now()
	if now.Sub(r.lastOverflow) > h.cfg.OverflowReset {
		r.overflows = 0
	}
	r.lastOverflow = now
	r.overflows++
	if r.overflows > h.cfg.MaxOverflows {
		h.dropped.Add(1)
		delete(h.readers, r)
		r.queue, r.qBytes = nil, 0
		r.finish(ErrTooSlow)
		return
	}
	h.skipped.Add(1)
	r.skipped.Add(1)
	r.queue, r.qBytes = r.queue[:0:0], 0
	r.needHeaders = true
}

// NewReader attaches a reader. It starts with the headers and the cached GOP
// when there is one, otherwise at the next keyframe.
func (h *Hub) NewReader() (*Reader, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	r := &Reader{h: h, notify: make(chan struct{}, 1), needHeaders: true}
	if h.src != nil && h.gopOK && len(h.gop) > 0 {
		if r.pushAll(h.headers) && r.pushAll(h.gop) {
			r.needHeaders = false
		} else {
			r.queue, r.qBytes = nil, 0
		}
	}
	h.readers[r] = struct{}{}
	h.readersAll.Add(1)
	return r, nil
}

// Reader is one consumer of a hub. Next and Close may be called from
// different goroutines; Next from one goroutine at a time.
type Reader struct {
	h      *Hub
	notify chan struct{}

	// guarded by h.mu
	queue        []*tag
	qBytes       int
	needHeaders  bool
	overflows    int
	lastOverflow time.Time
	err          error

	skipped atomic.Int64
}

// push queues t if it fits. Called with h.mu held.
func (r *Reader) push(t *tag) bool {
	if len(r.queue) >= r.h.cfg.QueuePackets || r.qBytes+len(t.b) > r.h.cfg.QueueBytes {
		return false
	}
	r.queue = append(r.queue, t)
	r.qBytes += len(t.b)
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return true
}

func (r *Reader) pushAll(ts []*tag) bool {
	for _, t := range ts {
		if !r.push(t) {
			return false
		}
	}
	return true
}

// finish ends the reader with err after its queue drains. Called with h.mu held.
func (r *Reader) finish(err error) {
	if r.err == nil {
		r.err = err
	}
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Skipped returns how often this reader was moved to a later keyframe.
func (r *Reader) Skipped() int64 { return r.skipped.Load() }

// CopyTo feeds every batch of tags to write (an RTMP connection's WriteTags,
// a forward to an origin) until the hub closes, which returns nil, or until
// write, the reader or ctx fails, which returns that error.
func (r *Reader) CopyTo(ctx context.Context, write func(tags [][]byte) error) error {
	for {
		tags, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := write(tags); err != nil {
			return err
		}
	}
}

// Next blocks until tags are queued, waits the merge window to collect more,
// and returns them as complete FLV tags (header, body, previous-tag-size).
// The slices are shared and must not be modified. It returns io.EOF when the
// hub closed, ErrTooSlow when the reader was dropped, or ctx's error.
func (r *Reader) Next(ctx context.Context) ([][]byte, error) {
	ts, err := r.next(ctx)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(ts))
	for i, t := range ts {
		out[i] = t.b
	}
	return out, nil
}

// Frame is one entry of a reader's queue seen by a sink that needs packets:
// the FLV tag and what it was made from.
type Frame struct {
	// Tag is the serialized FLV tag (shared; never modify it).
	Tag []byte
	// Streams is set on the first header of a source start or codec
	// change: the codecs of the packets that follow.
	Streams []av.CodecData
	// Packet is the media packet (timestamps as readers see them: monotonic
	// across sources) when IsPacket; Packet.Data is shared.
	Packet   av.Packet
	IsPacket bool
}

// NextFrames is Next for sinks that need packets: the same queue, with the
// packets and codecs the tags were made from (nothing is parsed again).
func (r *Reader) NextFrames(ctx context.Context) ([]Frame, error) {
	ts, err := r.next(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Frame, len(ts))
	for i, t := range ts {
		out[i] = Frame{Tag: t.b, Streams: t.streams, Packet: t.pkt, IsPacket: t.isPkt}
	}
	return out, nil
}

// next returns the queued tags, with the same waits and errors as Next.
func (r *Reader) next(ctx context.Context) ([]*tag, error) {
	waited := false
	for {
		r.h.mu.Lock()
		n := len(r.queue)
		if n > 0 && (waited || r.h.cfg.MergeWindow < 0) {
			out := make([]*tag, n)
			copy(out, r.queue)
			bytes := r.qBytes
			clear(r.queue)
			r.queue, r.qBytes = r.queue[:0], 0
			r.h.mu.Unlock()
			r.h.bytesOut.Add(int64(bytes))
			return out, nil
		}
		err := r.err
		r.h.mu.Unlock()
		if n == 0 && err != nil {
			return nil, err
		}
		if n > 0 {
			// Let more tags accumulate so the caller writes them in one go.
			t := time.NewTimer(r.h.cfg.MergeWindow)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
			waited = true
			continue
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-r.notify:
		}
	}
}

// Close detaches the reader.
func (r *Reader) Close() {
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	delete(r.h.readers, r)
	r.queue, r.qBytes = nil, 0
	r.finish(io.EOF)
}

// Registry holds the hubs of a process by key.
type Registry struct {
	cfg Config

	mu     sync.Mutex
	hubs   map[string]*Hub
	closed bool
}

// NewRegistry returns an empty registry whose hubs use cfg.
func NewRegistry(cfg Config) *Registry {
	return &Registry{cfg: cfg, hubs: map[string]*Hub{}}
}

// Get returns the hub for key or nil.
func (g *Registry) Get(key string) *Hub {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.hubs[key]
}

// GetOrCreate returns the hub for key, creating it if needed. It returns
// ErrClosed once the registry is closed.
func (g *Registry) GetOrCreate(key string) (h *Hub, created bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, false, ErrClosed
	}
	if h := g.hubs[key]; h != nil {
		return h, false, nil
	}
	h = New(key, g.cfg)
	h.reg = g
	g.hubs[key] = h
	return h, true, nil
}

// Keys returns the keys of all hubs.
func (g *Registry) Keys() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	keys := make([]string, 0, len(g.hubs))
	for k := range g.hubs {
		keys = append(keys, k)
	}
	return keys
}

// Len returns the number of hubs.
func (g *Registry) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.hubs)
}

// Close closes every hub and refuses new ones.
func (g *Registry) Close() {
	g.mu.Lock()
	g.closed = true
	hubs := make([]*Hub, 0, len(g.hubs))
	for _, h := range g.hubs {
		hubs = append(hubs, h)
	}
	g.mu.Unlock()
	for _, h := range hubs {
		h.Close()
	}
}

func (g *Registry) remove(h *Hub) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hubs[h.key] == h {
		delete(g.hubs, h.key)
	}
}
