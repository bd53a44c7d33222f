// Package server wires the origin: listeners, the OCM session, stream
// ownership, the publish sessions, the protocol adapters (rtmp.go: RTMP
// publish and play; flv.go: HTTP-FLV play), the HTTP API (streams.go), the
// load report (load.go), metrics (metrics.go) and the graceful drain.
// The publish pipeline itself is origin/internal/publish; this package
// only adapts protocols to it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/admin"
	"github.com/livecluster/livecluster/node/authn"
	"github.com/livecluster/livecluster/node/authz"
	"github.com/livecluster/livecluster/node/cli"
	nodeconfig "github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/connlimit"
	"github.com/livecluster/livecluster/node/listeners"
	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"

	"github.com/livecluster/livecluster/origin/internal/api"
	"github.com/livecluster/livecluster/origin/internal/clients"
	"github.com/livecluster/livecluster/origin/internal/config"
	"github.com/livecluster/livecluster/origin/internal/cpu"
	"github.com/livecluster/livecluster/origin/internal/owner"
	"github.com/livecluster/livecluster/origin/internal/publish"
	"github.com/livecluster/livecluster/origin/internal/web"
)

// Server is a running origin.
type Server struct {
	rt      *cli.Runtime[config.Config]
	log     *slog.Logger
	hubs    *hub.Registry
	hls     *hls.Manager
	clients *clients.Registry
	owner   *owner.Manager
	pubs    *publish.Sessions
	oc      *ocmclient.Client
	cpu     *cpu.Sampler
	limits  *connlimit.Node
	authz   *authz.Manager
	start   time.Time

	hlsBytes atomic.Int64 // HLS bytes served over HTTP

	loadMu   sync.Mutex
	lastLoad time.Time
	lastIn   int64
	lastOut  int64
	lastCPU  float64
}

// Run starts the origin; it is the cli.Binary's Run.
func Run(ctx context.Context, rt *cli.Runtime[config.Config]) error {
	cfg := rt.Config()
	s := &Server{
		rt: rt, log: rt.Logger, clients: clients.New(), cpu: cpu.New(),
		start: time.Now(), lastLoad: time.Now(),
	}
	s.hubs = hub.NewRegistry(hub.Config{
		QueuePackets: cfg.Hub.QueuePackets, QueueBytes: cfg.Hub.QueueBytes,
		GOPPackets: cfg.Hub.GOPPackets, GOPBytes: cfg.Hub.GOPBytes, MaxOverflows: cfg.Hub.MaxOverflows,
		// Read at every window, so a reload applies at once.
		MergeWindowFunc: func() time.Duration { return rt.Config().Hub.MergeWindow.D() },
	})
	var err error
	s.authz, err = authz.New(cfg.Auth, authz.Options{
		ServerID: cfg.NodeID, Logger: rt.Logger, Registerer: rt.Metrics, Subsystem: "origin",
		Source: func() *nodeconfig.Auth { return &rt.Config().Auth },
	})
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
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

	s.limits = connlimit.NewNode(rt.Metrics, func() nodeconfig.Limits { return rt.Config().Limits })
	to := cfg.Limits.Timeouts
	rtmpSrv := &rtmp.Server{
		Handler: s, Logger: rt.Logger.With("component", "rtmp"), Connect: s.rtmpConnect,
		Config: rtmp.Config{
			HandshakeTimeout: to.RTMPHandshake.D(), ReadTimeout: to.RTMPIdle.D(), WriteTimeout: to.RTMPWrite.D(),
		},
		Rejected: s.limits.Metrics.Rejecter("rtmp"),
		PublishBitrate: func() (int64, time.Duration) {
			l := rt.Config().Limits
			return l.MaxPublishBitrate, l.PublishBitrateWindow.D()
		},
		// Read at each publish, so a reload applies to the next publisher;
		// 0s is off here (the Config field's 0 would mean the default).
		PublishReadWindowFunc: func() time.Duration { return rt.Config().RTMP.PublishReadWindow.D() },
	}
	lns, err := listeners.Open(listeners.Addresses{RTMP: cfg.RTMP.Listen, HTTP: cfg.HTTP.Listen, HTTPS: cfg.HTTPS},
		s.limits, rtmpSrv.Refuse, rt.Logger)
	if err != nil {
		return err
	}

	node := &ocmv1.Node{
		Id: cfg.NodeID, Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN, Zone: cfg.Zone, Capacity: cfg.Capacity,
		Version: rt.Version,
		Addresses: &ocmv1.NodeAddresses{
			Rtmp:  net.JoinHostPort(cfg.Advertise.Host, port(lns.RTMP.Addr())),
			Http:  net.JoinHostPort(cfg.Advertise.Host, port(lns.HTTP.Addr())),
			Admin: net.JoinHostPort(cfg.Advertise.Host, port(rt.Admin.Addr())),
		},
	}
	hist, err := ocmclient.HistoryFromEnv()
	if err != nil {
		lns.Close()
		return err
	}
	s.oc, err = ocmclient.New(ocmclient.Options{
		Address: cfg.OCM.Address, Node: node, Load: s.load, Logger: rt.Logger, Registerer: rt.Metrics, History: hist,
		Security:       cfg.OCM.OCMSecurity,
		OnReregistered: func(ctx context.Context, sess ocmclient.Session) { s.owner.Reclaim(ctx, sess) },
	})
	if err != nil {
		_ = hist.Close()
		lns.Close()
		return fmt.Errorf("ocm.address: %w", err)
	}
	m := newMetrics(rt.Metrics)
	s.owner = owner.New(owner.Options{
		OCM: s.oc, NodeID: cfg.NodeID, Session: s.oc.Session, LeaseDeadline: s.oc.LeaseDeadline,
		Draining: rt.Lifecycle.Draining,
		Timeout:  func() time.Duration { return rt.Config().OCM.ClaimTimeout.D() },
		Logger:   rt.Logger, Claims: m.claims,
	})
	s.pubs = publish.New(ctx, publish.Options{
		NodeID: cfg.NodeID, Hubs: s.hubs, Owner: s.owner, Clients: s.clients, HLS: s.hls,
		HLSEnabled: func() bool { return rt.Config().HLS.Enabled },
		Logger:     rt.Logger, Metrics: publish.NewMetrics(rt.Metrics),
	})
	registerCollector(rt.Metrics, s)

	a := &api.API{
		NodeID: cfg.NodeID, Version: rt.Version, Start: s.start, Clients: s.clients,
		Streams: s.apiStreams, Status: s.status, StreamOf: s.streamOf,
	}
	a.Register(rt.Admin.Mux)
	httpSrv := s.limits.HTTPServer(web.New(web.Options{
		HLSDir: cfg.HLS.Dir, Root: cfg.HTTPRoot(), FLV: s.flvHandler(to.HTTPWrite.D()),
		// The kick (DELETE) needs the admin token here as on the admin port.
		API:    authn.RequireForChanges(rt.AdminToken, rt.Logger, a.Handler()),
		NodeID: cfg.NodeID, Owned: s.hlsOwned,
		SegmentMaxAge: max(cfg.HLS.Dispose.D(), 10*time.Second), HLSRequests: m.hlsRequests,
		Writing:  s.hls.Writing,
		BytesOut: func(n int64) { s.hlsBytes.Add(n) },
		Authorize: func(w http.ResponseWriter, r *http.Request, key streamkey.Key) bool {
			_, ok := s.authz.CheckHTTP(w, r, key, "hls")
			return ok
		},
		Carry:   func(r *http.Request) url.Values { return authz.CarriedQuery(r.URL.Query()) },
		Rewrite: authz.RewritePlaylist,
	}), admin.QuietErrorLog(rt.Logger))
	httpSrv.BaseContext = func(net.Listener) context.Context { return ctx }

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
	rt.Lifecycle.AddListener("rtmp", lns.RTMP)
	for name, ln := range lns.HTTPListeners() {
		rt.Lifecycle.AddListener(name, ln)
	}
	rt.Lifecycle.OnDrain("clients", func(ctx context.Context) error {
		httpSrv.SetKeepAlivesEnabled(false)
		err := s.drainClients(ctx)
		if err != nil {
			left := s.clients.List()
			n := s.clients.KickAll(errors.New("origin shutting down: drain timeout"), true)
			s.log.Warn("drain timeout: closing the remaining clients", "clients", n, "left", describeClients(left))
			wctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			_ = s.clients.WaitEmpty(wctx)
			cancel()
		}
		_ = httpSrv.Close()
		return err
	})

	go func() {
		err := rtmpSrv.Serve(ctx, lns.RTMP)
		if err != nil {
			rt.Lifecycle.Fatal(fmt.Errorf("rtmp server: %w", err))
		}
	}()
	for name, ln := range lns.HTTPListeners() {
		// One server for both ports: the drain's keep-alive switch and
		// Close cover the HTTPS connections too.
		go func() {
			err := httpSrv.Serve(ln)
			if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				rt.Lifecycle.Fatal(fmt.Errorf("%s server: %w", name, err))
			}
		}()
	}
	go func() {
		<-ctx.Done()
		_ = httpSrv.Close()
		s.hubs.Close()
		// Give the last segments a moment to land; a hung volume must not
		// hold the exit.
		wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.pubs.WaitHLS(wctx); err != nil {
			s.log.Warn("hls: last segments still being written at exit", "err", err.Error())
		}
		cancel()
		s.hls.Close()
	}()
	s.oc.Start(ctx)
	// Fencing: every claim is let go once the lease may be gone (the local
	// lease deadline passed, or the OCM lost the session); ends with ctx.
	go s.owner.Fence(ctx)
	serving.Store(true)
	s.log.Info("origin serving", "rtmp", lns.RTMP.Addr().String(), "http", lns.HTTP.Addr().String(), "https", cfg.HTTPS.Listen,
		"ocm", cfg.OCM.Address, "advertise", node.Addresses.String(), "hls_dir", cfg.HLS.Dir)
	return nil
}

// Apply applies a reloaded configuration: every live key of the origin is
// read where it is used, so there is nothing to push.
func Apply(context.Context, *cli.Runtime[config.Config], *config.Config, *config.Config) error {
	return nil
}

func port(a net.Addr) string {
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return "0"
	}
	return p
}

// describeClients names clients for a log line: kind, stream and remote
// address of each (the drain says which ones held it).
func describeClients(cs []clients.Snapshot) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Kind+" "+c.Key.String()+" from "+c.Remote)
	}
	return out
}
