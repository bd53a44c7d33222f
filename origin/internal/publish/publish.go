// Package publish is the origin's publish session, the same for every
// ingest protocol: claim the stream at the OCM, start it on a hub, write
// HLS, pump the source until it ends (or is kicked, or the ownership is
// lost), then release. An ingest protocol is an adapter that turns its
// connection into a stream.Source and a Request, calls Serve and maps a
// refusal (*owner.Refused) to its own wire form; nothing else.
package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv"
	"github.com/nareix/joy4/format/flv/flvio"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/stream"
	"github.com/livecluster/livecluster/node/admin"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"

	"github.com/livecluster/livecluster/origin/internal/clients"
	"github.com/livecluster/livecluster/origin/internal/owner"
)

// Owner claims and releases streams (an *owner.Manager).
type Owner interface {
	// Acquire claims key; the error is an *owner.Refused. onLost is called
	// when the ownership is lost later, while the stream is published.
	Acquire(ctx context.Context, key streamkey.Key, path ocmv1.PublishPath, forwardedBy string, onLost func(error)) (*owner.Claim, error)
	// Release ends the claim of an ended publish, retrying in the
	// background until ctx ends.
	Release(ctx context.Context, c *owner.Claim)
}

// Request describes one publish, whatever its protocol.
type Request struct {
	Key streamkey.Key
	// Path and ForwardedBy say how the publish arrived (directly, or
	// forwarded by an edge).
	Path        ocmv1.PublishPath
	ForwardedBy string
	Protocol    string // "rtmp": the clients registry's protocol label
	Remote      string
	TcURL       string
	// BytesIn and BytesOut count the connection's bytes (may be nil).
	BytesIn, BytesOut func() int64
}

// Options configure Sessions.
type Options struct {
	// NodeID names this origin in the onMetaData it serves
	// (streamkey.OriginMeta, with the epoch in streamkey.EpochMeta).
	NodeID  string
	Hubs    *hub.Registry
	Owner   Owner
	Clients *clients.Registry
	// HLS writes the default vhost's streams; nil: no HLS.
	HLS *hls.Manager
	// HLSEnabled is read at every publish (hot reload); nil: enabled.
	HLSEnabled func() bool
	// HLSQueue bounds each stream's HLS writer queue in packets (512).
	HLSQueue int
	Logger   *slog.Logger
	Metrics  *Metrics // nil: not counted
}

// Metrics of the publish sessions, registered by NewMetrics.
type Metrics struct {
	// Streams is the number of streams being published.
	Streams prometheus.Gauge
	// HLSDropped counts packets the HLS writers dropped because the volume
	// was too slow (added when a writer closes).
	HLSDropped prometheus.Counter
}

// NewMetrics registers the publish sessions' metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livecluster_origin_streams", Help: "Streams published on this origin.",
		}),
		HLSDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livecluster_origin_hls_dropped_packets_total",
			Help: "Packets the HLS writer dropped because the volume was too slow (counted when its writer closes).",
		}),
	}
	reg.MustRegister(m.Streams, m.HLSDropped)
	return m
}

// Sessions runs the publish sessions of an origin.
type Sessions struct {
	opts Options
	log  *slog.Logger
	// bg bounds the work that outlives a publish: claim releases.
	bg context.Context

	// hlsClosing tracks HLS writers finishing after their publish ended
	// or their codecs changed.
	hlsClosing sync.WaitGroup
	// counters of hubs already closed
	goneSkipped, goneDropped atomic.Int64

	mu   sync.Mutex
	pubs map[string]*session
}

// New returns Sessions. bg bounds the background releases of ended
// publishes (the process's lifetime).
func New(bg context.Context, opts Options) *Sessions {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.HLSEnabled == nil {
		opts.HLSEnabled = func() bool { return true }
	}
	return &Sessions{opts: opts, log: opts.Logger, bg: bg, pubs: map[string]*session{}}
}

// session is one publish.
type session struct {
	id      string
	req     Request
	claim   *owner.Claim
	hub     *hub.Hub
	pump    *stream.Pump
	started time.Time
	frames  atomic.Int64
}

// Serve runs one publish of src until it ends. It returns:
//   - an *owner.Refused when the stream cannot be owned here (nothing was
//     read from src: the adapter refuses the publish in its protocol);
//   - nil when the publisher ended the stream or left;
//   - the cause when it was kicked (clients API) or lost the ownership;
//   - any other error that ended it.
//
// Serve closes src when ctx ends, on a kick and on a lost ownership (with
// CloseWithError when src has it, so the publisher learns why); otherwise
// the caller closes it. The claim is released in the background.
func (s *Sessions) Serve(ctx context.Context, req Request, src stream.Source) error {
	log := s.log.With("stream", req.Key.String(), "remote", req.Remote)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Stopped before returning, so a refusal can still be written.
	stop := context.AfterFunc(ctx, func() { stream.CloseWithCause(src, context.Cause(ctx)) })
	defer stop()

	cl, remove := s.opts.Clients.Add(clients.Info{
		Kind: clients.KindPublish, Protocol: req.Protocol, Publish: true, Key: req.Key,
		Remote: req.Remote, TcURL: req.TcURL,
	}, req.BytesIn, req.BytesOut, cancel)
	defer remove()

	claim, err := s.opts.Owner.Acquire(ctx, req.Key, req.Path, req.ForwardedBy, func(err error) { cancel(err) })
	if err != nil {
		log.Info("publish refused", "err", err.Error())
		return err
	}
	defer s.opts.Owner.Release(s.bg, claim)

	h, created, err := s.opts.Hubs.GetOrCreate(req.Key.String())
	if err != nil {
		return fmt.Errorf("publish %s: %w", req.Key, err)
	}
	out := &hlsOut{s: s, log: log}
	sess := &session{id: cl.ID(), req: req, claim: claim, hub: h, started: time.Now()}
	var streams []av.CodecData // the callbacks run on Run's goroutine
	pump, err := stream.Start(h, &taggedSource{Source: src, meta: s.ownerMeta(claim)}, stream.Options{
		OnCodecs: func(st []av.CodecData) {
			streams = st
			out.restart(st)
		},
		OnPacket: func(pkt av.Packet) {
			if streams[pkt.Idx].Type().IsVideo() {
				sess.frames.Add(1)
			}
			out.write(pkt)
		},
	})
	if err != nil {
		if created && !h.Publishing() {
			h.Close()
		}
		return ended(ctx, fmt.Errorf("publish %s: %w", req.Key, err))
	}
	sess.pump, streams = pump, pump.Streams()
	s.add(sess)
	defer s.remove(sess)
	out.open(req.Key, pump.Streams())
	// The last segment is written in the background: a stalled volume must
	// not hold up the release of the stream in the OCM.
	defer out.closeAsync()
	log.Info("publish started", "epoch", claim.Epoch(), "path", req.Path.String(), "forwarded_by", req.ForwardedBy,
		"client", cl.ID(), "protocol", req.Protocol)

	err = ended(ctx, pump.Run(ctx))
	log.Info("publish ended", "err", fmt.Sprint(err), "bytes_in", count(req.BytesIn))
	return err
}

func count(f func() int64) int64 {
	if f == nil {
		return 0
	}
	return f()
}

// ended turns the error that ended a session into its cause: a kick or a
// lost ownership, a normal end (nil), or the error.
func ended(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) || admin.IsBenignConnError(err) {
		return nil
	}
	return err
}

func (s *Sessions) add(p *session) {
	s.mu.Lock()
	s.pubs[p.req.Key.String()] = p
	s.mu.Unlock()
	if m := s.opts.Metrics; m != nil {
		m.Streams.Inc()
	}
}

// remove forgets a session and closes its hub: its players end and
// reconnect to wherever the stream goes.
func (s *Sessions) remove(p *session) {
	s.mu.Lock()
	delete(s.pubs, p.req.Key.String())
	st := p.hub.Stats()
	s.goneSkipped.Add(st.Skipped)
	s.goneDropped.Add(st.Dropped)
	s.mu.Unlock()
	p.hub.Close()
	if m := s.opts.Metrics; m != nil {
		m.Streams.Dec()
	}
}

// Len returns the number of streams being published.
func (s *Sessions) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pubs)
}

// SlowReaders sums the hubs' slow-reader counters, ended publishes included.
func (s *Sessions) SlowReaders() (skipped, dropped int64) {
	// Under s.mu so a hub moving from live to gone is never counted twice
	// or missed.
	s.mu.Lock()
	defer s.mu.Unlock()
	skipped, dropped = s.goneSkipped.Load(), s.goneDropped.Load()
	for _, p := range s.pubs {
		st := p.hub.Stats()
		skipped += st.Skipped
		dropped += st.Dropped
	}
	return skipped, dropped
}

// Epoch returns the ownership epoch under which key is published here, 0
// when it is not published or its ownership was lost (fenced, handed
// over): pulls naming an epoch are served only when it matches.
func (s *Sessions) Epoch(key streamkey.Key) int64 {
	s.mu.Lock()
	p := s.pubs[key.String()]
	s.mu.Unlock()
	if p == nil {
		return 0
	}
	return p.claim.Epoch()
}

// ownerMeta is what the session adds to the publisher's onMetaData: this
// origin and the claim's epoch, so that a player (through any number of
// edges) can tell which ownership the media it gets comes from.
func (s *Sessions) ownerMeta(c *owner.Claim) flvio.AMFMap {
	return flvio.AMFMap{
		streamkey.OriginMeta: s.opts.NodeID,
		streamkey.EpochMeta:  strconv.FormatInt(c.Epoch(), 10),
	}
}

// taggedSource adds fields to its source's onMetaData (the hub sends it to
// every player, again after a codec change).
type taggedSource struct {
	stream.Source
	meta flvio.AMFMap
}

func (t *taggedSource) Metadata() flvio.AMFMap {
	out := flvio.AMFMap{}
	src := t.Source.Metadata()
	if src == nil {
		// None sent: what the hub would derive from the codecs.
		if streams, err := t.Source.Streams(); err == nil {
			src, _ = flv.NewMetadataByStreams(streams)
		}
	}
	for k, v := range src {
		out[k] = v
	}
	for k, v := range t.meta {
		out[k] = v
	}
	return out
}

// CloseWithError passes the cause on to the publisher (stream.CloseWithCause).
func (t *taggedSource) CloseWithError(err error) error {
	stream.CloseWithCause(t.Source, err)
	return nil
}

// PublisherOf returns the client id of key's publisher, or "".
func (s *Sessions) PublisherOf(key streamkey.Key) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pubs[key.String()]; p != nil {
		return p.id
	}
	return ""
}

// Info describes one publish for the API.
type Info struct {
	ID      string // the publisher's client id
	Request Request
	Claim   *owner.Claim
	Started time.Time
	Streams []av.CodecData
	Frames  int64 // video frames received
	Hub     hub.Stats
}

// List describes the publishes, ordered by key.
func (s *Sessions) List() []Info {
	s.mu.Lock()
	pubs := make([]*session, 0, len(s.pubs))
	for _, p := range s.pubs {
		pubs = append(pubs, p)
	}
	s.mu.Unlock()
	sort.Slice(pubs, func(i, j int) bool { return pubs[i].req.Key.String() < pubs[j].req.Key.String() })
	out := make([]Info, 0, len(pubs))
	for _, p := range pubs {
		out = append(out, Info{
			ID: p.id, Request: p.req, Claim: p.claim, Started: p.started, Streams: p.pump.Streams(),
			Frames: p.frames.Load(), Hub: p.hub.Stats(),
		})
	}
	return out
}

// WaitHLS waits until the HLS writers of ended publishes finished, or ctx
// ends (a hung volume must not hold the exit).
func (s *Sessions) WaitHLS(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.hlsClosing.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hls: last segments still being written: %w", ctx.Err())
	}
}
