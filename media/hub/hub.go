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
// One timer of the hub ends each merge window. How a reader's tags are
// written then depends on the reader:
//
//   - A player connection that can be written without blocking (an RTMP
//     or HTTP-FLV player: CopyWire or CopyDirect with a DirectWriter) is
//     written by the hub itself. At the window's end the hub lists every
//     such reader with tags queued and writes each one's batch with one
//     non-blocking writev from a few flusher goroutines (one per
//     GOMAXPROCS, the readers split between them, so one stream's fan-out
//     uses every core). A flusher takes the batches of the next few
//     readers under the hub's lock just before it writes them, not all
//     at the window's end, and every flush goes through the readers in
//     the same order: a tag that arrives while a flush is writing still
//     goes out in that flush to every reader not yet written, and each
//     reader is written about one flush after its last write, so when
//     writing every player takes longer than the window (thousands of
//     players on one core) a tag waits about one flush, not the rest of
//     this one and the whole next. A socket
//     that takes the whole batch costs one system call and wakes no
//     goroutine. When it does not (full socket, partial write, the
//     connection's write lock busy, an error) the rest goes to the
//     reader's own goroutine, which writes it blocking, with the
//     connection's deadlines, and then returns the reader to direct mode;
//     until then the flushers leave that reader to its goroutine, so a
//     player's bytes stay in order. Flushers yield their thread every few
//     writes (Config.FlushYield) so that the upstream's reader, made
//     runnable by the network poller, gets in between. One flush of a hub
//     runs at a time: if a window's writes outlast the next window, the
//     next flush starts when they end.
//   - Every other reader (a muxer, a forward, a relay's NoMerge pull, an
//     HTTP/2 player) is woken at the window's end and takes its tags in
//     its own goroutine, as Next describes.
//
// Either way a window's tags are taken into slices the reader reuses, so
// nothing is allocated per reader per window. A protocol whose wire form is
// not the FLV tag (RTMP chunks) asks for it through an Encoder: the first
// form made of a tag is kept and shared by every reader asking with the
// same key.
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
	"net"
	"runtime"
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
	// MergeWindow is how long the hub holds tags after the first one of a
	// window before it wakes its readers, so each reader writes a window's
	// tags in one syscall (DefaultMergeWindow; negative: no wait, every tag
	// wakes the readers at once). There is one window per hub, not one per
	// reader: all readers wake together, one timer for the hub.
	MergeWindow time.Duration
	// MergeWindowFunc, when set, replaces MergeWindow and is read at the
	// start of every window, so a reloaded configuration applies at once.
	// Zero or negative: no wait.
	MergeWindowFunc func() time.Duration
	// SpliceGap is the timestamp step readers see at a source change (40 ms).
	SpliceGap time.Duration
	// WriteDelay, when set, is told once per reader batch how long the
	// batch's oldest tag waited, from its arrival (Source.WritePacket):
	// taken, until the batch's write started (the merge window and the
	// wait for a flusher, or the reader's goroutine, to get to it: the
	// hub's and the CPU's part), and written, until the write ended (for
	// a reader without a DirectWriter, when it came back for its next
	// batch; taken plus the write, a rest written by the reader's
	// goroutine after a full socket included: the player's part).
	// Tags a reader gets from the GOP cache when it attaches are not
	// counted: they arrived before it did. A reader that ends is not told
	// of its last batch. It runs on a flusher or the reader's goroutine,
	// several at once, without the hub's lock, so it must be cheap and
	// safe for concurrent use (a histogram's Observe).
	WriteDelay func(taken, written time.Duration)
	// FlushYield is how many direct writes a flusher makes between two
	// yields of its thread (runtime.Gosched), so that goroutines made
	// runnable meanwhile (the upstream's reader) run within a few writes
	// rather than after the whole window's (DefaultFlushYield; negative:
	// never yield, only the runtime's preemption every 10 ms).
	FlushYield int
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
		c.MergeWindow = DefaultMergeWindow
	}
	if c.SpliceGap <= 0 {
		c.SpliceGap = 40 * time.Millisecond
	}
	if c.FlushYield == 0 {
		c.FlushYield = DefaultFlushYield
	}
	return c
}

// DefaultFlushYield is Config.FlushYield's default.
const DefaultFlushYield = 64

// DefaultMergeWindow is MergeWindow's default. The CPU a fan-out spends
// goes with the number of write calls, one per player per window; this
// window is where the measured cost curve (docs/benchmarks.md) has flattened
// while it adds at most this much latency.
const DefaultMergeWindow = 50 * time.Millisecond

// tag is one serialized FLV tag shared by all readers; never modified. It
// keeps what it was made from, so a sink that needs packets (a muxer other
// than FLV) gets them without parsing the FLV again for every player, and
// the first wire form an Encoder made of it, so that players of the same
// protocol and settings share it too.
type tag struct {
	b       []byte
	key     bool           // a point a reader may start from
	streams []av.CodecData // set on the first header of a source: the codecs from here on
	pkt     av.Packet      // the packet, when isPkt
	isPkt   bool

	wmu  sync.Mutex               // serializes making the wire form
	wire atomic.Pointer[wireForm] // nil until an Encoder made it; then never changed
}

// wireForm is a tag's wire form for one encoder key.
type wireForm struct {
	key uint64
	b   []byte
}

// Encoder turns FLV tags into a protocol's wire form (an RTMP connection's
// chunked messages). Two encoders returning the same Key must make the same
// bytes of the same tag: the hub keeps the first encoding of each tag and
// hands it to every reader asking with that key, so a message is
// serialized once, not once per player.
type Encoder interface {
	EncoderKey() uint64
	// Encode appends tag's wire form to dst. A tag the protocol does not
	// carry encodes to nothing.
	Encode(dst, tag []byte) ([]byte, error)
}

// wireFor returns t's wire form for an encoder with key, made once per
// tag for the first key asked (a different key is encoded again at every
// call). Once made, every reader takes it with one atomic load: this runs
// per player per tag, and a mutex here was a measurable share of the
// fan-out.
func (t *tag) wireFor(enc Encoder, key uint64) ([]byte, error) {
	if w := t.wire.Load(); w != nil {
		if w.key == key {
			return w.b, nil
		}
		return enc.Encode(nil, t.b)
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if w := t.wire.Load(); w != nil { // made while this reader waited
		if w.key == key {
			return w.b, nil
		}
		return enc.Encode(nil, t.b)
	}
	b, err := enc.Encode(nil, t.b)
	if err != nil {
		return nil, err
	}
	if b == nil {
		b = []byte{}
	}
	t.wire.Store(&wireForm{key: key, b: b})
	return b, nil
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
	// DirectWrites are batches a flusher wrote whole to a reader's
	// DirectWriter (no goroutine woken); Handoffs are batches it left,
	// in part, to the reader's goroutine (socket full, lock busy, error);
	// ReaderWrites are batches reader goroutines took and wrote
	// themselves (every reader without a DirectWriter, and one in
	// direct mode's first batch and while it writes a handed-off rest).
	DirectWrites int64
	Handoffs     int64
	ReaderWrites int64
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
	// readers are the attached readers in a stable order (only the last
	// one moves, into the place of one that leaves: see detach), so every
	// flush writes them in the same order and a player's writes come
	// about one flush apart.
	readers  []*Reader
	born     time.Time     // the origin of the monotonic clock of tag arrivals (mono)
	lastTS   time.Duration // highest timestamp handed to readers
	haveTS   bool
	done     chan struct{}
	flushT   *time.Timer // wakes the readers at the end of a window
	armed    bool        // flushT runs
	flushing bool        // a flush is writing (h.flushIdle is told when it ends)
	again    bool        // the timer fired during a flush: flush again when it ends
	dlist    []*Reader   // the readers a flush writes directly; reused
	// flushIdle is broadcast when a flush ends (on h.mu): a reader's
	// goroutine that takes a direct reader back, and Close, wait for it.
	flushIdle sync.Cond

	sources, packetsIn, bytesIn, bytesOut, skipped, dropped, readersAll atomic.Int64
	directWrites, handoffs, readerWrites                                atomic.Int64
}

// New returns a hub outside any registry.
func New(key string, cfg Config) *Hub {
	h := &Hub{key: key, cfg: cfg.withDefaults(), done: make(chan struct{}), born: time.Now()}
	h.flushIdle.L = &h.mu
	h.flushT = time.AfterFunc(time.Hour, h.flush)
	h.flushT.Stop()
	return h
}

// mono returns the time since the hub was made, ≥ 1 ns, so that 0 may
// mean "none" in the readers' arrival fields.
func (h *Hub) mono() time.Duration {
	return max(time.Since(h.born), 1)
}

// window returns the merge window now; ≤ 0: none.
func (h *Hub) window() time.Duration {
	if h.cfg.MergeWindowFunc != nil {
		return h.cfg.MergeWindowFunc()
	}
	return h.cfg.MergeWindow
}

// flush ends a window (it runs on the timer's goroutine): every reader in
// direct mode with queued tags is listed, to be taken and written by the
// flushers; every other reader with queued tags wakes. A flush that finds
// another running leaves it to run again when its writes end.
func (h *Hub) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.flushing {
		h.again = true
		return
	}
	h.flushing = true
	for {
		h.armed, h.again = false, false
		for _, r := range h.readers {
			if len(r.queue) == 0 {
				continue
			}
			if r.dw == nil || r.pending {
				r.due = true
				r.wake()
				continue
			}
			h.dlist = append(h.dlist, r) // taken by its flusher (takeDirect)
		}
		if len(h.dlist) > 0 {
			h.mu.Unlock()
			h.writeDirect(h.dlist)
			h.mu.Lock()
			clear(h.dlist)
			h.dlist = h.dlist[:0]
		}
		if !h.again || h.closed {
			break
		}
	}
	h.flushing = false
	h.flushIdle.Broadcast()
}

// Flush ends the current merge window now, as its timer would: it
// returns when the flushers have written (or handed off) every direct
// reader's batch, and every other reader with tags is woken. For tests and
// benchmarks that step windows themselves; a flush already running makes
// it return at once, leaving that flush to run again.
func (h *Hub) Flush() { h.flush() }

// minPerFlusher is the fewest readers worth another flusher goroutine.
const minPerFlusher = 64

// writeDirect writes the batches of rs (taken by flush) from
// min(GOMAXPROCS, len(rs)/minPerFlusher) flushers, this goroutine one of
// them, and returns when all are written or handed off. Called without
// h.mu.
func (h *Hub) writeDirect(rs []*Reader) {
	n := min(runtime.GOMAXPROCS(0), (len(rs)+minPerFlusher-1)/minPerFlusher)
	if n <= 1 {
		h.flushPart(rs)
		return
	}
	var wg sync.WaitGroup
	per := (len(rs) + n - 1) / n
	for i := per; i < len(rs); i += per {
		part := rs[i:min(i+per, len(rs))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.flushPart(part)
		}()
	}
	h.flushPart(rs[:per])
	wg.Wait()
}

// takeChunk is how many readers a flusher takes under one hold of h.mu
// before writing them: few enough that the take stays close to the write
// (tags arriving meanwhile make it into this flush), enough that the lock
// is taken once per many writes.
const takeChunk = 64

// takeDirect takes the queued tags of each reader of rs that is still in
// direct mode into its batch and returns those readers in taken (reused).
// A reader that left direct mode, was closed or dropped, or has nothing
// queued since the flush listed it is left out.
func (h *Hub) takeDirect(rs []*Reader, taken []*Reader) []*Reader {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range rs {
		if len(r.queue) == 0 || r.dw == nil || r.pending {
			continue
		}
		// Taken as a whole: the queue's array becomes the batch and the
		// last batch's (emptied by its flusher) the queue.
		r.queue, r.dbatch = r.dbatch[:0], r.queue
		r.dsince, r.dbytes = r.since, r.qBytes
		r.qBytes, r.due, r.since = 0, false, 0
		taken = append(taken, r)
	}
	return taken
}

// flushPart is one flusher: for every takeChunk readers of rs it takes
// their batches (takeDirect) and writes each with its DirectWriter, never
// blocking, handing what a socket did not take to the reader's goroutine.
// The counters are summed here and added once, not per write: flushers
// on other cores would fight over their line.
func (h *Hub) flushPart(rs []*Reader) {
	var direct, handed, bytes int64
	var chunk [takeChunk]*Reader
	yield := h.cfg.FlushYield
	written := 0
	for len(rs) > 0 {
		n := min(len(rs), takeChunk)
		taken := h.takeDirect(rs[:n], chunk[:0])
		rs = rs[n:]
		for _, r := range taken {
			if yield > 0 && written > 0 && written%yield == 0 {
				// Let what the poller made runnable (the upstream's
				// reader, whose packets are the next window) run between
				// writes.
				runtime.Gosched()
			}
			written++
			d, hd := h.writeBatch(r)
			direct += d
			handed += hd
			bytes += int64(r.dbytes)
		}
		clear(chunk[:len(taken)])
	}
	h.bytesOut.Add(bytes)
	h.directWrites.Add(direct)
	h.handoffs.Add(handed)
}

// writeBatch writes r's taken batch with its DirectWriter and reports
// whether the socket took it all (direct 1) or the rest was handed to the
// reader's goroutine (handed 1).
func (h *Hub) writeBatch(r *Reader) (direct, handed int64) {
	bufs := r.dbufs[:0]
	var err error
	for _, t := range r.dbatch {
		b := t.b
		if r.enc != nil {
			if b, err = t.wireFor(r.enc, r.key); err != nil {
				break
			}
		}
		if len(b) > 0 {
			bufs = append(bufs, b)
		}
	}
	clear(r.dbatch) // the batch's tags need not live until the next window
	r.dbatch = r.dbatch[:0]
	r.dbufs = bufs
	var taken time.Duration
	if r.dsince != 0 {
		taken = h.mono() - r.dsince
	}
	r.dnb = bufs
	encErr := err
	if err == nil {
		_, err = r.dw.TryWriteBuffers(&r.dnb)
	}
	if err == nil {
		clear(r.dbufs)
		if r.dsince != 0 {
			h.cfg.WriteDelay(taken, h.mono()-r.dsince)
		}
		return 1, 0
	}
	// The rest goes to the reader's goroutine, which may wait for the
	// socket (or, when the batch could not be encoded, ends with that
	// error).
	h.mu.Lock()
	r.pending = true
	r.rem, r.remErr, r.remSince, r.remTaken = r.dnb, encErr, r.dsince, taken
	r.wake()
	h.mu.Unlock()
	return 0, 1
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
		DirectWrites: h.directWrites.Load(), Handoffs: h.handoffs.Load(), ReaderWrites: h.readerWrites.Load(),
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
	for _, r := range h.readers {
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
	h.flushT.Stop()
	h.armed = false
	for _, r := range h.readers {
		r.finish(io.EOF)
		r.idx = -1
	}
	h.readers = nil
	close(h.done)
	// A flush in flight ends its writes (they never block) and stops.
	for h.flushing {
		h.flushIdle.Wait()
	}
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

// WritePacket serializes pkt once and queues it to every reader. The
// serialization runs outside the hub's lock, so readers taking their
// queues never wait for it.
func (s *Source) WritePacket(pkt av.Packet) error {
	h := s.h
	if int(pkt.Idx) < 0 || int(pkt.Idx) >= len(s.streams) {
		return fmt.Errorf("hub %s: packet for stream %d of %d", h.key, pkt.Idx, len(s.streams))
	}
	var arrived time.Duration // read once per packet, and only when asked for
	if h.cfg.WriteDelay != nil {
		arrived = h.mono()
	}
	h.mu.Lock()
	if err := h.writable(s); err != nil {
		h.mu.Unlock()
		return err
	}
	if !s.started {
		s.started = true
		if h.haveTS {
			// Readers must never see time go backwards across a source change.
			s.offset = h.lastTS + h.cfg.SpliceGap - pkt.Time
		}
	}
	h.mu.Unlock()
	pkt.Time += s.offset
	if pkt.Time < 0 {
		pkt.Time = 0
	}
	isVideo := int(pkt.Idx) == s.videoIdx && s.hasVideo
	t := &tag{
		b:   flvx.EncodePacket(pkt, s.streams[pkt.Idx]),
		key: (isVideo && pkt.IsKeyFrame) || !s.hasVideo,
		pkt: pkt, isPkt: true,
	}
	w := h.window()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.writable(s); err != nil {
		return err
	}
	if !h.haveTS || pkt.Time > h.lastTS {
		h.lastTS, h.haveTS = pkt.Time, true
	}
	h.packetsIn.Add(1)
	h.bytesIn.Add(int64(len(t.b)))
	h.cacheGOP(t)
	now := w <= 0
	flushNow := false
	for i := 0; i < len(h.readers); i++ {
		r := h.readers[i]
		if r.needHeaders {
			if !t.key {
				continue
			}
			if !r.pushAll(h.headers) {
				if h.overflow(r) {
					i-- // the last reader took its place
				}
				continue
			}
			r.needHeaders = false
		}
		if !r.push(t) {
			if h.overflow(r) {
				i--
			}
			continue
		}
		if r.since == 0 {
			r.since = arrived
		}
		if now || r.noMerge {
			if r.dw != nil && !r.pending {
				flushNow = true // a direct reader is written by a flush
				continue
			}
			r.due = true
			r.wake()
		}
	}
	if (flushNow || !now) && !h.armed {
		h.armed = true
		h.flushT.Reset(max(w, 0))
	}
	return nil
}

// writable reports why s may not write now. Called with h.mu held.
func (h *Hub) writable(s *Source) error {
	if h.closed {
		return ErrClosed
	}
	if h.src != s {
		return ErrSourceReplaced
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

// overflow handles a reader whose queue is full, and reports whether it
// dropped it (detached: the last reader is now in its place). Called with
// h.mu held.
func (h *Hub) overflow(r *Reader) bool {
	now := time.Now()
	if now.Sub(r.lastOverflow) > h.cfg.OverflowReset {
		r.overflows = 0
	}
	r.lastOverflow = now
	r.overflows++
	if r.overflows > h.cfg.MaxOverflows {
		h.dropped.Add(1)
		h.detach(r)
		r.queue, r.qBytes, r.since = nil, 0, 0
		r.finish(ErrTooSlow)
		return true
	}
	h.skipped.Add(1)
	r.skipped.Add(1)
	r.queue, r.qBytes, r.due, r.since = r.queue[:0:0], 0, false, 0
	r.needHeaders = true
	return false
}

// attach adds r at the end of h.readers. Called with h.mu held.
func (h *Hub) attach(r *Reader) {
	r.idx = len(h.readers)
	h.readers = append(h.readers, r)
}

// detach removes r from h.readers, if there, moving the last reader into
// its place (one reader changes place, not all after it). Called with
// h.mu held.
func (h *Hub) detach(r *Reader) {
	i := r.idx
	if i < 0 {
		return
	}
	last := len(h.readers) - 1
	h.readers[i] = h.readers[last]
	h.readers[i].idx = i
	h.readers[last] = nil
	h.readers = h.readers[:last]
	r.idx = -1
}

// NewReader attaches a reader. It starts with the headers and the cached GOP
// when there is one, otherwise at the next keyframe.
func (h *Hub) NewReader() (*Reader, error) { return h.NewReaderWith(ReaderOptions{}) }

// ReaderOptions change how one reader is fed.
type ReaderOptions struct {
	// NoMerge wakes the reader at every tag instead of at the end of the
	// hub's merge window: for a relay that merges again downstream (an
	// edge pulling from an origin), so that windows do not add up.
	NoMerge bool
}

// NewReaderWith is NewReader with options.
func (h *Hub) NewReaderWith(o ReaderOptions) (*Reader, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	r := &Reader{h: h, notify: make(chan struct{}, 1), needHeaders: true, noMerge: o.NoMerge}
	if h.src != nil && h.gopOK && len(h.gop) > 0 {
		if r.pushAll(h.headers) && r.pushAll(h.gop) {
			r.needHeaders = false
		} else {
			r.queue, r.qBytes = nil, 0
		}
	}
	if len(r.queue) > 0 {
		r.due = true // the cached GOP goes out at once
		r.wake()
	}
	h.attach(r)
	h.readersAll.Add(1)
	return r, nil
}

// Reader is one consumer of a hub. Next and Close may be called from
// different goroutines; Next from one goroutine at a time.
type Reader struct {
	h      *Hub
	notify chan struct{}

	// guarded by h.mu
	idx          int // in h.readers; -1: detached
	queue        []*tag
	qBytes       int
	needHeaders  bool
	overflows    int
	lastOverflow time.Time
	err          error
	due          bool // the queue is to be taken: a window ended, or no window
	noMerge      bool
	since        time.Duration // arrival (Hub.mono) of the oldest live tag queued; 0: none
	// Direct mode (CopyDirect). dw, enc and key are set by the reader's
	// goroutine while pending; a flush writes the reader only while
	// !pending, and a flusher that leaves a rest sets pending and rem.
	dw       DirectWriter
	enc      Encoder // nil: the FLV tags as they are
	key      uint64  // enc's key
	pending  bool    // the reader's goroutine writes (at first, and a rest until it is done)
	rem      [][]byte
	remErr   error // the batch could not be encoded: the reader ends with it
	remSince time.Duration
	remTaken time.Duration

	// owned by the flusher that took the reader (see Hub.takeDirect): the
	// batch, its wire forms and what writev leaves of them, all reused
	dbatch []*tag
	dbufs  [][]byte
	dnb    net.Buffers
	dsince time.Duration
	dbytes int

	// owned by the goroutine calling Next: reused from call to call, so a
	// reader allocates nothing per batch
	batch      []*tag
	tags       [][]byte
	frames     []Frame
	batchSince time.Duration // the batch's since, for WriteDelay at the next call
	batchTaken time.Duration // how long after batchSince the batch was taken

	skipped atomic.Int64
}

// wake signals the goroutine in Next. Called with h.mu held.
func (r *Reader) wake() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// push queues t if it fits. Called with h.mu held.
func (r *Reader) push(t *tag) bool {
	if len(r.queue) >= r.h.cfg.QueuePackets || r.qBytes+len(t.b) > r.h.cfg.QueueBytes {
		return false
	}
	r.queue = append(r.queue, t)
	r.qBytes += len(t.b)
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
	r.due = true
	r.wake()
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

// Next blocks until the hub's merge window ends with tags queued for this
// reader (at once without a window) and returns them as complete FLV tags
// (header, body, previous-tag-size). The slices are shared and must not be
// modified; the returned slice of them is the reader's own and is reused by
// the next call. It returns io.EOF when the hub closed, ErrTooSlow when the
// reader was dropped, or ctx's error.
func (r *Reader) Next(ctx context.Context) ([][]byte, error) {
	if err := r.next(ctx); err != nil {
		return nil, err
	}
	r.tags = r.tags[:0]
	for _, t := range r.batch {
		r.tags = append(r.tags, t.b)
	}
	return r.tags, nil
}

// NextWire is Next with every tag in enc's wire form, appended to bufs
// (nil, or the previous result to reuse its array). A tag's wire form is
// made once, by the first reader with enc's key, and shared. It fails as
// Next does, or with enc's error.
func (r *Reader) NextWire(ctx context.Context, enc Encoder, bufs [][]byte) ([][]byte, error) {
	if err := r.next(ctx); err != nil {
		return bufs[:0], err
	}
	bufs = bufs[:0]
	key := enc.EncoderKey() // the same for the whole batch: asked once
	for _, t := range r.batch {
		b, err := t.wireFor(enc, key)
		if err != nil {
			return bufs[:0], err
		}
		if len(b) > 0 {
			bufs = append(bufs, b)
		}
	}
	return bufs, nil
}

// CopyWire feeds every batch of tags in enc's wire form to write (an RTMP
// player's WriteWire) until the hub closes, which returns nil, or until
// write, the reader or ctx fails, which returns that error. write may
// consume the slice it is given (net.Buffers.WriteTo does), not the bytes.
// When enc is also a DirectWriter (an RTMP player's connection) and the
// reader merges (not NoMerge), it is CopyDirect: the hub's flushers write
// to it, and write is the blocking write of the same connection.
func (r *Reader) CopyWire(ctx context.Context, enc Encoder, write func(bufs [][]byte) error) error {
	if dw, ok := enc.(DirectWriter); ok && !r.noMerge {
		return r.CopyDirect(ctx, dw, enc, write)
	}
	var bufs [][]byte
	for {
		var err error
		bufs, err = r.NextWire(ctx, enc, bufs)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := write(bufs); err != nil {
			return err
		}
	}
}

// DirectWriter is a player's connection the hub's flushers write to
// themselves (see the package doc): RTMP and HTTP-FLV players.
type DirectWriter interface {
	// TryWriteBuffers writes v with one writev as far as the socket
	// takes it without waiting, consuming v as far as written (not the
	// bytes), and counts the bytes as the connection's blocking write
	// does. It returns nil only when all of v was written; otherwise
	// (socket full, the connection's write lock held by another writer,
	// a write error, no file descriptor) an error, with the rest in v,
	// which the reader's goroutine then writes blocking. It must never
	// wait: it runs on a flusher serving thousands of players.
	TryWriteBuffers(v *net.Buffers) (int64, error)
}

// CopyDirect serves a player whose connection dw the hub's flushers may
// write without blocking, until the hub closes (nil), or the reader, ctx,
// or a write fails (that error). enc makes the wire form (nil: the FLV
// tags as they are). write is the connection's blocking write, with its
// deadlines (a timed-out write fails it, which drops the player): this
// goroutine uses it for the first batch (the cached GOP), for what a
// flusher could not write, and for the batches that came meanwhile, and
// then goes back to waiting while the flushers write; the player's bytes
// are in order throughout. write may consume the slice it is given, not
// the bytes. A NoMerge reader is not written by the flushers (it is fed
// at every tag): its goroutine writes every batch with write.
func (r *Reader) CopyDirect(ctx context.Context, dw DirectWriter, enc Encoder, write func(bufs [][]byte) error) error {
	h := r.h
	var key uint64
	if enc != nil {
		key = enc.EncoderKey()
	}
	h.mu.Lock()
	r.dw, r.enc, r.key, r.pending = dw, enc, key, true
	direct := !r.noMerge
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		r.pending = true // no flush writes to a reader nobody serves
		h.mu.Unlock()
	}()
	var bufs [][]byte
	for {
		h.mu.Lock()
		if r.rem != nil || r.remErr != nil {
			rest, rerr, since, taken := r.rem, r.remErr, r.remSince, r.remTaken
			r.rem, r.remErr = nil, nil
			h.mu.Unlock()
			if rerr != nil {
				return rerr
			}
			h.readerWrites.Add(1)
			if err := write(rest); err != nil {
				return err
			}
			clear(rest)
			if since != 0 {
				h.cfg.WriteDelay(taken, h.mono()-since)
			}
			continue
		}
		if len(r.queue) > 0 && r.err != nil && !r.pending {
			// The hub closed with tags left for a reader in direct mode:
			// this goroutine writes them, once no flush is writing to it.
			for h.flushing {
				h.flushIdle.Wait()
			}
			r.pending, r.due = true, true
		}
		if len(r.queue) > 0 && r.due && r.pending {
			r.batch = append(r.batch[:0], r.queue...)
			bytes := r.qBytes
			clear(r.queue)
			since := r.since
			r.queue, r.qBytes, r.due, r.since = r.queue[:0], 0, false, 0
			h.mu.Unlock()
			var taken time.Duration
			if since != 0 {
				taken = h.mono() - since
			}
			h.bytesOut.Add(int64(bytes))
			h.readerWrites.Add(1)
			bufs = bufs[:0]
			for _, t := range r.batch {
				b := t.b
				if enc != nil {
					var err error
					if b, err = t.wireFor(enc, key); err != nil {
						return err
					}
				}
				if len(b) > 0 {
					bufs = append(bufs, b)
				}
			}
			clear(r.batch)
			if err := write(bufs); err != nil {
				return err
			}
			clear(bufs)
			if since != 0 {
				h.cfg.WriteDelay(taken, h.mono()-since)
			}
			continue
		}
		if err := r.err; len(r.queue) == 0 && err != nil {
			h.mu.Unlock()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		// Nothing left for this goroutine: the flushers write from here
		// on (a queue that is not due yet is theirs at the window's end).
		r.pending = !direct
		h.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.notify:
		}
	}
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
// packets and codecs the tags were made from (nothing is parsed again). The
// returned slice is reused by the next call.
func (r *Reader) NextFrames(ctx context.Context) ([]Frame, error) {
	if err := r.next(ctx); err != nil {
		return nil, err
	}
	clear(r.frames)
	r.frames = r.frames[:0]
	for _, t := range r.batch {
		r.frames = append(r.frames, Frame{Tag: t.b, Streams: t.streams, Packet: t.pkt, IsPacket: t.isPkt})
	}
	return r.frames, nil
}

// next moves the queued tags into r.batch once they are due, with the waits
// and errors of Next.
func (r *Reader) next(ctx context.Context) error {
	// The caller is back: the last batch is written (or failed).
	if r.batchSince != 0 {
		r.h.cfg.WriteDelay(r.batchTaken, r.h.mono()-r.batchSince)
		r.batchSince = 0
	}
	clear(r.batch) // do not keep the last batch's tags alive while waiting
	r.batch = r.batch[:0]
	for {
		r.h.mu.Lock()
		n := len(r.queue)
		if n > 0 && r.due {
			r.batch = append(r.batch, r.queue...)
			bytes := r.qBytes
			clear(r.queue)
			r.batchSince = r.since
			r.queue, r.qBytes, r.due, r.since = r.queue[:0], 0, false, 0
			r.h.mu.Unlock()
			if r.batchSince != 0 {
				r.batchTaken = r.h.mono() - r.batchSince
			}
			r.h.bytesOut.Add(int64(bytes))
			r.h.readerWrites.Add(1)
			return nil
		}
		err := r.err
		r.h.mu.Unlock()
		if n == 0 && err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.notify:
		}
	}
}

// Close detaches the reader.
func (r *Reader) Close() {
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	r.h.detach(r)
	r.queue, r.qBytes, r.since = nil, 0, 0
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
