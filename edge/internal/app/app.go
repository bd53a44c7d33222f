// Package app wires the edge: listeners, the OCM session, the owner
// directory, the relay (players), the forwarder (publishers), the HLS proxy,
// metrics, the admin API and the drain.
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/media/httpflv"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/admin"
	"github.com/livecluster/livecluster/node/authz"
	"github.com/livecluster/livecluster/node/cli"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/connlimit"
	"github.com/livecluster/livecluster/node/listeners"
	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"

	"github.com/livecluster/livecluster/edge/internal/directory"
	"github.com/livecluster/livecluster/edge/internal/forward"
	"github.com/livecluster/livecluster/edge/internal/hlsproxy"
	"github.com/livecluster/livecluster/edge/internal/relay"
)

// Protocols of the players metric.
const (
	protoRTMP = "rtmp"
	protoFLV  = "flv"
)

type edge struct {
	rt      *cli.Runtime[Config]
	log     *slog.Logger
	relay   *relay.Manager
	fwd     *forward.Forwarder
	hls     *hlsproxy.Proxy
	dir     *directory.Directory
	authz   *authz.Manager
	players *prometheus.GaugeVec
	nPlay   atomic.Int64
	limits  *connlimit.Node
}

// Run starts the edge; it implements cli.Binary.Run.
func Run(ctx context.Context, rt *cli.Runtime[Config]) error {
	cfg := rt.Config()
	limits := connlimit.NewNode(rt.Metrics, func() config.Limits { return rt.Config().Limits })
	to := cfg.Limits.Timeouts
	rtmpSrv := &rtmp.Server{
		Logger: rt.Logger.With("component", "rtmp"),
		Config: rtmp.Config{
			HandshakeTimeout: to.RTMPHandshake.D(), ReadTimeout: to.RTMPIdle.D(), WriteTimeout: to.RTMPWrite.D(),
		},
		Rejected: limits.Metrics.Rejecter("rtmp"),
		PublishBitrate: func() (int64, time.Duration) {
			l := rt.Config().Limits
			return l.MaxPublishBitrate, l.PublishBitrateWindow.D()
		},
		// Read at each publish, so a reload applies to the next publisher;
		// 0s is off here (the Config field's 0 would mean the default).
		PublishReadWindowFunc: func() time.Duration { return rt.Config().RTMP.PublishReadWindow.D() },
	}
	lns, err := listeners.Open(listeners.Addresses{RTMP: cfg.RTMP.Listen, HTTP: cfg.HTTP.Listen, HTTPS: cfg.HTTPS},
		limits, rtmpSrv.Refuse, rt.Logger)
	if err != nil {
		return err
	}
	host := cfg.Advertise.Host
	if host == "" {
		host = cfg.NodeID
	}
	node := &ocmv1.Node{
		Id: cfg.NodeID, Role: ocmv1.NodeRole_NODE_ROLE_EDGE, Zone: cfg.Zone, Version: rt.Version,
		Addresses: &ocmv1.NodeAddresses{
			Rtmp:  net.JoinHostPort(host, port(lns.RTMP.Addr())),
			Http:  net.JoinHostPort(host, port(lns.HTTP.Addr())),
			Admin: net.JoinHostPort(host, port(rt.Admin.Addr())),
		},
	}
	e := &edge{rt: rt, log: rt.Logger, limits: limits}
	rtmpSrv.Handler = e
	rtmpSrv.Connect = e.rtmpConnect
	hist, err := ocmclient.HistoryFromEnv()
	if err != nil {
		lns.Close()
		return err
	}
	oc, err := ocmclient.New(ocmclient.Options{Address: cfg.OCM.Address, Node: node, Logger: rt.Logger, Load: e.load, Registerer: rt.Metrics, History: hist,
		Security: cfg.OCM.OCMSecurity})
	if err != nil {
		_ = hist.Close()
		lns.Close()
		return err
	}

	reg := rt.Metrics
	e.authz, err = authz.New(cfg.Auth, authz.Options{
		ServerID: cfg.NodeID, Logger: rt.Logger, Registerer: reg, Subsystem: "edge",
		Source: func() *config.Auth { return &rt.Config().Auth },
	})
	if err != nil {
		lns.Close()
		return fmt.Errorf("auth: %w", err)
	}
	pullLeg := func(key streamkey.Key) (url.Values, error) { return e.authz.LegQuery(authz.Play, key) }
	m := newMetrics(reg)
	e.players = m.players
	e.dir = directory.New(directory.Options{
		OCM: oc, Logger: rt.Logger,
		OnLookup: m.lookup, OnWatchState: m.watchState,
	})
	e.relay = relay.New(relay.Options{
		Dir: e.dir, Logger: rt.Logger, Metrics: relay.NewMetrics(reg), LegQuery: pullLeg,
		// Read at every window, so a reload applies at once.
		Hub: hub.Config{MergeWindowFunc: func() time.Duration { return rt.Config().Edge.MergeWindow.D() }},
		Settings: func() relay.Settings {
			c := rt.Config().Edge
			return relay.Settings{
				IdleTimeout: c.IdleTimeout.D(), WaitTimeout: c.WaitTimeout.D(), OwnerLossHold: c.OwnerLossHold.D(),
				Protocol: c.Upstream.Protocol, DialTimeout: c.Upstream.DialTimeout.D(),
				StallTimeout: c.Upstream.StallTimeout.D(),
			}
		},
	})
	e.fwd = forward.New(forward.Options{
		OCM: oc, Dir: e.dir, NodeID: cfg.NodeID, Zone: cfg.Zone, Logger: rt.Logger, Metrics: forward.NewMetrics(reg),
		LegQuery: func(key streamkey.Key) (url.Values, error) { return e.authz.LegQuery(authz.Publish, key) },
		// The forward buffer must absorb a move to a new origin.
		Hub: hub.Config{QueueBytes: 32 << 20, QueuePackets: 8192},
		Settings: func() forward.Settings {
			c := rt.Config().Edge
			return forward.Settings{
				WaitTimeout: c.WaitTimeout.D(), PollInterval: c.Forward.PollInterval.D(),
				RetryTimeout: c.Forward.RetryTimeout.D(), DialTimeout: c.Forward.DialTimeout.D(),
			}
		},
	})
	h := cfg.Edge.HLS
	e.hls = hlsproxy.New(hlsproxy.Options{
		Resolve: func(ctx context.Context, key streamkey.Key) (*directory.Owner, error) {
			ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			return e.dir.Lookup(ctx, key)
		},
		CacheBytes: h.CacheBytes, MaxObjectBytes: h.MaxObjectBytes, SegmentTTL: h.SegmentTTL.D(),
		MaxPlaylistTTL: h.MaxPlaylistTTL.D(), UpstreamTimeout: h.UpstreamTimeout.D(),
		Hold: h.Hold.D(), EndHold: h.EndHold.D(), Window: h.Window, MaxStreams: h.MaxStreams, NoPrefetch: !h.Prefetch,
		Logger: rt.Logger, Metrics: hlsproxy.NewMetrics(reg),
		LegQuery: pullLeg,
		Playlist: func(r *http.Request, body []byte) []byte {
			return authz.RewritePlaylist(body, authz.CarriedQuery(r.URL.Query()))
		},
		// Before the proxy fetches anything: a refused player makes no
		// upstream request. A CORS preflight carries no credential and
		// gets no media (the proxy answers it before asking).
		Authorize: func(w http.ResponseWriter, r *http.Request, key streamkey.Key) bool {
			return e.authz.AuthorizeHTTP(w, r, key, "hls")
		},
	})

	flv := &httpflv.Handler{Lookup: e.lookupFLV, Logger: rt.Logger, WriteTimeout: to.HTTPWrite.D()}
	httpSrv := limits.HTTPServer(dataHandler(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, ".flv"):
			e.serveFLV(flv, w, r)
		case hlsproxy.IsHLS(r.URL.Path):
			e.hls.ServeHTTP(w, r) // authorized by Options.Authorize
		default:
			http.NotFound(w, r)
		}
	}), admin.QuietErrorLog(rt.Logger))

	lc := rt.Lifecycle
	lc.AddListener("rtmp", lns.RTMP)
	for name, ln := range lns.HTTPListeners() {
		lc.AddListener(name, ln)
	}
	oc.Bind(lc)
	lc.OnDraining("http-keepalive", func(context.Context) error {
		// HLS players reconnect, on their next request, to another edge.
		httpSrv.SetKeepAlivesEnabled(false)
		return nil
	})
	lc.OnDrain("clients", e.waitClients)

	go e.dir.Run(ctx)
	go e.fwd.Run(ctx)
	go func() {
		if err := rtmpSrv.Serve(ctx, lns.RTMP); err != nil {
			lc.Fatal(fmt.Errorf("rtmp server: %w", err))
		}
	}()
	for name, ln := range lns.HTTPListeners() {
		// One server for both ports: the drain's keep-alive switch and
		// Close cover the HTTPS connections too.
		go func() {
			if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				lc.Fatal(fmt.Errorf("%s server: %w", name, err))
			}
		}()
	}
	context.AfterFunc(ctx, func() {
		e.relay.Close()
		_ = httpSrv.Close()
	})
	oc.Start(ctx)

	rt.Admin.Mux.HandleFunc("GET /api/v1/streams", e.apiStreams)
	rt.Logger.Info("edge listening", "rtmp", lns.RTMP.Addr().String(), "http", lns.HTTP.Addr().String(), "https", cfg.HTTPS.Listen,
		"advertise", node.Addresses.Rtmp, "ocm", cfg.OCM.Address)
	return nil
}

// dataHandler is the data port's handler: route gets every request, as it
// did as the one pattern "/" of a ServeMux. A request whose path is not
// clean (a "//", a "." or ".." segment, a trailing "/") or a CONNECT still
// goes through that mux, which redirects it to the clean path as before;
// the others, all but a few, skip the mux's path cleaning and routing,
// which were ~7% of the edge's CPU serving HLS (docs/benchmarks.md, HLS).
func dataHandler(route http.HandlerFunc) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect && cleanPath(r.URL.Path) {
			route(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// cleanPath reports whether p is a rooted path that path.Clean leaves as
// it is (which then does not allocate).
func cleanPath(p string) bool {
	return p != "" && p[0] == '/' && path.Clean(p) == p
}

func port(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return strconv.Itoa(t.Port)
	}
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

func (e *edge) load() *ocmv1.Load {
	return &ocmv1.Load{
		Streams:    uint32(e.relay.Upstreams()),
		Publishers: uint32(e.fwd.Active()),
		Players:    uint32(e.nPlay.Load()),
	}
}

// waitClients is the drain hook: players and publishers leave (or move to
// other edges) until ctx ends at shutdown.drainTimeout.
func (e *edge) waitClients(ctx context.Context) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		p, f := e.nPlay.Load(), e.fwd.Active()
		if p == 0 && f == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d players and %d publishers still connected", p, f)
		case <-t.C:
		}
	}
}

func (e *edge) waitTimeout() time.Duration { return e.rt.Config().Edge.WaitTimeout.D() }

func (e *edge) playerJoined(proto string) func() {
	e.nPlay.Add(1)
	g := e.players.WithLabelValues(proto)
	g.Inc()
	return func() {
		g.Dec()
		e.nPlay.Add(-1)
	}
}

// ServePublish implements rtmp.Handler: the RTMP ingest adapter of the
// forward. An origin's refusal reaches the publisher with the origin's
// own onStatus code and words.
func (e *edge) ServePublish(ctx context.Context, c *rtmp.Conn) error {
	key, err := c.Request().Key()
	if err != nil {
		return err
	}
	// Before the forward: a refused publisher makes no AssignOrigin call
	// and opens no leg.
	if err := e.authz.Check(ctx, e.authRequest(authz.Publish, key, c)); err != nil {
		return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: err.Error()}
	}
	defer e.authz.Notify(ctx, e.authRequest(authz.Unpublish, key, c))
	release, err := e.limits.AcquireStream("rtmp")
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Publish.Rejected", Description: err.Error()}
	}
	defer release()
	err = e.fwd.Serve(ctx, key, c.RemoteAddr().String(), c)
	var refused *forward.Refused
	if errors.As(err, &refused) {
		code := "NetStream.Publish.BadName"
		var se *rtmp.StatusError
		if errors.As(refused.Err, &se) {
			code = se.Code
		}
		return &rtmp.StatusError{Code: code, Description: refused.Msg}
	}
	return err
}

// ServePlay implements rtmp.Handler.
func (e *edge) ServePlay(ctx context.Context, c *rtmp.Conn) error {
	key, err := c.Request().Key()
	if err != nil {
		return err
	}
	// Before the relay: a refused player starts no upstream pull.
	if err := e.authz.Check(ctx, e.authRequest(authz.Play, key, c)); err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.Failed", Description: err.Error()}
	}
	defer e.authz.Notify(ctx, e.authRequest(authz.Stop, key, c))
	// Checked before any upstream is pulled for this player.
	release, err := e.limits.AcquirePlayer("rtmp", key.String())
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.Rejected", Description: err.Error()}
	}
	defer release()
	wctx, cancel := context.WithTimeout(ctx, e.waitTimeout()+time.Second)
	hb, err := e.relay.Acquire(wctx, key)
	cancel()
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound", Description: err.Error()}
	}
	rd, err := hb.NewReader()
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound", Description: "stream " + key.String() + " ended"}
	}
	defer rd.Close()
	defer e.playerJoined(protoRTMP)()
	if err := c.Accept(); err != nil {
		return err
	}
	return rd.CopyWire(ctx, c, c.WriteWire)
}

type flvJoinKey struct{}

// flvKeyKey carries where lookupFLV stores the stream key it found.
type flvKeyKey struct{}

// ownerHeaders names, on a 200 HTTP-FLV response, the origin and epoch the
// edge plays the stream from when the response starts
// (streamkey.OriginHeader, EpochHeader); later owner changes show in the
// onMetaData the edge sends after each splice.
type ownerHeaders struct {
	http.ResponseWriter
	relay *relay.Manager
	key   streamkey.Key // set by lookupFLV before the handler writes
	wrote bool
}

// PrepareHeader implements httpflv.HeaderPreparer: the HTTP-FLV handler
// writes its response on the hijacked connection, never through
// WriteHeader, and asks for the final headers first.
func (o *ownerHeaders) PrepareHeader(code int) {
	if !o.wrote {
		o.wrote = true
		if code == http.StatusOK && o.key.Name != "" {
			if node, epoch, ok := o.relay.Playing(o.key); ok {
				h := o.Header()
				h.Set(streamkey.OriginHeader, node)
				h.Set(streamkey.EpochHeader, strconv.FormatInt(epoch, 10))
				h.Set("Access-Control-Expose-Headers", streamkey.OriginHeader+", "+streamkey.EpochHeader)
			}
		}
	}
}

func (o *ownerHeaders) WriteHeader(code int) {
	o.PrepareHeader(code)
	o.ResponseWriter.WriteHeader(code)
}

func (o *ownerHeaders) Write(b []byte) (int, error) {
	if !o.wrote {
		o.WriteHeader(http.StatusOK)
	}
	return o.ResponseWriter.Write(b)
}

func (o *ownerHeaders) Unwrap() http.ResponseWriter { return o.ResponseWriter }

// serveFLV counts an HTTP-FLV player from the moment its stream is found
// until the response ends.
func (e *edge) serveFLV(h *httpflv.Handler, w http.ResponseWriter, r *http.Request) {
	if key, err := httpflv.ParsePath(r, ".flv"); err == nil && r.Method != http.MethodOptions {
		// Before the lookup: a refused player starts no upstream pull.
		ar, ok := e.authz.CheckHTTP(w, r, key, protoFLV)
		if !ok {
			return
		}
		defer func() {
			ar.Action = authz.Stop
			e.authz.Notify(r.Context(), ar)
		}()
		if r.Method == http.MethodGet {
			// Checked before any upstream is pulled for this player.
			release, err := e.limits.AcquirePlayer("http", key.String())
			if err != nil {
				w.Header().Set("Retry-After", "5")
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			defer release()
		}
	}
	var joined atomic.Bool
	ow := &ownerHeaders{ResponseWriter: w, relay: e.relay}
	h.ServeHTTP(ow, r.WithContext(context.WithValue(context.WithValue(r.Context(), flvJoinKey{}, &joined), flvKeyKey{}, &ow.key)))
	if joined.Load() {
		e.players.WithLabelValues(protoFLV).Dec()
		e.nPlay.Add(-1)
	}
}

func (e *edge) lookupFLV(ctx context.Context, key streamkey.Key) (*hub.Hub, error) {
	wctx, cancel := context.WithTimeout(ctx, e.waitTimeout()+time.Second)
	hb, err := e.relay.Acquire(wctx, key)
	cancel()
	if err != nil {
		if errors.Is(err, relay.ErrNotFound) {
			return nil, fmt.Errorf("%w: %v", httpflv.ErrNotFound, err)
		}
		return nil, err
	}
	if k, ok := ctx.Value(flvKeyKey{}).(*streamkey.Key); ok {
		*k = key
	}
	if j, ok := ctx.Value(flvJoinKey{}).(*atomic.Bool); ok && !j.Swap(true) {
		e.nPlay.Add(1)
		e.players.WithLabelValues(protoFLV).Inc()
	}
	return hb, nil
}

func (e *edge) apiStreams(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"pulls":    e.relay.Streams(),
		"forwards": e.fwd.List(),
		"hls":      e.hls.Stats(),
		"players":  e.nPlay.Load(),
	})
}

// rtmpConnect is the RTMP server's Connect: the on_connect hook.
func (e *edge) rtmpConnect(ctx context.Context, c *rtmp.Conn, info rtmp.ConnectInfo) error {
	return e.authz.Check(ctx, &authz.Request{
		Action: authz.Connect, Key: streamkey.Key{Vhost: info.Vhost, App: info.App}, Protocol: protoRTMP,
		ClientID: c.ID(), IP: authz.ClientIP(c.RemoteAddr().String()),
		Query: authz.RTMPQuery(info.Query, info.TcURL), TcURL: info.TcURL,
	})
}

// authRequest describes an RTMP publish or play to the authorizer.
func (e *edge) authRequest(a authz.Action, key streamkey.Key, c *rtmp.Conn) *authz.Request {
	req := c.Request()
	return &authz.Request{
		Action: a, Key: key, Protocol: protoRTMP, ClientID: c.ID(), IP: authz.ClientIP(c.RemoteAddr().String()),
		Query: authz.RTMPQuery(req.Query, req.TcURL), TcURL: req.TcURL,
	}
}
