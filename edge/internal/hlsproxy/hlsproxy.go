// Package hlsproxy is the edge's HLS: the owning origin's HLS, under the
// origins' own segment numbers (/{app}/{name}.m3u8 and
// /{app}/{name}-{seq}.ts), so every edge names the same bytes alike.
//
// Per stream the edge keeps a playlist of its own (live.go): its media
// sequence only grows and its segment names never change meaning across
// owner changes and republishes (origins number above their predecessors,
// media/hls StartSeq); a source change is marked with #EXT-X-DISCONTINUITY. While the stream has no owner, or the owner no
// playlist yet, the edge keeps serving the last good playlist (its segments
// were fetched when they appeared, so they stay playable after their origin
// is gone) for up to Hold, and so does a player whose refresh waits longer
// than StaleAfter on an owner that stopped answering; an origin's #EXT-X-ENDLIST is passed on once it
// has stood for EndHold without a new owner. Only a stream that has been
// gone for longer than Hold answers 404.
//
// However many players ask for an object at once, the origin sees one
// request for it: concurrent misses wait for the first one's answer
// (request coalescing). Playlists are refreshed at most every half target
// duration, so players never fall behind the live edge by more than that;
// segments, which never change, sit in an LRU cache bounded in bytes, keyed
// by origin URL and ownership epoch. Streams sit in an LRU bounded in
// count, each holding a bounded window of segments.
package hlsproxy

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/edge/internal/directory"
	"github.com/livecluster/livecluster/streamkey"
)

// Object kinds, also metric labels.
const (
	KindPlaylist = "playlist"
	KindSegment  = "segment"
)

// Metrics of the proxy.
type Metrics struct {
	Requests *prometheus.CounterVec // kind, result: hit, miss, coalesced
	Upstream *prometheus.CounterVec // kind, code
	Bytes    prometheus.Gauge
	Objects  prometheus.Gauge
	// Responses counts answers to players by kind and HTTP status.
	Responses *prometheus.CounterVec
	// Held counts playlists served from the last good one because the
	// stream had no owner or the owner no playlist.
	Held prometheus.Counter
	// Discontinuities counts source changes marked in edge playlists.
	Discontinuities prometheus.Counter
	Streams         prometheus.Gauge

	hits, all atomic.Int64
	// The counters every hit touches, resolved once: a label lookup per
	// request was a measurable share of serving a cached object.
	plHit, plCoalesced, plMiss    prometheus.Counter
	segHit, segCoalesced, segMiss prometheus.Counter
	pl200, seg200                 prometheus.Counter
}

// NewMetrics registers the proxy's metrics on reg, including the hit ratio.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livecluster_edge_hls_cache_requests_total",
			Help: "HLS requests by object kind and cache result (hit, miss, coalesced: waited for another request's fetch).",
		}, []string{"kind", "result"}),
		Upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livecluster_edge_hls_upstream_requests_total", Help: "HLS requests sent to origins, by kind and HTTP status.",
		}, []string{"kind", "code"}),
		Bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livecluster_edge_hls_cache_bytes", Help: "Bytes held by the HLS cache.",
		}),
		Objects: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livecluster_edge_hls_cache_objects", Help: "Objects held by the HLS cache.",
		}),
	}
	m.Responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livecluster_edge_hls_responses_total", Help: "HLS answers to players, by object kind and HTTP status.",
	}, []string{"kind", "code"})
	m.Held = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livecluster_edge_hls_playlist_held_total",
		Help: "Playlist requests answered with the last good playlist while the stream had no owner, the owner no playlist, or the owner did not answer within the stale wait.",
	})
	m.Discontinuities = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livecluster_edge_hls_discontinuities_total",
		Help: "Segments the edge marked with EXT-X-DISCONTINUITY (owner change, origin restart, missed segments, or the origin's own mark).",
	})
	m.Streams = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "livecluster_edge_hls_streams", Help: "Streams whose HLS playlist the edge keeps.",
	})
	ratio := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livecluster_edge_hls_cache_hit_ratio",
		Help: "Share of HLS requests answered without an own origin request (hits and coalesced) since start.",
	}, func() float64 { return m.ratio() })
	reg.MustRegister(m.Requests, m.Upstream, m.Bytes, m.Objects, m.Responses, m.Held, m.Discontinuities, m.Streams, ratio)
	m.plHit, m.plCoalesced, m.plMiss = m.Requests.WithLabelValues(KindPlaylist, "hit"),
		m.Requests.WithLabelValues(KindPlaylist, "coalesced"), m.Requests.WithLabelValues(KindPlaylist, "miss")
	m.segHit, m.segCoalesced, m.segMiss = m.Requests.WithLabelValues(KindSegment, "hit"),
		m.Requests.WithLabelValues(KindSegment, "coalesced"), m.Requests.WithLabelValues(KindSegment, "miss")
	m.pl200, m.seg200 = m.Responses.WithLabelValues(KindPlaylist, "200"), m.Responses.WithLabelValues(KindSegment, "200")
	return m
}

// request returns the request counter of kind and result.
func (m *Metrics) request(kind, result string) prometheus.Counter {
	switch {
	case kind == KindPlaylist && result == "hit":
		return m.plHit
	case kind == KindPlaylist && result == "coalesced":
		return m.plCoalesced
	case kind == KindPlaylist && result == "miss":
		return m.plMiss
	case kind == KindSegment && result == "hit":
		return m.segHit
	case kind == KindSegment && result == "coalesced":
		return m.segCoalesced
	case kind == KindSegment && result == "miss":
		return m.segMiss
	}
	return m.Requests.WithLabelValues(kind, result)
}

// response returns the response counter of kind and status.
func (m *Metrics) response(kind string, status int) prometheus.Counter {
	switch {
	case status == http.StatusOK && kind == KindPlaylist:
		return m.pl200
	case status == http.StatusOK && kind == KindSegment:
		return m.seg200
	}
	return m.Responses.WithLabelValues(kind, strconv.Itoa(status))
}

func (m *Metrics) ratio() float64 {
	all := m.all.Load()
	if all == 0 {
		return 0
	}
	return float64(m.hits.Load()) / float64(all)
}

// Options configure a Proxy.
type Options struct {
	// Resolve returns the owner of a stream (directory.Lookup).
	Resolve func(ctx context.Context, key streamkey.Key) (*directory.Owner, error)
	// CacheBytes bounds the segment cache (256 MiB); MaxObjectBytes bounds
	// one object (32 MiB): bigger ones are refused with 502.
	CacheBytes, MaxObjectBytes int64
	// SegmentTTL drops cached segments after this long (2 min): a live
	// segment is useless by then, and a republished stream reuses names.
	SegmentTTL time.Duration
	// MaxPlaylistTTL caps a playlist's cache time (1 s). It is half the
	// target duration when that is shorter.
	MaxPlaylistTTL time.Duration
	// UpstreamTimeout bounds one origin request (10 s).
	UpstreamTimeout time.Duration
	// StaleAfter is how long a player waits for a playlist refresh before
	// it gets the last good playlist instead (1 s), within Hold.
	StaleAfter time.Duration
	// Hold is how long the last good playlist of a stream is served while
	// it has no owner or the owner no playlist (20 s: longer than an
	// ownership lease, so a crashed owner can be replaced); after that the
	// stream is gone and answers 404.
	Hold time.Duration
	// EndHold is how long an origin's #EXT-X-ENDLIST is held back waiting
	// for another owner (10 s): an origin that loses its publisher to
	// another origin ends its playlist. Less than Hold.
	EndHold time.Duration
	// Window is the least number of segments in an edge playlist (6); it
	// is the origin's window when that is larger. Keep more segments stay
	// fetchable after leaving it (2).
	Window, Keep int
	// MaxStreams bounds the streams whose playlists the edge keeps (10000);
	// the least recently played is forgotten first.
	MaxStreams int
	// NoPrefetch: fetch segments only when a player asks. By default each
	// new segment is fetched when it appears in the origin's playlist, so it
	// is still playable if its origin dies before players get to it.
	NoPrefetch bool
	// MemorySegments keeps cached segments on the heap and writes them to
	// players with write(2). By default (on Linux) each one is kept in a
	// sealed memfd and sent with sendfile(2), which spares the copy of
	// every segment into every player's socket.
	MemorySegments bool
	Client         *http.Client
	// LegQuery returns the credential query of a request to an origin for
	// key's playlist (authz.Manager.LegQuery); the origin rewrites its
	// segment URIs to carry it. nil or an empty result: none.
	LegQuery func(key streamkey.Key) (url.Values, error)
	// Playlist, when set, rewrites a playlist before it is sent to the
	// player r (the player's credential on the segment URIs). It is called
	// only for requests with a query (a credential travels in the query):
	// the others share one rendered playlist per refresh.
	Playlist func(r *http.Request, body []byte) []byte
	// Authorize, when set, is asked for every GET or HEAD of a valid HLS
	// path before anything is fetched (a refused player makes no upstream
	// request); it answers a refusal itself and returns false. It gets the
	// key the proxy parsed, so the path is parsed once per request.
	Authorize func(w http.ResponseWriter, r *http.Request, key streamkey.Key) bool
	Logger    *slog.Logger
	Metrics   *Metrics
}

// Proxy serves HLS from the owners' HLS.
type Proxy struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	cache    map[string]*list.Element // of *object
	lru      *list.List               // front: most recent
	bytes    int64
	inflight map[string]*call

	streams   map[streamkey.Key]*list.Element // of *stream
	streamLRU *list.List                      // front: most recently played
}

// stream is one stream's edge playlist.
type stream struct {
	key streamkey.Key
	// refresh serializes playlist refreshes (a one-slot semaphore, so a
	// waiting player can give up).
	refresh chan struct{}

	mu      sync.Mutex
	l       live
	body    []byte    // the rendered playlist; nil before the first good one
	obj     *object   // body as served, shared by every hit until the next render
	expires time.Time // body is refreshed after this
	good    time.Time // the last good origin playlist
	// the origin and epoch of the last good origin playlist (headers)
	srcNode  string
	srcEpoch int64
}

type object struct {
	url         string
	kind        string
	status      int
	contentType string
	body        []byte // nil for a cached segment in file (served from there)
	// file holds a cached segment's bytes (sendfile); nil: body is served.
	file    *segFile
	expires time.Time
	private bool // rewritten for one player: no shared cache may keep it
	// a playlist's source: streamkey.OriginHeader and EpochHeader
	srcNode  string
	srcEpoch int64
	// Header values built once per object (nil: built per response), so a
	// cache hit allocates no header.
	typeHdr, lenHdr, srcNodeHdr, srcEpochHdr []string
}

// prepare builds the object's header values; call before sharing it.
func (o *object) prepare() {
	if o.contentType != "" {
		o.typeHdr = []string{o.contentType}
	}
	o.lenHdr = []string{strconv.Itoa(o.size())}
}

// size is the length of the object's body.
func (o *object) size() int {
	if o.file != nil {
		return int(o.file.size)
	}
	return len(o.body)
}

// Header values shared by every response. net/http only reads them.
var (
	hdrAnyOrigin    = []string{"*"}
	hdrNoCache      = []string{"no-cache"}
	hdrMaxAge60     = []string{"max-age=60"}
	hdrTextPlain    = []string{"text/plain; charset=utf-8"}
	hdrNoSniff      = []string{"nosniff"}
	hdrSegmentType  = []string{"video/mp2t"}
	hdrPlaylistType = []string{playlistType}
	hdrExposeSource = []string{streamkey.OriginHeader + ", " + streamkey.EpochHeader}
	keyOrigin       = http.CanonicalHeaderKey(streamkey.OriginHeader)
	keyEpoch        = http.CanonicalHeaderKey(streamkey.EpochHeader)
)

type call struct {
	done chan struct{}
	obj  *object
	err  error
}

// New returns a Proxy.
func New(opts Options) *Proxy {
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 256 << 20
	}
	if opts.MaxObjectBytes <= 0 {
		opts.MaxObjectBytes = 32 << 20
	}
	if opts.SegmentTTL <= 0 {
		opts.SegmentTTL = 2 * time.Minute
	}
	if opts.MaxPlaylistTTL <= 0 {
		opts.MaxPlaylistTTL = time.Second
	}
	if opts.UpstreamTimeout <= 0 {
		opts.UpstreamTimeout = 10 * time.Second
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = time.Second
	}
	if opts.Hold <= 0 {
		opts.Hold = 20 * time.Second
	}
	if opts.EndHold <= 0 {
		opts.EndHold = 10 * time.Second
	}
	if opts.Window <= 0 {
		opts.Window = 6
	}
	if opts.Keep < 0 {
		opts.Keep = 0
	} else if opts.Keep == 0 {
		opts.Keep = 2
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 10000
	}
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Proxy{
		opts: opts, log: opts.Logger.With("component", "hlsproxy"),
		cache: map[string]*list.Element{}, lru: list.New(), inflight: map[string]*call{},
		streams: map[streamkey.Key]*list.Element{}, streamLRU: list.New(),
	}
}

// IsHLS reports whether path names an HLS object.
func IsHLS(path string) bool {
	return strings.HasSuffix(path, ".m3u8") || strings.HasSuffix(path, ".ts")
}

// parse splits /{app}/{file} and derives the stream key: the playlist is
// {name}.m3u8, a segment {name}-{seq}.ts.
func parse(r *http.Request) (key streamkey.Key, file, kind string, err error) {
	app, file, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if !ok {
		return key, "", "", fmt.Errorf("path %q: want /app/file", r.URL.Path)
	}
	if err := streamkey.ValidatePart("file", file); err != nil {
		return key, "", "", err
	}
	var name string
	switch {
	case strings.HasSuffix(file, ".m3u8"):
		kind, name = KindPlaylist, strings.TrimSuffix(file, ".m3u8")
	case strings.HasSuffix(file, ".ts"):
		kind = KindSegment
		base := strings.TrimSuffix(file, ".ts")
		i := strings.LastIndexByte(base, '-')
		if i <= 0 {
			return key, "", "", fmt.Errorf("segment %q: want name-seq.ts", file)
		}
		if _, err := strconv.ParseUint(base[i+1:], 10, 63); err != nil {
			return key, "", "", fmt.Errorf("segment %q: want name-seq.ts", file)
		}
		name = base[:i]
	default:
		return key, "", "", fmt.Errorf("path %q is not an HLS object", r.URL.Path)
	}
	var q url.Values // nil unless there is a query: parsing it allocates
	if r.URL.RawQuery != "" {
		q = r.URL.Query()
	}
	key, err = streamkey.FromURL(app, name, q)
	return key, file, kind, err
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Access-Control-Allow-Origin"] = hdrAnyOrigin
	switch r.Method {
	case http.MethodOptions:
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodGet, http.MethodHead:
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	key, file, kind, err := parse(r)
	if err != nil {
		p.respond(w, r, "invalid", &object{status: http.StatusBadRequest, body: []byte(err.Error() + "\n")})
		return
	}
	if p.opts.Authorize != nil && !p.opts.Authorize(w, r, key) {
		return
	}
	var obj *object
	if kind == KindPlaylist {
		obj = p.playlist(r.Context(), key)
		if p.opts.Playlist != nil && obj.status == http.StatusOK && r.URL.RawQuery != "" {
			if body := p.opts.Playlist(r, obj.body); len(body) != len(obj.body) {
				// A copy: obj is shared by every player of the stream.
				o := *obj
				o.body, o.private = body, true
				// Its own Content-Length: the shared one is the
				// unrewritten body's.
				o.prepare()
				obj = &o
			}
		}
	} else {
		obj = p.segment(r.Context(), key, file)
	}
	p.respond(w, r, kind, obj)
}

// respond writes obj, counting it by kind and status.
func (p *Proxy) respond(w http.ResponseWriter, r *http.Request, kind string, obj *object) {
	// Headers are set by canonical key with shared values (no allocation
	// on a hit): the keys below are already canonical.
	h := w.Header()
	switch {
	case obj.status != http.StatusOK:
		h["Content-Type"] = hdrTextPlain
		h["X-Content-Type-Options"] = hdrNoSniff
	case obj.typeHdr != nil:
		h["Content-Type"] = obj.typeHdr
	case obj.contentType != "":
		h.Set("Content-Type", obj.contentType)
	}
	switch {
	case obj.srcNodeHdr != nil:
		// Where the newest segments of this playlist come from.
		h[keyOrigin] = obj.srcNodeHdr
		h[keyEpoch] = obj.srcEpochHdr
		h["Access-Control-Expose-Headers"] = hdrExposeSource
	case obj.srcNode != "":
		h.Set(streamkey.OriginHeader, obj.srcNode)
		h.Set(streamkey.EpochHeader, strconv.FormatInt(obj.srcEpoch, 10))
		h["Access-Control-Expose-Headers"] = hdrExposeSource
	}
	if obj.status == http.StatusOK {
		switch {
		case obj.private:
			h.Set("Cache-Control", "private, no-cache")
		case kind == KindPlaylist:
			h["Cache-Control"] = hdrNoCache
		default:
			h["Cache-Control"] = hdrMaxAge60
		}
	}
	var f *os.File
	if obj.file != nil && r.Method == http.MethodGet {
		var err error
		if f, err = obj.file.get(); err != nil && obj.body == nil {
			// Evicted between the lookup and now, and this object has no
			// copy on the heap (a cache hit): the player asks again.
			p.log.Debug("cached HLS segment gone while answering", "err", err.Error())
			obj = errObject(http.StatusServiceUnavailable, "segment left the cache, retry")
			h["Content-Type"], h["X-Content-Type-Options"] = hdrTextPlain, hdrNoSniff
			delete(h, "Cache-Control")
			h.Set("Retry-After", "0")
		}
	}
	if obj.lenHdr != nil {
		h["Content-Length"] = obj.lenHdr
	} else {
		h.Set("Content-Length", strconv.Itoa(obj.size()))
	}
	if p.opts.Metrics != nil {
		p.opts.Metrics.response(kind, obj.status).Inc()
	}
	w.WriteHeader(obj.status)
	if r.Method != http.MethodGet {
		return
	}
	if f != nil {
		// net/http's ResponseWriter.ReadFrom hands an *os.File (under a
		// LimitedReader) to the TCP connection, which sends it with
		// sendfile; elsewhere (a test recorder, TLS) it is read and copied.
		// With the headers not yet written, ReadFrom would first read 512
		// bytes of the file to write with them (to sniff a Content-Type we
		// set): flushing the headers first spares that read and copy, with
		// the same number of writes. Corking the socket (TCP_CORK, headers
		// in the body's first packet, as nginx's tcp_nopush) was measured
		// and cost more: BenchmarkLoopbackSegment in docs/benchmarks.md.
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		lr := io.LimitedReader{R: f, N: obj.file.size}
		if rf, ok := w.(io.ReaderFrom); ok {
			_, _ = rf.ReadFrom(&lr)
		} else {
			_, _ = io.Copy(w, &lr)
		}
		obj.file.put(f)
		return
	}
	_, _ = w.Write(obj.body)
}

func errObject(status int, format string, args ...any) *object {
	return &object{status: status, body: []byte(fmt.Sprintf(format, args...) + "\n")}
}

// streamFor returns key's stream state, creating it (and forgetting the
// least recently played stream beyond MaxStreams) when create is set.
func (p *Proxy) streamFor(key streamkey.Key, create bool) *stream {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := key
	if el := p.streams[k]; el != nil {
		p.streamLRU.MoveToFront(el)
		return el.Value.(*stream)
	}
	if !create {
		return nil
	}
	s := &stream{key: key, refresh: make(chan struct{}, 1)}
	p.streams[k] = p.streamLRU.PushFront(s)
	for p.streamLRU.Len() > p.opts.MaxStreams {
		old := p.streamLRU.Back()
		p.streamLRU.Remove(old)
		delete(p.streams, old.Value.(*stream).key)
	}
	p.streamGauge()
	return s
}

// forget drops s (a stream that is gone), unless it was replaced already.
func (p *Proxy) forget(s *stream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := s.key
	if el := p.streams[k]; el != nil && el.Value.(*stream) == s {
		p.streamLRU.Remove(el)
		delete(p.streams, k)
	}
	p.streamGauge()
}

func (p *Proxy) streamGauge() {
	if p.opts.Metrics != nil {
		p.opts.Metrics.Streams.Set(float64(p.streamLRU.Len()))
	}
}

// playlist answers a playlist request: the edge's playlist of key, fresh
// from the owner at most every half target duration.
func (p *Proxy) playlist(ctx context.Context, key streamkey.Key) *object {
	s := p.streamFor(key, true)
	if obj := s.fresh(); obj != nil {
		p.count(KindPlaylist, "hit")
		return obj
	}
	// An owner that stopped answering (a lost host: its sockets stay open)
	// holds a refresh up to UpstreamTimeout. Players that had a playlist
	// are not kept waiting that long: after StaleAfter they get the last
	// good one, as while the stream has no owner, and the refresh goes on.
	stale := time.NewTimer(p.opts.StaleAfter)
	defer stale.Stop()
	select {
	case s.refresh <- struct{}{}:
	case <-ctx.Done():
		return errObject(http.StatusServiceUnavailable, "playlist of %s: %v", key, ctx.Err())
	case <-stale.C:
		if obj := p.held(s); obj != nil {
			return obj
		}
		select {
		case s.refresh <- struct{}{}:
		case <-ctx.Done():
			return errObject(http.StatusServiceUnavailable, "playlist of %s: %v", key, ctx.Err())
		}
	}
	// Another player's refresh may have finished while this one waited.
	if obj := s.fresh(); obj != nil {
		<-s.refresh
		p.count(KindPlaylist, "coalesced")
		return obj
	}
	p.count(KindPlaylist, "miss")
	// The refresh is not tied to this player (others wait for it) and is
	// bounded by UpstreamTimeout; it frees the semaphore when it ends.
	done := make(chan *object, 1)
	go func() {
		defer func() { <-s.refresh }()
		done <- p.refresh(ctx, s)
	}()
	select {
	case obj := <-done:
		return obj
	case <-stale.C:
		if obj := p.held(s); obj != nil {
			return obj
		}
		return <-done
	}
}

// held returns s's last good playlist while it is less than Hold old
// (nil otherwise), counted as held.
func (p *Proxy) held(s *stream) *object {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.body == nil || s.obj == nil || time.Since(s.good) >= p.opts.Hold {
		return nil
	}
	if p.opts.Metrics != nil {
		p.opts.Metrics.Held.Inc()
	}
	return s.obj // as last served, with its source headers
}

// fresh returns s's playlist if it need not be refreshed yet.
func (s *stream) fresh() *object {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.body != nil && time.Now().Before(s.expires) {
		return s.obj
	}
	return nil
}

// setBody makes body the playlist served until expires. s.mu must be held.
func (s *stream) setBody(body []byte, expires time.Time) *object {
	s.body, s.expires = body, expires
	s.obj = &object{status: http.StatusOK, contentType: playlistType, body: body, typeHdr: hdrPlaylistType,
		srcNode: s.srcNode, srcEpoch: s.srcEpoch}
	s.obj.lenHdr = []string{strconv.Itoa(len(body))}
	if s.srcNode != "" {
		s.obj.srcNodeHdr, s.obj.srcEpochHdr = []string{s.srcNode}, []string{strconv.FormatInt(s.srcEpoch, 10)}
	}
	return s.obj
}

const playlistType = "application/vnd.apple.mpegurl"

// refresh asks the owner for its playlist and merges it into s. When the
// stream has no owner, the owner cannot be reached or has no (valid)
// playlist, a stream with a good playlist less than Hold ago is answered
// with that playlist; after Hold it is forgotten and answers 404. A stream
// that never had a good playlist answers with the failure.
func (p *Proxy) refresh(ctx context.Context, s *stream) *object {
	// Not tied to the player: the others wait for this refresh.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.UpstreamTimeout)
	defer cancel()
	key := s.key
	var fail *object
	owner, err := p.opts.Resolve(ctx, key)
	switch {
	case errors.Is(err, directory.ErrNotFound):
		fail = errObject(http.StatusNotFound, "stream %s not found", key)
	case err != nil:
		fail = errObject(http.StatusServiceUnavailable, "%v", err)
	default:
		// With the epoch: an origin that does not own the stream at exactly
		// that epoch answers 409, and the last good playlist is served.
		u := "http://" + owner.HTTP + "/" + key.App + "/" + key.Name + ".m3u8" + key.PullQuery(owner.Epoch)
		if p.opts.LegQuery != nil {
			lq, err := p.opts.LegQuery(key)
			if err != nil {
				fail = errObject(http.StatusInternalServerError, "%v", err)
				break
			}
			u = appendQuery(u, lq)
		}
		var pl *upPlaylist
		pl, fail = p.fetchPlaylist(ctx, u)
		if fail == nil {
			base, err := url.Parse(u)
			if err != nil {
				fail = errObject(http.StatusBadGateway, "origin address %q: %v", owner.HTTP, err)
				break
			}
			return p.merge(s, owner, base, pl)
		}
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.body == nil {
		// Never had a playlist: not kept, so requests for streams that do
		// not exist cannot push live streams out of the LRU.
		p.forget(s)
		return fail
	}
	if now.Sub(s.good) >= p.opts.Hold {
		s.body, s.obj = nil, nil
		p.forget(s)
		p.log.Info("HLS stream gone", "stream", key.String(), "since", s.good, "last", string(fail.body))
		return errObject(http.StatusNotFound, "stream %s not found (no playlist for %v)", key, p.opts.Hold.Round(time.Second))
	}
	if p.opts.Metrics != nil {
		p.opts.Metrics.Held.Inc()
	}
	// Re-rendered so a held-back ENDLIST appears in time; retried within
	// half a target duration like any refresh.
	body, target := s.l.render(key, p.opts.EndHold, now)
	obj := s.setBody(body, now.Add(min(p.opts.MaxPlaylistTTL, target/2)))
	p.log.Debug("serving the last good HLS playlist", "stream", key.String(), "reason", string(fail.body))
	return obj
}

// merge adds pl (from owner) to s and renders the edge playlist.
func (p *Proxy) merge(s *stream, owner *directory.Owner, base *url.URL, pl *upPlaylist) *object {
	now := time.Now()
	s.mu.Lock()
	prev := s.l.node
	added := s.l.merge(owner.NodeID, owner.Epoch, base, pl, p.opts.Window, p.opts.Keep, now)
	body, target := s.l.render(s.key, p.opts.EndHold, now)
	s.good = now
	s.srcNode, s.srcEpoch = owner.NodeID, owner.Epoch
	obj := s.setBody(body, now.Add(min(p.opts.MaxPlaylistTTL, target/2)))
	s.mu.Unlock()
	if prev != "" && prev != owner.NodeID {
		p.log.Info("HLS source changed", "stream", s.key.String(), "from", prev, "to", owner.String())
	}
	for _, sg := range added {
		if sg.disc && p.opts.Metrics != nil {
			p.opts.Metrics.Discontinuities.Inc()
		}
		if !p.opts.NoPrefetch {
			p.prefetch(sg.src)
		}
	}
	return obj
}

// fetchPlaylist fetches and parses an origin playlist; the failure is the
// answer a player would get for it.
func (p *Proxy) fetchPlaylist(ctx context.Context, u string) (*upPlaylist, *object) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, errObject(http.StatusBadGateway, "origin: %v", err)
	}
	resp, err := p.opts.Client.Do(req)
	if err != nil {
		p.upstream(KindPlaylist, "error")
		return nil, errObject(http.StatusBadGateway, "origin: %v", err)
	}
	defer resp.Body.Close()
	p.upstream(KindPlaylist, strconv.Itoa(resp.StatusCode))
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.opts.MaxObjectBytes+1))
	switch {
	case err != nil:
		return nil, errObject(http.StatusBadGateway, "origin: read %s: %v", u, err)
	case int64(len(body)) > p.opts.MaxObjectBytes:
		return nil, errObject(http.StatusBadGateway, "origin: %s is larger than %d bytes", u, p.opts.MaxObjectBytes)
	case resp.StatusCode != http.StatusOK:
		return nil, errObject(resp.StatusCode, "origin: %s: %s", u, resp.Status)
	}
	pl, err := parsePlaylist(body)
	if err != nil {
		p.log.Warn("origin sent a playlist the edge cannot use", "url", u, "err", err.Error())
		return nil, errObject(http.StatusBadGateway, "origin: %s: %v", u, err)
	}
	return pl, nil
}

// segment answers a segment request: the origin segment the edge's
// playlist has with that number, from the cache or the origin. A number
// above the playlist's refreshes it first; one the playlist does not (or no
// longer) list is 404, and so is a segment of a stream without a playlist.
func (p *Proxy) segment(ctx context.Context, key streamkey.Key, file string) *object {
	base := strings.TrimSuffix(file, ".ts")
	seq, _ := strconv.ParseInt(base[strings.LastIndexByte(base, '-')+1:], 10, 64) // checked by parse
	s := p.streamFor(key, false)
	var sg edgeSeg
	ok, ahead := false, s == nil
	if s != nil {
		s.mu.Lock()
		sg, ok = s.l.find(seq)
		ahead = !ok && seq > s.l.last
		s.mu.Unlock()
		// A playlist still fresh is as new as this edge gets it.
		ahead = ahead && s.fresh() == nil
	}
	if ahead {
		// Edges share the origins' numbers, so a player may have the
		// playlist from another edge that polled more recently (a drain, a
		// load balancer without stickiness): refresh this edge's playlist
		// (coalesced with the players' refreshes) and look again.
		p.playlist(ctx, key)
		if s = p.streamFor(key, false); s != nil {
			s.mu.Lock()
			sg, ok = s.l.find(seq)
			s.mu.Unlock()
		}
	}
	if !ok {
		return errObject(http.StatusNotFound, "segment %s of %s is not in the playlist", file, key)
	}
	obj, err := p.get(ctx, sg.src, KindSegment)
	if err != nil {
		return errObject(http.StatusBadGateway, "origin: %v", err)
	}
	if obj.status != http.StatusOK {
		return errObject(obj.status, "origin: %s: %s", sg.src, http.StatusText(obj.status))
	}
	if obj.contentType == "" {
		obj = &object{status: obj.status, contentType: "video/mp2t", body: obj.body, file: obj.file, typeHdr: hdrSegmentType, lenHdr: obj.lenHdr}
	}
	return obj
}

// prefetch starts fetching u into the cache unless it is cached or being
// fetched. The fetch is bounded by UpstreamTimeout.
func (p *Proxy) prefetch(u string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if el := p.cache[u]; el != nil && time.Now().Before(el.Value.(*object).expires) {
		return
	}
	if p.inflight[u] != nil {
		return
	}
	c := &call{done: make(chan struct{})}
	p.inflight[u] = c
	go p.fetch(u, KindSegment, c)
}

func (p *Proxy) count(kind, result string) {
	if p.opts.Metrics != nil {
		p.opts.Metrics.request(kind, result).Inc()
		p.opts.Metrics.all.Add(1)
		if result != "miss" {
			p.opts.Metrics.hits.Add(1)
		}
	}
}

// get returns the object at u from the cache, from a fetch already in
// flight, or by fetching it.
func (p *Proxy) get(ctx context.Context, u, kind string) (*object, error) {
	p.mu.Lock()
	if el := p.cache[u]; el != nil {
		obj := el.Value.(*object)
		if time.Now().Before(obj.expires) {
			p.lru.MoveToFront(el)
			p.mu.Unlock()
			p.count(kind, "hit")
			return obj, nil
		}
		p.removeLocked(el)
	}
	c := p.inflight[u]
	result := "coalesced"
	if c == nil {
		result = "miss"
		c = &call{done: make(chan struct{})}
		p.inflight[u] = c
		// Not tied to the first player's request: the others wait for it.
		go p.fetch(u, kind, c)
	}
	p.mu.Unlock()
	p.count(kind, result)
	select {
	case <-c.done:
		return c.obj, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *Proxy) fetch(u, kind string, c *call) {
	defer close(c.done)
	obj, err := p.fetchOnce(u, kind)
	store := err == nil && obj.status == http.StatusOK && int64(obj.size()) <= p.opts.CacheBytes
	if store && kind == KindSegment && !p.opts.MemorySegments {
		if f, ferr := newSegFile(obj.body); ferr != nil {
			p.log.Debug("HLS segment kept in memory", "url", u, "err", ferr.Error())
		} else {
			// The waiters of this fetch keep the heap copy (c.obj) as a
			// fallback should the segment be evicted before they answer;
			// the cache holds only the file.
			waiters := *obj
			waiters.file = f
			c.obj, c.err = &waiters, nil
			obj.file, obj.body = f, nil
		}
	}
	p.mu.Lock()
	delete(p.inflight, u)
	if store {
		p.storeLocked(obj)
	}
	p.mu.Unlock()
	if c.obj == nil {
		c.obj, c.err = obj, err
	}
}

func (p *Proxy) fetchOnce(u, kind string) (*object, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.UpstreamTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.opts.Client.Do(req)
	if err != nil {
		p.upstream(kind, "error")
		return nil, err
	}
	defer resp.Body.Close()
	p.upstream(kind, strconv.Itoa(resp.StatusCode))
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.opts.MaxObjectBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", u, err)
	}
	if int64(len(body)) > p.opts.MaxObjectBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", u, p.opts.MaxObjectBytes)
	}
	obj := &object{url: u, kind: kind, status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: body}
	obj.prepare()
	now := time.Now()
	if kind == KindPlaylist {
		obj.expires = now.Add(min(p.opts.MaxPlaylistTTL, targetDuration(body)/2))
	} else {
		obj.expires = now.Add(p.opts.SegmentTTL)
	}
	if resp.StatusCode != http.StatusOK {
		p.log.Debug("origin answered HLS request with an error", "url", u, "status", resp.StatusCode)
	}
	return obj, nil
}

func (p *Proxy) upstream(kind, code string) {
	if p.opts.Metrics != nil {
		p.opts.Metrics.Upstream.WithLabelValues(kind, code).Inc()
	}
}

// targetDuration reads #EXT-X-TARGETDURATION (seconds); 1 s when absent.
func targetDuration(playlist []byte) time.Duration {
	for line := range strings.SplitSeq(string(playlist), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "#EXT-X-TARGETDURATION:"); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 {
				return time.Duration(f * float64(time.Second))
			}
		}
	}
	return time.Second
}

func (p *Proxy) storeLocked(obj *object) {
	size := int64(obj.size())
	if size > p.opts.CacheBytes {
		return
	}
	if el := p.cache[obj.url]; el != nil {
		p.removeLocked(el)
	}
	p.cache[obj.url] = p.lru.PushFront(obj)
	p.bytes += size
	for p.bytes > p.opts.CacheBytes {
		p.removeLocked(p.lru.Back())
	}
	p.gauges()
}

func (p *Proxy) removeLocked(el *list.Element) {
	obj := el.Value.(*object)
	p.lru.Remove(el)
	delete(p.cache, obj.url)
	p.bytes -= int64(obj.size())
	if obj.file != nil {
		obj.file.close()
	}
	p.gauges()
}

func (p *Proxy) gauges() {
	if p.opts.Metrics != nil {
		p.opts.Metrics.Bytes.Set(float64(p.bytes))
		p.opts.Metrics.Objects.Set(float64(p.lru.Len()))
	}
}

// Stats is a snapshot of the cache.
type Stats struct {
	Streams  int   `json:"streams"`
	Objects  int   `json:"objects"`
	Bytes    int64 `json:"bytes"`
	Inflight int   `json:"inflight"`
}

// Stats returns a snapshot of the cache.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Streams: p.streamLRU.Len(), Objects: p.lru.Len(), Bytes: p.bytes, Inflight: len(p.inflight)}
}

// appendQuery adds q to the URL u, which may have a query already.
func appendQuery(u string, q url.Values) string {
	if len(q) == 0 {
		return u
	}
	if strings.Contains(u, "?") {
		return u + "&" + q.Encode()
	}
	return u + "?" + q.Encode()
}
