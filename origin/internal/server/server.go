// Package server is the origin: it accepts RTMP publishes (each one owned
// at the OCM before it is accepted), fans them out from a hub to RTMP and
// HTTP-FLV players, writes HLS, serves the HTTP API, reports its load in
// heartbeats and takes part in the graceful drain.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/codec/aacparser"
	"github.com/nareix/joy4/codec/h264parser"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/httpflv"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/admin"
	"github.com/livecluster/livecluster/node/cli"
	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"

	"github.com/livecluster/livecluster/origin/internal/api"
	"github.com/livecluster/livecluster/origin/internal/clients"
	"github.com/livecluster/livecluster/origin/internal/config"
	"github.com/livecluster/livecluster/origin/internal/cpu"
	"github.com/livecluster/livecluster/origin/internal/owner"
	"github.com/livecluster/livecluster/origin/internal/web"
)

// Server is a running origin.
type Server struct {
	rt      *cli.Runtime[config.Config]
	log     *slog.Logger
	ctx     context.Context
	hubs    *hub.Registry
	hls     *hls.Manager
	clients *clients.Registry
	owner   *owner.Manager
	oc      *ocmclient.Client
	cpu     *cpu.Sampler
	start   time.Time

	hlsBytes atomic.Int64
	// counters of hubs already closed
	goneSkipped, goneDropped atomic.Int64
	// hlsDropped counts packets the HLS writer could not keep up with (a
	// slow volume); they are dropped so the publisher is never slowed.
	hlsDropped atomic.Int64
	// hlsClosing tracks HLS writers finishing after their publish ended.
	hlsClosing sync.WaitGroup

	mu   sync.Mutex
	pubs map[string]*publish

	loadMu   sync.Mutex
	lastLoad time.Time
	lastIn   int64
	lastOut  int64
	lastCPU  float64
}

// publish is one publish session.
type publish struct {
	id      string // the publisher's client id, also the stream's API id
	key     streamkey.Key
	tcURL   string
	claim   *owner.Claim
	hub     *hub.Hub
	started time.Time
	recv    func() int64
	frames  atomic.Int64

	mu      sync.Mutex
	streams []av.CodecData
}

// Run starts the origin; it is the cli.Binary's Run.
func Run(ctx context.Context, rt *cli.Runtime[config.Config]) error {
	cfg := rt.Config()
	s := &Server{
		rt: rt, log: rt.Logger, ctx: ctx, clients: clients.New(), cpu: cpu.New(),
		start: time.Now(), pubs: map[string]*publish{}, lastLoad: time.Now(),
	}
	s.hubs = hub.NewRegistry(hub.Config{
		QueuePackets: cfg.Hub.QueuePackets, QueueBytes: cfg.Hub.QueueBytes,
		GOPPackets: cfg.Hub.GOPPackets, GOPBytes: cfg.Hub.GOPBytes, MaxOverflows: cfg.Hub.MaxOverflows,
		MergeWindow: mergeWindow(cfg.Hub.MergeWindow.D()),
	})
	var err error
	s.hls, err = hls.New(hls.Config{
		Dir: cfg.HLS.Dir, Fragment: cfg.HLS.Fragment.D(), Window: cfg.HLS.Window,
		Dispose: cfg.HLS.Dispose.D(), Logger: rt.Logger,
	})
	if err != nil {
		return fmt.Errorf("hls.dir: %w", err)
	}
	if cfg.HTTP.WriteDefaults {
		written, err := web.WriteDefaults(cfg.HTTPRoot())
		if err != nil {
			// A read-only shared volume is not a reason to stop serving.
			s.log.Warn("cannot write default files into the HTTP root", "root", cfg.HTTPRoot(), "err", err.Error())
		} else if len(written) > 0 {
			s.log.Info("wrote default files into the HTTP root", "root", cfg.HTTPRoot(), "files", written)
		}
	}

	rtmpLn, err := net.Listen("tcp", cfg.RTMP.Listen)
	if err != nil {
		return fmt.Errorf("rtmp.listen: %w", err)
	}
	httpLn, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		rtmpLn.Close()
		return fmt.Errorf("http.listen: %w", err)
	}

	node := &ocmv1.Node{
		Id: cfg.NodeID, Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN, Zone: cfg.Zone, Capacity: cfg.Capacity,
		Version: rt.Version,
		Addresses: &ocmv1.NodeAddresses{
			Rtmp:  net.JoinHostPort(cfg.Advertise.Host, port(rtmpLn.Addr())),
			Http:  net.JoinHostPort(cfg.Advertise.Host, port(httpLn.Addr())),
			Admin: net.JoinHostPort(cfg.Advertise.Host, port(rt.Admin.Addr())),
		},
	}
	s.oc, err = ocmclient.New(ocmclient.Options{
		Address: cfg.OCM.Address, Node: node, Load: s.load, Logger: rt.Logger,
		OnReregistered: func(ctx context.Context, sess ocmclient.Session) { s.owner.Reclaim(ctx, sess) },
	})
	if err != nil {
		rtmpLn.Close()
		httpLn.Close()
		return fmt.Errorf("ocm.address: %w", err)
	}
	claims := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livecluster_origin_claims_total",
		Help: "Stream ownership claims at the OCM, by result.",
	}, []string{"result"})
	s.owner = owner.New(owner.Options{
		OCM: s.oc, NodeID: cfg.NodeID, Session: s.oc.Session, Draining: rt.Lifecycle.Draining,
		Timeout: func() time.Duration { return rt.Config().OCM.ClaimTimeout.D() },
		Logger:  rt.Logger, Claims: claims,
	})
	hlsRequests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livecluster_origin_hls_requests_total",
		Help: "HLS requests served (or answered 404), by kind: playlist or segment.",
	}, []string{"kind"})
	s.registerMetrics(claims, hlsRequests)

	a := &api.API{
		NodeID: cfg.NodeID, Version: rt.Version, Start: s.start, Clients: s.clients,
		Streams: s.apiStreams, Status: s.status, StreamOf: s.streamOf,
	}
	a.Register(rt.Admin.Mux)
	httpSrv := &http.Server{
		Handler: web.New(web.Options{
			HLSDir: cfg.HLS.Dir, Root: cfg.HTTPRoot(), FLV: s.flvHandler(), API: a.Handler(),
			SegmentMaxAge: max(cfg.HLS.Dispose.D(), 10*time.Second), HLSRequests: hlsRequests,
			BytesOut: func(n int64) { s.hlsBytes.Add(n) },
		}),
		ErrorLog:          admin.QuietErrorLog(rt.Logger),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	rtmpSrv := &rtmp.Server{Handler: s, Logger: rt.Logger.With("component", "rtmp")}

	// Lifecycle: readiness = serving + registered; step 1 marks DRAINING at
	// the OCM and watches for streams handed over; step 3 closes the
	// listeners and waits for clients; step 4 deregisters.
	var serving atomic.Bool
	rt.Lifecycle.AddCheck("listening", func() error {
		if !serving.Load() {
			return errors.New("not serving yet")
		}
		return nil
	})
	s.oc.Bind(rt.Lifecycle)
	rt.Lifecycle.OnDraining("watch-handovers", func(ctx context.Context) error {
		s.owner.WatchTransfers(ctx)
		return nil
	})
	rt.Lifecycle.AddListener("rtmp", rtmpLn)
	rt.Lifecycle.AddListener("http", httpLn)
	rt.Lifecycle.OnDrain("clients", func(ctx context.Context) error {
		httpSrv.SetKeepAlivesEnabled(false)
		err := s.clients.WaitEmpty(ctx)
		if err != nil {
			n := s.clients.KickAll(errors.New("origin shutting down: drain timeout"), true)
			s.log.Warn("drain timeout: closing the remaining clients", "clients", n)
			wctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			_ = s.clients.WaitEmpty(wctx)
			cancel()
		}
		_ = httpSrv.Close()
		return err
	})

	go func() {
		err := rtmpSrv.Serve(ctx, rtmpLn)
		if err != nil {
			rt.Lifecycle.Fatal(fmt.Errorf("rtmp server: %w", err))
		}
	}()
	go func() {
		err := httpSrv.Serve(httpLn)
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			rt.Lifecycle.Fatal(fmt.Errorf("http server: %w", err))
		}
	}()
	go func() {
		<-ctx.Done()
		_ = httpSrv.Close()
		s.hubs.Close()
		// Give the last segments a moment to land; a hung volume must not
		// hold the exit.
		closed := make(chan struct{})
		go func() { s.hlsClosing.Wait(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			s.log.Warn("hls: last segments still being written at exit")
		}
		s.hls.Close()
	}()
	s.oc.Start(ctx)
	serving.Store(true)
	s.log.Info("origin serving", "rtmp", rtmpLn.Addr().String(), "http", httpLn.Addr().String(),
		"ocm", cfg.OCM.Address, "advertise", node.Addresses.String(), "hls_dir", cfg.HLS.Dir)
	return nil
}

// Apply applies a reloaded configuration: every live key of the origin is
// read where it is used, so there is nothing to push.
func Apply(context.Context, *cli.Runtime[config.Config], *config.Config, *config.Config) error {
	return nil
}

// mergeWindow maps hub.mergeWindow (0 means no merging) to hub.Config's
// convention (0 means the default, negative no wait).
func mergeWindow(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func port(a net.Addr) string {
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return "0"
	}
	return p
}

// ServePublish implements rtmp.Handler: claim, then accept, then pump
// packets into the hub and the HLS segmenter until the publisher leaves,
// is kicked, or loses the ownership.
func (s *Server) ServePublish(ctx context.Context, c *rtmp.Conn) error {
	req := c.Request()
	key, err := req.Key()
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: err.Error()}
	}
	path, fwd := ocmv1.PublishPath_PUBLISH_PATH_DIRECT, ""
	// A forwarded publish (streamkey.ForwardedByParam on the URL) is
	// claimed as FORWARDED by that edge and may take the stream over from a
	// DRAINING owner (make-before-break) instead of being refused.
	if q, err := url.ParseQuery(req.Query); err == nil {
		if fwd, err = streamkey.ForwardedBy(q); err != nil {
			return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: err.Error()}
		}
		if fwd != "" {
			path = ocmv1.PublishPath_PUBLISH_PATH_FORWARDED
		}
	}
	log := s.log.With("stream", key.String(), "remote", c.RemoteAddr().String())

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A kick or a lost ownership closes the connection so blocked reads end.
	// Stopped before returning so a refusal can still be written.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	cl, remove := s.clients.Add(clients.Info{
		Kind: clients.KindPublish, Protocol: "rtmp", Publish: true, Key: key,
		Remote: c.RemoteAddr().String(), TcURL: req.TcURL,
	}, c.BytesRead, c.BytesWritten, cancel)
	defer remove()

	claim, err := s.owner.Acquire(ctx, key, path, fwd, func(err error) { cancel(err) })
	if err != nil {
		log.Info("publish refused", "err", err.Error())
		return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: err.Error()}
	}
	defer s.owner.Release(s.ctx, claim)

	streams, err := c.Streams()
	if err != nil {
		return s.ended(ctx, err)
	}
	h, _, err := s.hubs.GetOrCreate(key.String())
	if err != nil {
		return fmt.Errorf("publish %s: %w", key, err)
	}
	src, err := h.Publish(streams, c.Metadata())
	if err != nil {
		return fmt.Errorf("publish %s: %w", key, err)
	}
	p := &publish{id: cl.ID(), key: key, tcURL: req.TcURL, claim: claim, hub: h, started: time.Now(),
		recv: c.BytesRead, streams: streams}
	s.mu.Lock()
	s.pubs[key.String()] = p
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pubs, key.String())
		s.mu.Unlock()
		st := h.Stats()
		s.goneSkipped.Add(st.Skipped)
		s.goneDropped.Add(st.Dropped)
		src.Close()
		h.Close() // players end; they reconnect to wherever the stream goes
	}()
	seg := s.openHLS(key, streams, log)
	closeHLS := func() {
		if seg == nil {
			return
		}
		if err := seg.Close(); err != nil {
			log.Warn("hls close", "err", err.Error())
		}
		if n := seg.Dropped(); n > 0 {
			log.Warn("hls writer fell behind the publisher; packets dropped", "dropped", n)
			s.hlsDropped.Add(n)
		}
		seg = nil
	}
	// At the end of a publish the last segment is written in the
	// background: a stalled volume must not hold up the release of the
	// stream in the OCM (deferred earlier, so it runs after this).
	defer func() {
		s.hlsClosing.Add(1)
		go func() {
			defer s.hlsClosing.Done()
			closeHLS()
		}()
	}()
	log.Info("publish started", "epoch", claim.Epoch(), "path", path.String(), "forwarded_by", fwd, "client", cl.ID())

	for {
		pkt, err := c.ReadPacket()
		if errors.Is(err, rtmp.ErrCodecChanged) {
			if streams, err = c.Streams(); err != nil {
				return s.ended(ctx, err)
			}
			if src, err = h.Splice(streams, c.Metadata()); err != nil {
				return fmt.Errorf("publish %s: %w", key, err)
			}
			p.mu.Lock()
			p.streams = streams
			p.mu.Unlock()
			closeHLS()
			seg = s.openHLS(key, streams, log)
			continue
		}
		if err != nil {
			err = s.ended(ctx, err)
			log.Info("publish ended", "err", fmt.Sprint(err), "bytes_in", c.BytesRead())
			return err
		}
		if streams[pkt.Idx].Type().IsVideo() {
			p.frames.Add(1)
		}
		if err := src.WritePacket(pkt); err != nil {
			return fmt.Errorf("publish %s: %w", key, err)
		}
		if seg != nil && !seg.WritePacket(pkt) {
			log.Warn("hls write failed; HLS stopped for this publish")
			closeHLS()
		}
	}
}

// ended turns the read error that ended a session into its cause: a kick
// or lost ownership, a normal end (nil), or the error.
func (s *Server) ended(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if errors.Is(err, io.EOF) || admin.IsBenignConnError(err) {
		return nil
	}
	return err
}

// openHLS starts the segmenter of a publish on its own goroutine (see
// hls.Async): a stalled volume drops HLS packets, never ingest.
func (s *Server) openHLS(key streamkey.Key, streams []av.CodecData, log *slog.Logger) *hls.Async {
	if !s.rt.Config().HLS.Enabled {
		return nil
	}
	if key.Vhost != streamkey.DefaultVhost {
		// The HLS layout (<dir>/<app>/<name>) has no vhost level.
		log.Info("no HLS for a stream outside the default vhost")
		return nil
	}
	seg, err := s.hls.Open(key.App, key.Name, streams)
	if err != nil {
		log.Warn("no HLS for this publish", "err", err.Error())
		return nil
	}
	return hls.NewAsync(seg, 0)
}

// ServePlay implements rtmp.Handler: fan out from the hub.
func (s *Server) ServePlay(ctx context.Context, c *rtmp.Conn) error {
	req := c.Request()
	key, err := req.Key()
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound", Description: err.Error()}
	}
	h := s.hubs.Get(key.String())
	if h == nil || !h.Publishing() {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound",
			Description: fmt.Sprintf("stream %s is not published on origin %s", key, s.rt.Config().NodeID)}
	}
	rd, err := h.NewReader()
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound", Description: fmt.Sprintf("stream %s ended", key)}
	}
	defer rd.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_, remove := s.clients.Add(clients.Info{
		Kind: clients.KindRTMPPlay, Protocol: "rtmp", Key: key, Remote: c.RemoteAddr().String(), TcURL: req.TcURL,
	}, c.BytesRead, c.BytesWritten, cancel)
	defer remove()
	if err := c.Accept(); err != nil {
		return s.ended(ctx, err)
	}
	if err := rd.CopyTo(ctx, c.WriteTags); err != nil {
		return s.ended(ctx, err)
	}
	return nil // the stream ended
}

// flvHandler wraps httpflv with client registration (API, kick, counters).
func (s *Server) flvHandler() http.Handler {
	flv := &httpflv.Handler{
		Logger: s.log,
		Lookup: func(_ context.Context, key streamkey.Key) (*hub.Hub, error) {
			h := s.hubs.Get(key.String())
			if h == nil || !h.Publishing() {
				return nil, httpflv.ErrNotFound
			}
			return h, nil
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, err := httpflv.ParsePath(r, ".flv")
		if err != nil || r.Method != http.MethodGet {
			flv.ServeHTTP(w, r) // answers the error or the HEAD itself
			return
		}
		if h := s.hubs.Get(key.String()); h == nil || !h.Publishing() {
			http.Error(w, "stream "+key.String()+" not found", http.StatusNotFound)
			return
		}
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		cw := &countingWriter{ResponseWriter: w}
		_, remove := s.clients.Add(clients.Info{
			Kind: clients.KindFLVPlay, Protocol: "flv", Key: key, Remote: r.RemoteAddr,
			TcURL: "http://" + r.Host + "/" + key.App,
		}, nil, cw.n.Load, cancel)
		defer remove()
		flv.ServeHTTP(cw, r.WithContext(ctx))
	})
}

type countingWriter struct {
	http.ResponseWriter
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// load is the heartbeat's load report.
func (s *Server) load() *ocmv1.Load {
	pubs, players := s.clients.Counts()
	in, out := s.clients.Bytes()
	out += s.hlsBytes.Load()
	s.mu.Lock()
	streams := len(s.pubs)
	s.mu.Unlock()
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	now := time.Now()
	dt := now.Sub(s.lastLoad).Seconds()
	var inBps, outBps uint64
	if dt > 0 {
		inBps = uint64(max(0, float64(in-s.lastIn)*8/dt))
		outBps = uint64(max(0, float64(out-s.lastOut)*8/dt))
	}
	s.lastLoad, s.lastIn, s.lastOut = now, in, out
	s.lastCPU = s.cpu.Cores()
	n := 0
	for _, v := range players {
		n += v
	}
	return &ocmv1.Load{
		Streams: uint32(streams), Publishers: uint32(pubs), Players: uint32(n),
		IngressBps: inBps, EgressBps: outBps, CpuCores: s.lastCPU,
		BytesIn: uint64(in), BytesOut: uint64(out),
	}
}

func (s *Server) registerMetrics(claims, hlsRequests *prometheus.CounterVec) {
	reg := s.rt.Metrics
	gauge := func(name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	players := func(proto string) func() float64 {
		return func() float64 { _, p := s.clients.Counts(); return float64(p[proto]) }
	}
	reg.MustRegister(
		claims, hlsRequests,
		gauge("livecluster_origin_streams", "Streams published on this origin.", nil, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(len(s.pubs))
		}),
		gauge("livecluster_origin_publishers", "Connected publishers.", nil, func() float64 {
			p, _ := s.clients.Counts()
			return float64(p)
		}),
		gauge("livecluster_origin_players", "Connected players, by protocol (HLS is counted in livecluster_origin_hls_requests_total).",
			prometheus.Labels{"protocol": "rtmp"}, players("rtmp")),
		gauge("livecluster_origin_players", "Connected players, by protocol (HLS is counted in livecluster_origin_hls_requests_total).",
			prometheus.Labels{"protocol": "flv"}, players("flv")),
		counter("livecluster_origin_received_bytes_total", "Bytes received from clients (publishers).", func() float64 {
			in, _ := s.clients.Bytes()
			return float64(in)
		}),
		counter("livecluster_origin_sent_bytes_total", "Bytes sent to clients (RTMP, HTTP-FLV, HLS).", func() float64 {
			_, out := s.clients.Bytes()
			return float64(out + s.hlsBytes.Load())
		}),
		counter("livecluster_origin_slow_readers_skipped_total", "Times a slow player was moved to the next keyframe.", func() float64 {
			sk, _ := s.slowReaders()
			return float64(sk)
		}),
		counter("livecluster_origin_hls_dropped_packets_total", "Packets the HLS writer dropped because the volume was too slow (ended publishes).", func() float64 {
			return float64(s.hlsDropped.Load())
		}),
		counter("livecluster_origin_slow_readers_dropped_total", "Slow players dropped after repeated overflows.", func() float64 {
			_, dr := s.slowReaders()
			return float64(dr)
		}),
	)
}

func (s *Server) slowReaders() (skipped, dropped int64) {
	// Counted under s.mu so a hub moving from live to gone is never counted
	// twice or missed.
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

func (s *Server) status() api.Status {
	pubs, players := s.clients.Counts()
	s.mu.Lock()
	n := len(s.pubs)
	s.mu.Unlock()
	s.loadMu.Lock()
	c := s.lastCPU
	s.loadMu.Unlock()
	return api.Status{
		NodeID: s.rt.Config().NodeID, Registered: s.oc.Registered(), Draining: s.rt.Lifecycle.Draining(),
		Streams: n, Publishers: pubs, Players: players["rtmp"] + players["flv"], CPUCores: c,
	}
}

func (s *Server) streamOf(c clients.Snapshot) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pubs[c.Key.String()]; p != nil {
		return p.id
	}
	return ""
}

func (s *Server) apiStreams() []api.Stream {
	s.mu.Lock()
	pubs := make([]*publish, 0, len(s.pubs))
	for _, p := range s.pubs {
		pubs = append(pubs, p)
	}
	s.mu.Unlock()
	sort.Slice(pubs, func(i, j int) bool { return pubs[i].key.String() < pubs[j].key.String() })
	out := make([]api.Stream, 0, len(pubs))
	for _, p := range pubs {
		st := p.hub.Stats()
		live := time.Since(p.started)
		as := api.Stream{
			ID: p.id, Name: p.key.Name, Vhost: p.key.Vhost, App: p.key.App, TcURL: p.tcURL,
			URL: "/" + p.key.App + "/" + p.key.Name, LiveMs: p.started.UnixMilli(), Clients: st.Readers + 1,
			Frames: p.frames.Load(), SendBytes: st.BytesOut, RecvBytes: p.recv(),
			Skipped: st.Skipped, Dropped: st.Dropped,
			Owner: api.Owner{
				Epoch: p.claim.Epoch(), PublishPath: pathName(p.claim.Path), ForwardedBy: p.claim.ForwardedBy,
				Since: p.claim.Since().UTC().Format(time.RFC3339Nano),
			},
		}
		if sec := live.Seconds(); sec > 0 {
			as.Kbps = api.Kbps{Recv30s: int64(float64(as.RecvBytes*8) / sec / 1000), Send30s: int64(float64(as.SendBytes*8) / sec / 1000)}
		}
		as.Publish.Active, as.Publish.CID = true, p.id
		p.mu.Lock()
		streams := p.streams
		p.mu.Unlock()
		for _, c := range streams {
			switch v := c.(type) {
			case h264parser.CodecData:
				as.Video = &api.Video{Codec: "H264", Profile: avcProfile(v.RecordInfo.AVCProfileIndication),
					Level: strconv.FormatFloat(float64(v.RecordInfo.AVCLevelIndication)/10, 'f', 1, 64),
					Width: v.Width(), Height: v.Height()}
			case aacparser.CodecData:
				as.Audio = &api.Audio{Codec: "AAC", SampleRate: v.SampleRate(), Channel: v.ChannelLayout().Count(),
					Profile: aacProfile(v.Config.ObjectType)}
			}
		}
		out = append(out, as)
	}
	return out
}

func pathName(p ocmv1.PublishPath) string {
	if p == ocmv1.PublishPath_PUBLISH_PATH_FORWARDED {
		return "FORWARDED"
	}
	return "DIRECT"
}

func avcProfile(p uint8) string {
	switch p {
	case 66:
		return "Baseline"
	case 77:
		return "Main"
	case 88:
		return "Extended"
	case 100:
		return "High"
	case 110:
		return "High 10"
	case 122:
		return "High 4:2:2"
	case 244:
		return "High 4:4:4"
	}
	return strconv.Itoa(int(p))
}

func aacProfile(ot uint) string {
	switch ot {
	case 1:
		return "Main"
	case 2:
		return "LC"
	case 3:
		return "SSR"
	case 5:
		return "HE"
	case 29:
		return "HEv2"
	}
	return strconv.Itoa(int(ot))
}
