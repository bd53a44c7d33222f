// Package ocm wires an OCM replica together: etcd (embedded or external),
// the store, the watch cache, placement and the gRPC server.
package ocm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/livecluster/livecluster/node/backoff"
	"github.com/livecluster/livecluster/ocm/internal/cache"
	"github.com/livecluster/livecluster/ocm/internal/etcdserver"
	"github.com/livecluster/livecluster/ocm/internal/server"
	"github.com/livecluster/livecluster/ocm/internal/store"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// Config configures a replica.
type Config struct {
	// GRPCListen is the gRPC address; default ":7000". Ignored when Listener
	// is set.
	GRPCListen string
	Listener   net.Listener
	// TLS serves gRPC over TLS (tlsfiles.Store.ServerConfig, so that
	// rotated files are used without a restart); nil: plaintext.
	TLS *tls.Config
	// Auth authenticates and authorizes calls; nil: every call is open.
	Auth *server.Auth

	// EtcdEndpoints of an external cluster; empty starts an embedded member
	// in DataDir.
	EtcdEndpoints                         []string
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
	EtcdUsername, EtcdPassword            string

	// DataDir of the embedded member; default "ocm-data".
	DataDir string
	// Embedded member URLs; defaults http://127.0.0.1:2379 and :2380.
	EmbeddedClientURL, EmbeddedPeerURL string
	// EmbeddedLogLevel of etcd's logger; default "error".
	EmbeddedLogLevel string

	// Prefix of every etcd key; default "/livecluster/".
	Prefix string
	// LeaseTTL of node sessions; default 10s.
	LeaseTTL time.Duration
	// EtcdOpTimeout bounds each etcd request of a write; default 5s. A dead
	// etcd turns into UNAVAILABLE after this long.
	EtcdOpTimeout time.Duration
	// ShutdownTimeout bounds the graceful stop of the gRPC server; default 10s.
	ShutdownTimeout time.Duration
	// WatchBuffer bounds the streams with a change waiting per WatchStreams
	// subscriber (see server.Options); default 4096.
	WatchBuffer int
	// SessionGrace is how long a node whose KeepSession stream broke has to
	// open a new one (on any replica) before this replica revokes its lease;
	// default 1.5s. It must exceed the nodes' reconnect delay.
	SessionGrace time.Duration

	Logger     *slog.Logger
	Registerer prometheus.Registerer // default: a private registry
}

// OCM is a running replica.
type OCM struct {
	cfg    Config
	log    *slog.Logger
	etcd   *etcdserver.Server // nil with an external cluster
	cli    *clientv3.Client
	store  *store.Store
	cache  *cache.Cache
	srv    *server.Server
	grpc   *grpc.Server
	health *health.Server
	lis    net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
	etcdOK atomic.Bool
	// ready is the probe's last verdict (nil: ready). /readyz and
	// grpc.health.v1 both answer from it, so they never disagree.
	ready   atomic.Pointer[error]
	errOnce sync.Once
	err     error
	done    chan struct{}
	stop    sync.Once
}

// Start starts a replica and returns once it serves gRPC; readiness (etcd
// reachable and cache synced) follows asynchronously, see Ready.
func Start(ctx context.Context, cfg Config) (o *OCM, err error) {
	if cfg.GRPCListen == "" {
		cfg.GRPCListen = ":7000"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "ocm-data"
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	o = &OCM{cfg: cfg, log: cfg.Logger, done: make(chan struct{})}
	started := o
	defer func() {
		if err != nil {
			// A failing return has already set o to nil: close what was
			// opened through started, or an embedded etcd keeps its ports
			// and data dir lock (and a nil o would panic here).
			started.closeResources()
		}
	}()

	endpoints := cfg.EtcdEndpoints
	if len(endpoints) == 0 {
		o.etcd, err = etcdserver.Start(ctx, etcdserver.Config{Dir: cfg.DataDir, ClientURL: cfg.EmbeddedClientURL,
			PeerURL: cfg.EmbeddedPeerURL, LogLevel: cfg.EmbeddedLogLevel})
		if err != nil {
			return nil, fmt.Errorf("ocm: embedded etcd: %w", err)
		}
		endpoints = o.etcd.Endpoints()
		o.log.Info("embedded etcd started", "dir", cfg.DataDir, "endpoints", endpoints)
	}
	o.cli, err = etcdserver.Dial(etcdserver.ClientConfig{Endpoints: endpoints, CAFile: cfg.EtcdCAFile,
		CertFile: cfg.EtcdCertFile, KeyFile: cfg.EtcdKeyFile, Username: cfg.EtcdUsername, Password: cfg.EtcdPassword})
	if err != nil {
		return nil, fmt.Errorf("ocm: %w", err)
	}
	m, err := server.NewMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("ocm: metrics: %w", err)
	}
	o.store = store.New(o.cli, store.Options{Prefix: cfg.Prefix, LeaseTTL: cfg.LeaseTTL, OpTimeout: cfg.EtcdOpTimeout, OnEtcdError: m.EtcdError})
	o.cache = cache.New(o.cli, o.store.Schema(), cache.Options{Logger: o.log, OnResync: m.Resync})
	if err := m.RegisterCache(o.cache); err != nil {
		return nil, fmt.Errorf("ocm: metrics: %w", err)
	}
	o.lis = cfg.Listener
	if o.lis == nil {
		o.lis, err = net.Listen("tcp", cfg.GRPCListen)
		if err != nil {
			return nil, fmt.Errorf("ocm: listen %s: %w", cfg.GRPCListen, err)
		}
	}
	host, _ := os.Hostname()
	o.srv = server.New(server.Options{Store: o.store, Cache: o.cache, Metrics: m, Logger: o.log, WatchBuffer: cfg.WatchBuffer,
		SessionGrace: cfg.SessionGrace, SessionPing: time.Duration(o.store.LeaseTTL()) * time.Second / 3,
		Replica: host + " " + o.lis.Addr().String(), Auth: cfg.Auth})
	var creds []grpc.ServerOption
	if cfg.TLS != nil {
		creds = append(creds, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	o.grpc, o.health = server.NewGRPCServer(o.srv, append(creds,
		// A fixed pool of stream workers instead of a goroutine per RPC: each
		// new goroutine grew its stack again (newstack/copystack were ~7% of
		// the CPU of a LookupStream-bound replica).
		// One worker per core was too few (most RPCs still got a fresh
		// goroutine while both were busy); idle workers cost a few KiB each.
		grpc.NumStreamWorkers(uint32(max(32, 8*runtime.GOMAXPROCS(0)))),
		// Static flow-control windows turn off gRPC's bandwidth-delay
		// estimator, which answers every burst of request data with a PING
		// (and the client's, every burst of responses): extra frames and
		// write syscalls for calls whose messages are a hundred bytes. The
		// OCM receives only small requests; 1 MiB per stream and per
		// connection is more than BDP estimation would grow to for them.
		grpc.StaticStreamWindowSize(1<<20),
		grpc.StaticConnWindowSize(1<<20),
		// Deadlines against idle and hostile clients: a connection must
		// finish its HTTP/2 preface within 10 s (a trickled preface is
		// cut), a peer that stops answering pings is dropped after 30+10 s,
		// and a client pinging more often than every 10 s (a ping flood)
		// is sent GOAWAY. Nodes send no keepalive pings of their own.
		grpc.ConnectionTimeout(10*time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))...)

	rctx, cancel := context.WithCancel(context.Background())
	o.cancel = cancel
	o.wg.Add(3)
	go func() {
		defer o.wg.Done()
		_ = o.cache.Run(rctx)
	}()
	go func() {
		defer o.wg.Done()
		o.probe(rctx)
	}()
	go func() {
		defer o.wg.Done()
		if err := o.grpc.Serve(o.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			o.fail(fmt.Errorf("ocm: grpc serve: %w", err))
		}
	}()
	if o.etcd != nil {
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			select {
			case err := <-o.etcd.Err():
				if err != nil {
					o.fail(fmt.Errorf("ocm: embedded etcd: %w", err))
				}
			case <-rctx.Done():
			}
		}()
	}
	o.log.Info("ocm serving gRPC", "addr", o.lis.Addr().String(), "tls", cfg.TLS != nil, "auth", cfg.Auth.On(), "prefix", o.store.Schema().Prefix, "lease_ttl_s", o.store.LeaseTTL(),
		"session_grace", o.srv.SessionGrace().String())
	return o, nil
}

func (o *OCM) fail(err error) {
	o.errOnce.Do(func() {
		o.err = err
		o.log.Error("ocm failed", "err", err)
		close(o.done)
	})
}

// Done is closed when the replica fails on its own (Err says why).
func (o *OCM) Done() <-chan struct{} { return o.done }

// Err is the failure that closed Done.
func (o *OCM) Err() error {
	select {
	case <-o.done:
		return o.err
	default:
		return nil
	}
}

// probe checks etcd every second (every 100 ms until first ready, so a
// start is not a second slower) and publishes one readiness verdict to both
// /readyz and grpc.health.v1: a client told "ready" by one is never told
// NOT_SERVING by the other.
func (o *OCM) probe(ctx context.Context) {
	key := o.store.Schema().Prefix + "health"
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := o.cli.Get(pctx, key, clientv3.WithCountOnly())
		cancel()
		o.etcdOK.Store(err == nil)
		verdict := o.check()
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if verdict == nil {
			st = healthpb.HealthCheckResponse_SERVING
		}
		o.health.SetServingStatus("", st)
		o.health.SetServingStatus(ocmv1.OCMService_ServiceDesc.ServiceName, st)
		o.ready.Store(&verdict)
		every := time.Second
		if verdict != nil && !o.cache.Synced() {
			every = 100 * time.Millisecond
		}
		if !backoff.Sleep(ctx, every) {
			return
		}
	}
}

// check returns nil when etcd answered the last probe and the cache is
// synced.
func (o *OCM) check() error {
	if !o.etcdOK.Load() {
		return errors.New("etcd unreachable")
	}
	if !o.cache.Synced() {
		return errors.New("cache not synced")
	}
	return nil
}

// Ready returns the last probe's verdict: nil when etcd answered and the
// cache is synced. Before the first probe it is "not probed yet".
func (o *OCM) Ready() error {
	if p := o.ready.Load(); p != nil {
		return *p
	}
	return errors.New("not probed yet")
}

// WaitReady waits until Ready or ctx ends.
func (o *OCM) WaitReady(ctx context.Context) error {
	if err := o.cache.WaitSynced(ctx); err != nil {
		return err
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for o.Ready() != nil {
		select {
		case <-ctx.Done():
			return fmt.Errorf("ocm not ready: %w (%v)", ctx.Err(), o.Ready())
		case <-t.C:
		}
	}
	return nil
}

// Addr is the gRPC listen address.
func (o *OCM) Addr() net.Addr { return o.lis.Addr() }

// HTTPHandler serves the JSON API (/api/v1/...).
func (o *OCM) HTTPHandler() http.Handler { return o.srv.HTTPHandler() }

// Server is the gRPC service implementation.
func (o *OCM) Server() *server.Server { return o.srv }

// Cache is the replica's cache.
func (o *OCM) Cache() *cache.Cache { return o.cache }

// EtcdClient is the replica's etcd client.
func (o *OCM) EtcdClient() *clientv3.Client { return o.cli }

// Stop is Shutdown bounded by Config.ShutdownTimeout.
func (o *OCM) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), o.cfg.ShutdownTimeout)
	defer cancel()
	o.Shutdown(ctx)
}

// Shutdown stops serving: health goes NOT_SERVING, watches end with
// UNAVAILABLE, the gRPC server stops gracefully until ctx ends (then
// connections are closed), and the cache, the etcd client and the embedded
// etcd are closed. Only the first call does anything.
func (o *OCM) Shutdown(ctx context.Context) {
	o.stop.Do(func() {
		o.health.Shutdown()
		o.srv.Shutdown()
		stopped := make(chan struct{})
		go func() {
			o.grpc.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
			o.log.Warn("ocm: graceful stop timed out; closing connections")
			o.grpc.Stop()
			<-stopped
		}
		o.cancel()
		o.wg.Wait()
		o.closeResources()
	})
}

func (o *OCM) closeResources() {
	if o.cli != nil {
		_ = o.cli.Close()
	}
	if o.etcd != nil {
		o.etcd.Close()
	}
}
