// Package etcdserver runs the embedded single-node etcd that the OCM uses when
// no external endpoints are configured, and dials external clusters.
package etcdserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ErrAddrInUse is wrapped by Start's error when the client or peer address
// is taken (another etcd, another local cluster); the error names which
// URL.
var ErrAddrInUse = errors.New("address already in use")

// checkFree reports a taken listen address of url u before etcd tries it,
// so the error names the URL (and which one) instead of etcd's internals.
func checkFree(which string, u *url.URL) error {
	ln, err := net.Listen("tcp", u.Host)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("etcdserver: %s URL %s: %w", which, u, ErrAddrInUse)
		}
		return fmt.Errorf("etcdserver: %s URL %s: %w", which, u, err)
	}
	return ln.Close()
}

// Config describes an embedded etcd member.
type Config struct {
	// Dir holds the member's data; it survives restarts.
	Dir string
	// Name of the member; default "ocm".
	Name string
	// ClientURL is where clients connect; default http://127.0.0.1:2379.
	ClientURL string
	// PeerURL is the (unused, single-member) peer URL; default
	// http://127.0.0.1:2380. It is recorded in the data dir, so keep it stable
	// across restarts.
	PeerURL string
	// LogLevel of etcd's own zap logger; default "error" so the OCM's logs are
	// not drowned in raft chatter.
	LogLevel string
	// StartTimeout bounds the wait for the member to become ready; default 30s.
	StartTimeout time.Duration
}

// Server is a running embedded etcd member.
type Server struct {
	e         *embed.Etcd
	clientURL string
	closing   *atomic.Bool
}

// closeFilter drops the "serving failed: use of closed network connection"
// errors etcd logs for each listener while it is being closed on purpose.
type closeFilter struct {
	zapcore.Core
	closing *atomic.Bool
}

func (f *closeFilter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if f.closing.Load() && strings.HasPrefix(e.Message, "setting up serving from embedded etcd failed") {
		return ce
	}
	if f.Enabled(e.Level) {
		return ce.AddCore(e, f)
	}
	return ce
}

func (f *closeFilter) With(fields []zapcore.Field) zapcore.Core {
	return &closeFilter{Core: f.Core.With(fields), closing: f.closing}
}

// Start starts an embedded member and waits until it serves clients.
func Start(ctx context.Context, c Config) (*Server, error) {
	if c.Dir == "" {
		return nil, errors.New("etcdserver: data dir is required")
	}
	if c.Name == "" {
		c.Name = "ocm"
	}
	if c.ClientURL == "" {
		c.ClientURL = "http://127.0.0.1:2379"
	}
	if c.PeerURL == "" {
		c.PeerURL = "http://127.0.0.1:2380"
	}
	if c.LogLevel == "" {
		c.LogLevel = "error"
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 30 * time.Second
	}
	curl, err := url.Parse(c.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("etcdserver: client url %q: %w", c.ClientURL, err)
	}
	purl, err := url.Parse(c.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("etcdserver: peer url %q: %w", c.PeerURL, err)
	}
	if err := checkFree("client", curl); err != nil {
		return nil, err
	}
	if err := checkFree("peer", purl); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdserver: data dir: %w", err)
	}
	lvl, err := zapcore.ParseLevel(c.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("etcdserver: log level %q: %w", c.LogLevel, err)
	}

	cfg := embed.NewConfig()
	cfg.Name = c.Name
	cfg.Dir = c.Dir
	cfg.ListenClientUrls = []url.URL{*curl}
	cfg.AdvertiseClientUrls = []url.URL{*curl}
	cfg.ListenPeerUrls = []url.URL{*purl}
	cfg.AdvertisePeerUrls = []url.URL{*purl}
	// embed refuses to start when the initial cluster does not name the
	// advertised peer URL.
	cfg.InitialCluster = cfg.Name + "=" + purl.String()
	// Keep history bounded for a long-running single member.
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "1h"
	zcfg := zap.NewProductionConfig()
	zcfg.Level = zap.NewAtomicLevelAt(lvl)
	zcfg.OutputPaths = []string{"stderr"}
	zcfg.ErrorOutputPaths = []string{"stderr"}
	closing := &atomic.Bool{}
	lg, err := zcfg.Build(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return &closeFilter{Core: c, closing: closing}
	}))
	if err != nil {
		return nil, fmt.Errorf("etcdserver: logger: %w", err)
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	cfg.LogLevel = c.LogLevel

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// Taken between checkFree and etcd's own listen.
			return nil, fmt.Errorf("etcdserver: start in %s: %v: %w", c.Dir, err, ErrAddrInUse)
		}
		return nil, fmt.Errorf("etcdserver: start in %s: %w", c.Dir, err)
	}
	t := time.NewTimer(c.StartTimeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcdserver: start: %w", err)
	case <-t.C:
		e.Close()
		return nil, fmt.Errorf("etcdserver: not ready after %s", c.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("etcdserver: start: %w", ctx.Err())
	}
	return &Server{e: e, clientURL: curl.String(), closing: closing}, nil
}

// Endpoints returns the client endpoints to dial.
func (s *Server) Endpoints() []string { return []string{s.clientURL} }

// Err reports a fatal error of the running member.
func (s *Server) Err() <-chan error { return s.e.Err() }

// Close stops the member; it waits for in-flight requests to finish.
func (s *Server) Close() {
	s.closing.Store(true)
	s.e.Close()
}

// ClientConfig describes how to dial an etcd cluster.
type ClientConfig struct {
	Endpoints   []string
	DialTimeout time.Duration // default 5s
	// Optional TLS: CAFile verifies the servers; CertFile and KeyFile are a
	// client certificate. TLS is on when any of them is set.
	CAFile, CertFile, KeyFile string
	Username, Password        string
}

// Dial connects to etcd. The connection is lazy: an unreachable cluster is
// reported by the first request, not here, so the OCM can start while etcd is
// still coming up.
func Dial(c ClientConfig) (*clientv3.Client, error) {
	if len(c.Endpoints) == 0 {
		return nil, errors.New("etcd dial: no endpoints")
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	cfg := clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          c.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Username:             c.Username,
		Password:             c.Password,
		Logger:               zap.NewNop(),
	}
	if c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" {
		tc, err := tlsConfig(c)
		if err != nil {
			return nil, fmt.Errorf("etcd dial: %w", err)
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd dial %v: %w", c.Endpoints, err)
	}
	return cli, nil
}

func tlsConfig(c ClientConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA %s: %w", c.CAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA %s: no certificates", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("TLS client cert and key must be given together")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client cert: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
