// Package hlsproxy is the edge's HLS: a caching reverse proxy of the owning
// origin's playlists (/{app}/{name}.m3u8) and segments (/{app}/{file}.ts).
//
// However many players ask for an object at once, the origin sees one
// request for it: concurrent misses wait for the first one's answer
// (request coalescing). Playlists are cached for at most half the
// playlist's target duration, so players never fall behind the live edge by
// more than that; segments, which never change, sit in an LRU cache bounded
// in bytes. Objects are cached per origin address, so an owner change never
// mixes two origins' sequence numbers.
package hlsproxy

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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

	hits, all atomic.Int64
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
	ratio := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livecluster_edge_hls_cache_hit_ratio",
		Help: "Share of HLS requests answered without an own origin request (hits and coalesced) since start.",
	}, func() float64 { return m.ratio() })
	reg.MustRegister(m.Requests, m.Upstream, m.Bytes, m.Objects, ratio)
	return m
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
	Client          *http.Client
	Logger          *slog.Logger
	Metrics         *Metrics
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
}

type object struct {
	url         string
	kind        string
	status      int
	contentType string
	body        []byte
	expires     time.Time
}

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
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Proxy{
		opts: opts, log: opts.Logger.With("component", "hlsproxy"),
		cache: map[string]*list.Element{}, lru: list.New(), inflight: map[string]*call{},
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
	key, err = streamkey.FromURL(app, name, r.URL.Query())
	return key, file, kind, err
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
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
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	owner, err := p.opts.Resolve(r.Context(), key)
	switch {
	case errors.Is(err, directory.ErrNotFound):
		http.Error(w, "stream "+key.String()+" not found", http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	u := "http://" + owner.HTTP + "/" + key.App + "/" + file
	u += key.Query()
	// The ownership epoch goes into the cache key (as a URL fragment, which
	// is never sent): an origin restarts segment numbers after a stream's
	// files are disposed, so name-0.ts of a later publish is another object.
	u += "#" + strconv.FormatInt(owner.Epoch, 10)
	obj, err := p.get(r.Context(), u, kind)
	if err != nil {
		http.Error(w, "origin: "+err.Error(), http.StatusBadGateway)
		return
	}
	if obj.contentType != "" {
		h.Set("Content-Type", obj.contentType)
	}
	if obj.status == http.StatusOK {
		if kind == KindPlaylist {
			h.Set("Cache-Control", "no-cache")
		} else {
			h.Set("Cache-Control", "max-age=60")
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(obj.body)))
	w.WriteHeader(obj.status)
	if r.Method == http.MethodGet {
		_, _ = w.Write(obj.body)
	}
}

func (p *Proxy) count(kind, result string) {
	if p.opts.Metrics != nil {
		p.opts.Metrics.Requests.WithLabelValues(kind, result).Inc()
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
	p.mu.Lock()
	delete(p.inflight, u)
	if err == nil && obj.status == http.StatusOK {
		p.storeLocked(obj)
	}
	p.mu.Unlock()
	c.obj, c.err = obj, err
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
	size := int64(len(obj.body))
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
	p.bytes -= int64(len(obj.body))
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
	Objects  int   `json:"objects"`
	Bytes    int64 `json:"bytes"`
	Inflight int   `json:"inflight"`
}

// Stats returns a snapshot of the cache.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Objects: p.lru.Len(), Bytes: p.bytes, Inflight: len(p.inflight)}
}
