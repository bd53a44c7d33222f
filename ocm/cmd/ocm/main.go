// Command ocm is the Origin Cluster Master: node membership and stream
// ownership in etcd (embedded when no endpoints are given), served over gRPC
// (--grpc-listen, default :7000) and a read-only JSON API on the admin port.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/livecluster/livecluster/node/authn"
	"github.com/livecluster/livecluster/node/cli"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/tlsfiles"

	"github.com/livecluster/livecluster/ocm/internal/etcdserver"
	"github.com/livecluster/livecluster/ocm/internal/gctune"
	"github.com/livecluster/livecluster/ocm/internal/ocm"
	"github.com/livecluster/livecluster/ocm/internal/server"
)

var version = "dev"

// Config is the ocm configuration file.
type Config struct {
	config.Common `yaml:",inline"`
	GRPC          struct {
		Listen string `yaml:"listen"`
		// TLS serves gRPC over TLS; with clientCAFile, nodes may
		// authenticate with client certificates (mTLS). The files are
		// re-read when they change.
		TLS config.ServerTLS `yaml:"tls"`
	} `yaml:"grpc"`
	// Auth says who may call the OCM (docs/security.md).
	Auth struct {
		// Tokens are the bearer tokens accepted, each with the identity it
		// grants ("origin:*", "edge:*", "origin:<node-id>", "admin").
		// Live: a reload applies to new calls and ends the open streams
		// whose token it removed (server.Server.SetTokens).
		Tokens []TokenConfig `yaml:"tokens"`
		// OpenReads lets callers without credentials make the read calls
		// (LookupStream, AssignOrigin, WatchStreams, ListNodes,
		// ListStreams) once authentication is on (grpc.tls.clientCAFile
		// or auth.tokens).
		OpenReads bool `yaml:"openReads"`
	} `yaml:"auth"`
	Etcd struct {
		// Endpoints of an external cluster; empty runs an embedded member.
		Endpoints []string `yaml:"endpoints"`
		// Prefix of every key.
		Prefix string `yaml:"prefix"`
		// DataDir of the embedded member.
		DataDir string `yaml:"dataDir"`
		// ClientURL and PeerURL of the embedded member (loopback by default).
		ClientURL string `yaml:"clientURL"`
		PeerURL   string `yaml:"peerURL"`
		// TLS to an external cluster.
		CAFile   string `yaml:"caFile"`
		CertFile string `yaml:"certFile"`
		KeyFile  string `yaml:"keyFile"`
		// OpTimeout bounds each etcd request of a write.
		OpTimeout config.Duration `yaml:"opTimeout"`
	} `yaml:"etcd"`
	// LeaseTTL of node sessions.
	LeaseTTL config.Duration `yaml:"leaseTTL"`
	// SessionGrace is how long a node whose session stream broke (a crashed
	// process closes its socket) has to reconnect, to any replica, before
	// its lease is revoked and its streams freed. Must exceed the nodes'
	// reconnect delay (their first retry is 200ms) and stay below leaseTTL.
	SessionGrace config.Duration `yaml:"sessionGrace"`
	Watch        struct {
		// Buffer bounds the streams with a change waiting per WatchStreams
		// subscriber (one entry per stream; a later change replaces it).
		Buffer int `yaml:"buffer"`
	} `yaml:"watch"`
	// Runtime tunes the Go garbage collector. The GOGC and GOMEMLIMIT
	// environment variables, when set, take precedence over these keys.
	Runtime struct {
		// GCPercent is GOGC: how much the heap grows past the live data
		// before the next collection. 0 keeps Go's default (100). The OCM's
		// live heap is mostly the cache and etcd's index, which every cycle
		// marks again, so rarer cycles are most of what a lookup-bound
		// replica can save (see docs/benchmarks.md).
		GCPercent int `yaml:"gcPercent"`
		// MemoryLimit is GOMEMLIMIT, a soft cap on the Go runtime's memory
		// that makes collections more frequent as it is approached, so a high
		// GCPercent does not turn into a high RSS. 0 means no limit. The
		// default, 512 MiB, is sized from a measurement at 100k streams with
		// 500 watchers and 1,000 claims+releases/s (live heap ~80 MB with the
		// embedded etcd, RSS ~500 MB; 192 MiB made the GC take 14% of the CPU
		// and tripled watch p99, see docs/benchmarks.md). Raise it with the
		// stream count: the live heap is ~0.5-0.8 KB per stream.
		MemoryLimit gctune.Size `yaml:"memoryLimit"`
	} `yaml:"runtime"`
}

// TokenConfig is one accepted bearer token.
type TokenConfig struct {
	// Identity is what the token proves: "origin:*" (any origin),
	// "origin:<node-id>" (one origin), "edge:*", "edge:<node-id>", "admin".
	Identity     string `yaml:"identity"`
	config.Token `yaml:",inline"`
}

func defaults() Config {
	c := Config{Common: config.DefaultCommon()}
	c.GRPC.Listen = ":7000"
	c.Etcd.Prefix = "/livecluster/"
	c.Etcd.DataDir = "ocm-data"
	c.Etcd.ClientURL = "http://127.0.0.1:2379"
	c.Etcd.PeerURL = "http://127.0.0.1:2380"
	c.Etcd.OpTimeout = config.Duration(5 * time.Second)
	c.LeaseTTL = config.Duration(10 * time.Second)
	c.SessionGrace = config.Duration(1500 * time.Millisecond)
	c.Watch.Buffer = 4096
	c.Runtime.GCPercent = 400
	c.Runtime.MemoryLimit = 512 << 20
	return c
}

func validate(c *Config) error {
	if err := config.ValidListen(c.GRPC.Listen); err != nil {
		return fmt.Errorf("grpc.listen: %w", err)
	}
	if c.LeaseTTL.D() < 2*time.Second {
		return fmt.Errorf("leaseTTL: must be at least 2s, got %s", c.LeaseTTL)
	}
	if g := c.SessionGrace.D(); g < 500*time.Millisecond || g >= c.LeaseTTL.D() {
		return fmt.Errorf("sessionGrace: must be at least 500ms (nodes need time to reconnect) and below leaseTTL (%s), got %s", c.LeaseTTL, c.SessionGrace)
	}
	if c.Etcd.OpTimeout.D() <= 0 {
		return fmt.Errorf("etcd.opTimeout: must be > 0")
	}
	if c.Etcd.Prefix == "" || c.Etcd.Prefix[len(c.Etcd.Prefix)-1] != '/' {
		return fmt.Errorf("etcd.prefix: must end with /")
	}
	if len(c.Etcd.Endpoints) == 0 && c.Etcd.DataDir == "" {
		return fmt.Errorf("etcd.dataDir: required for the embedded etcd")
	}
	if (c.Etcd.CertFile == "") != (c.Etcd.KeyFile == "") {
		return fmt.Errorf("etcd.certFile, etcd.keyFile: give both or neither")
	}
	if err := c.GRPC.TLS.Validate("grpc.tls"); err != nil {
		return err
	}
	for i, t := range c.Auth.Tokens {
		if _, err := authn.ParseIdentity(t.Identity); err != nil {
			return fmt.Errorf("auth.tokens[%d].identity: %w", i, err)
		}
		if !t.Set() {
			return fmt.Errorf("auth.tokens[%d]: token or tokenFile is required", i)
		}
		if err := t.Token.Validate(fmt.Sprintf("auth.tokens[%d]", i)); err != nil {
			return err
		}
	}
	if c.Watch.Buffer <= 0 {
		return fmt.Errorf("watch.buffer: must be > 0")
	}
	if c.Runtime.GCPercent < 0 {
		return fmt.Errorf("runtime.gcPercent: must be >= 0 (0: Go's default), got %d", c.Runtime.GCPercent)
	}
	if c.Runtime.MemoryLimit < 0 {
		return fmt.Errorf("runtime.memoryLimit: must be >= 0 (0: no limit)")
	}
	return nil
}

// app is the running binary: what a reload applies to.
type app struct {
	mu sync.Mutex
	o  *ocm.OCM // nil until started
}

func loader() config.Loader[Config] {
	return config.Loader[Config]{Defaults: defaults, Validate: validate, Live: []string{"auth.tokens"}}
}

func (a *app) run(ctx context.Context, rt *cli.Runtime[Config]) error {
	c := rt.Config()
	gc := gctune.Apply(gctune.Settings{GCPercent: c.Runtime.GCPercent, MemoryLimit: c.Runtime.MemoryLimit}, os.Environ())
	rt.Logger.Info("go runtime", "gc_percent", gc.GCPercent, "memory_limit", gc.MemoryLimit)
	creds, auth, err := security(c, rt.Logger)
	if err != nil {
		return err
	}
	o, err := ocm.Start(ctx, ocm.Config{
		GRPCListen:        c.GRPC.Listen,
		TLS:               creds,
		Auth:              auth,
		EtcdEndpoints:     c.Etcd.Endpoints,
		EtcdCAFile:        c.Etcd.CAFile,
		EtcdCertFile:      c.Etcd.CertFile,
		EtcdKeyFile:       c.Etcd.KeyFile,
		DataDir:           c.Etcd.DataDir,
		EmbeddedClientURL: c.Etcd.ClientURL,
		EmbeddedPeerURL:   c.Etcd.PeerURL,
		Prefix:            c.Etcd.Prefix,
		LeaseTTL:          c.LeaseTTL.D(),
		SessionGrace:      c.SessionGrace.D(),
		EtcdOpTimeout:     c.Etcd.OpTimeout.D(),
		WatchBuffer:       c.Watch.Buffer,
		Logger:            rt.Logger,
		Registerer:        rt.Metrics,
	})
	if errors.Is(err, etcdserver.ErrAddrInUse) {
		return fmt.Errorf("%w; the embedded etcd listens on etcd.clientURL (%s) and etcd.peerURL (%s): "+
			"stop what holds the port, or choose free ones with --etcd-client-url/--etcd-peer-url "+
			"(LIVECLUSTER_ETCD_CLIENT_URL/LIVECLUSTER_ETCD_PEER_URL)", err, c.Etcd.ClientURL, c.Etcd.PeerURL)
	}
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.o = o
	a.mu.Unlock()
	rt.Lifecycle.AddCheck("ocm", o.Ready)
	api := o.HTTPHandler()
	for _, p := range []string{"GET /api/v1/nodes", "GET /api/v1/streams", "GET /api/v1/streams/{vhost}/{app}/{name}"} {
		rt.Admin.Mux.Handle(p, api)
	}
	// The gRPC server owns its listener, so it is stopped by the drain hook
	// rather than closed as a lifecycle listener (which gRPC would report as
	// a serve failure).
	rt.Lifecycle.OnDrain("ocm", func(ctx context.Context) error {
		o.Shutdown(ctx)
		return nil
	})
	go func() {
		select {
		case <-o.Done():
			rt.Lifecycle.Fatal(o.Err())
		case <-ctx.Done():
			o.Stop()
		}
	}()
	return nil
}

// apply applies a reload's auth.tokens (the OCM's only live key besides
// the common ones): the new list is loaded (a token file that cannot be
// read or holds a bad token refuses the reload) and replaces the running
// one; see server.Server.SetTokens for open streams and for the lists it
// refuses. Any error keeps the running list and configuration.
func (a *app) apply(_ context.Context, rt *cli.Runtime[Config], old, next *Config) error {
	if reflect.DeepEqual(old.Auth.Tokens, next.Auth.Tokens) {
		return nil
	}
	a.mu.Lock()
	o := a.o
	a.mu.Unlock()
	if o == nil {
		return errors.New("auth.tokens: the OCM is still starting; reload again once it is ready")
	}
	tokens, err := loadTokens(next, rt.Logger)
	if err != nil {
		return fmt.Errorf("auth.tokens: %w", err)
	}
	ended, err := o.Server().SetTokens(tokens)
	if err != nil {
		return fmt.Errorf("auth.tokens: %w", err)
	}
	rt.Logger.Info("ocm: accepted tokens replaced", "tokens", len(tokens), "streams_ended", ended)
	return nil
}

// loadTokens loads auth.tokens (validated): each token file is read now.
func loadTokens(c *Config, log *slog.Logger) ([]server.TokenIdentity, error) {
	var out []server.TokenIdentity
	for i, tc := range c.Auth.Tokens {
		id, _ := authn.ParseIdentity(tc.Identity) // validated
		tok, err := authn.NewToken(fmt.Sprintf("auth.tokens[%d] (%s)", i, id), tc.Token, 0, log)
		if err != nil {
			return nil, err
		}
		out = append(out, server.TokenIdentity{Identity: id, Token: tok})
	}
	return out, nil
}

// security loads the gRPC certificate and the tokens. The files are
// re-read when they change; a bad file at start is an error.
func security(c *Config, log *slog.Logger) (*tls.Config, *server.Auth, error) {
	auth := &server.Auth{OpenReads: c.Auth.OpenReads}
	var creds *tls.Config
	if t := c.GRPC.TLS; t.Enabled() {
		st, err := tlsfiles.New(tlsfiles.Options{Name: "ocm grpc", CertFile: t.CertFile, KeyFile: t.KeyFile, CAFile: t.ClientCAFile, Logger: log})
		if err != nil {
			return nil, nil, fmt.Errorf("grpc.tls: %w", err)
		}
		creds = st.ServerConfig()
		auth.MTLS = t.ClientCAFile != ""
	}
	tokens, err := loadTokens(c, log)
	if err != nil {
		return nil, nil, err
	}
	auth.Tokens = tokens
	if !auth.On() {
		log.Warn("ocm: no authentication configured (grpc.tls.clientCAFile, auth.tokens): any client that reaches the gRPC port may act for any node")
		return creds, nil, nil
	}
	return creds, auth, nil
}

func main() {
	a := &app{}
	os.Exit(cli.Main(cli.Binary[Config]{
		Name:    "ocm",
		Version: version,
		Config:  loader(),
		Apply:   a.apply,
		Flags: []cli.Flag{
			{Name: "grpc-listen", Key: "grpc.listen", Usage: "gRPC address"},
			{Name: "etcd-endpoints", Key: "etcd.endpoints", Usage: "etcd endpoints, comma-separated (empty: embedded etcd)"},
			{Name: "data-dir", Key: "etcd.dataDir", Usage: "data directory of the embedded etcd"},
			{Name: "etcd-client-url", Key: "etcd.clientURL", Usage: "client URL of the embedded etcd (default http://127.0.0.1:2379)"},
			{Name: "etcd-peer-url", Key: "etcd.peerURL", Usage: "peer URL of the embedded etcd (default http://127.0.0.1:2380)"},
			{Name: "lease-ttl", Key: "leaseTTL", Usage: "node session lease TTL, e.g. 10s"},
			{Name: "session-grace", Key: "sessionGrace", Usage: "grace before a node whose session stream broke loses its lease, e.g. 1.5s"},
		},
		Run: a.run,
	}, os.Args[1:]))
}
