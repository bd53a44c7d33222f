// Package cli is the shared main of the livecluster binaries: subcommands,
// flags, configuration, logging, metrics, the admin server, hot reload and
// the graceful drain. A binary describes itself in a Binary and calls Main.
//
// Subcommands:
//
//	serve        run the node (the default when no subcommand is given)
//	healthcheck  GET the local /readyz; exit 0 on 200 (Docker HEALTHCHECK
//	             in images without a shell). With --grpc ADDR it asks
//	             grpc.health.v1 Check on ADDR instead (exit 0 on SERVING;
//	             --grpc-tls over TLS, the certificate not verified);
//	             with --url URL it GETs URL (exit 0 when the status is
//	             --expect-status, default 200): remote checks for a
//	             `helm test` pod that has only our images
//	drain        POST the local /api/v1/drain, then wait until the process
//	             has exited (a Kubernetes preStop hook)
//	version      print the binary's name and version
//	token        mint a signed URL token with auth.token.keys (binaries
//	             that set Binary.Auth: origin, edge; docs/security.md)
//
// Common flags: --config FILE (or LIVECLUSTER_CONFIG), --node-id,
// --admin-listen, --log-level; a binary adds its own with Binary.Flags.
// healthcheck and drain accept --config and --admin-listen to find the
// admin port, and --timeout.
//
// Exit codes: 0 after a graceful drain; 128+signal when quitting at once
// (SIGINT 130, SIGQUIT 131, SIGTERM 143; see package lifecycle); 1 when the
// node failed (Run error, Lifecycle.Fatal, admin port busy); 2 for a bad
// command line or configuration.
//
// Example, a complete main:
//
//	type Config struct {
//		config.Common `yaml:",inline"`
//		GRPC struct {
//			Listen string `yaml:"listen"`
//		} `yaml:"grpc"`
//	}
//
//	var version = "dev"
//
//	func main() {
//		os.Exit(cli.Main(cli.Binary[Config]{
//			Name:    "ocm",
//			Version: version,
//			Config: config.Loader[Config]{
//				Defaults: func() Config {
//					c := Config{Common: config.DefaultCommon()}
//					c.GRPC.Listen = ":7000"
//					return c
//				},
//				Validate: func(c *Config) error {
//					if err := config.ValidListen(c.GRPC.Listen); err != nil {
//						return fmt.Errorf("grpc.listen: %w", err)
//					}
//					return nil
//				},
//			},
//			Flags: []cli.Flag{{Name: "grpc-listen", Key: "grpc.listen", Usage: "gRPC address"}},
//			Run: func(ctx context.Context, rt *cli.Runtime[Config]) error {
//				ln, err := net.Listen("tcp", rt.Config().GRPC.Listen)
//				if err != nil {
//					return fmt.Errorf("grpc listen: %w", err)
//				}
//				srv := grpc.NewServer()
//				go func() {
//					if err := srv.Serve(ln); err != nil {
//						rt.Lifecycle.Fatal(err)
//					}
//				}()
//				rt.Lifecycle.OnDrain("grpc", func(ctx context.Context) error {
//					stopped := make(chan struct{})
//					go func() { srv.GracefulStop(); close(stopped) }()
//					select {
//					case <-stopped:
//					case <-ctx.Done():
//						srv.Stop()
//					}
//					return nil
//				})
//				rt.Admin.Mux.HandleFunc("GET /api/v1/nodes", listNodes)
//				return nil
//			},
//		}, os.Args[1:]))
//	}
package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/livecluster/livecluster/node/admin"
	"github.com/livecluster/livecluster/node/authn"
	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/lifecycle"
	"github.com/livecluster/livecluster/node/logging"
	"github.com/livecluster/livecluster/node/reload"
	"github.com/livecluster/livecluster/node/tlsfiles"
)

// Exit codes of Main besides the lifecycle's.
const (
	ExitUsage = 2
)

// Flag maps a command-line flag to a config key path; a flag overrides the
// file and the environment only when it is set.
type Flag struct {
	Name  string // "grpc-listen"
	Key   string // "grpc.listen"
	Usage string
}

// CommonFlags are the flags every binary has (besides --config).
var CommonFlags = []Flag{
	{Name: "node-id", Key: "nodeId", Usage: "node id (default: the host name)"},
	{Name: "admin-listen", Key: "adminListen", Usage: "admin HTTP address: /healthz, /readyz, /metrics, JSON API"},
	{Name: "log-level", Key: "log.level", Usage: "debug, info, warn or error"},
}

// Binary describes one binary.
type Binary[T any] struct {
	Name    string
	Version string
	// Config holds the defaults, the validation and the live keys.
	Config config.Loader[T]
	// Flags are the binary's own flags.
	Flags []Flag
	// Run starts the binary's servers and returns; it must not block. Work
	// that outlives it runs on goroutines bound to ctx (which ends when the
	// process exits) and registers with rt.Lifecycle (listeners, drain
	// hooks, readiness checks). Readiness passes only after Run returned
	// nil; an error exits with code 1.
	Run func(ctx context.Context, rt *Runtime[T]) error
	// Apply applies a reloaded configuration's live keys (optional). next
	// is the running configuration with the live keys of the new file
	// merged in; restart-only keys were already dropped with a warning.
	// Common keys (log.level, shutdown.*) are applied by the runtime. An
	// error refuses the reload and keeps old.
	Apply func(ctx context.Context, rt *Runtime[T], old, next *T) error

	// Auth returns the configuration's auth section (node/authz); when
	// set, the binary has the `token` subcommand that mints signed URL
	// tokens with auth.token.keys.
	Auth func(*T) *config.Auth

	// Stdout and Stderr default to os.Stdout and os.Stderr.
	Stdout, Stderr io.Writer
}

// Runtime is what a binary's Run gets.
type Runtime[T any] struct {
	Name, Version string
	Logger        *slog.Logger
	// Metrics is the node's registry, served on /metrics.
	Metrics *prometheus.Registry
	// Lifecycle takes listeners, drain hooks and readiness checks.
	Lifecycle *lifecycle.Lifecycle
	// Admin is the admin server; add API routes to Admin.Mux.
	Admin *admin.Server
	// AdminToken is admin.token (re-read as its file changes); nil when
	// not set. Other listeners serving mutating routes guard them with it
	// (authn.RequireForChanges).
	AdminToken *authn.Token

	current atomic.Pointer[T]
}

// Config returns the running configuration. It is replaced, never mutated,
// on reload: keep the pointer for one operation, call Config again later.
func (rt *Runtime[T]) Config() *T { return rt.current.Load() }

// Main runs the binary with args (os.Args[1:]) and returns the exit code.
func Main[T any](b Binary[T], args []string) int {
	if b.Stdout == nil {
		b.Stdout = os.Stdout
	}
	if b.Stderr == nil {
		b.Stderr = os.Stderr
	}
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(b, args)
	case "healthcheck":
		return healthcheck(b, args)
	case "drain":
		return drain(b, args)
	case "token":
		if b.Auth == nil {
			break
		}
		return token(b, args)
	case "version":
		fmt.Fprintf(b.Stdout, "%s %s %s/%s %s\n", b.Name, b.Version, runtime.GOOS, runtime.GOARCH, runtime.Version())
		return 0
	case "help", "-h", "--help":
		usage(b, nil)
		return 0
	}
	fmt.Fprintf(b.Stderr, "%s: unknown subcommand %q\n", b.Name, cmd)
	usage(b, nil)
	return ExitUsage
}

func usage[T any](b Binary[T], fs *flag.FlagSet) {
	subs := "serve|healthcheck|drain|version"
	if b.Auth != nil {
		subs += "|token"
	}
	fmt.Fprintf(b.Stderr, "usage: %s [%s] [flags]\n", b.Name, subs)
	if fs != nil {
		fs.PrintDefaults()
	}
}

// cmdline is the parsed command line of a subcommand.
type cmdline struct {
	configFile string
	flags      map[string]string
	timeout    time.Duration
	// healthcheck's remote targets (at most one of grpc and url).
	grpc, url    string
	grpcTLS      bool
	expectStatus int
}

func parse[T any](b Binary[T], sub string, args []string, all bool) (*cmdline, bool) {
	fs := flag.NewFlagSet(b.Name+" "+sub, flag.ContinueOnError)
	fs.SetOutput(b.Stderr)
	fs.Usage = func() { usage(b, fs) }
	cl := &cmdline{flags: map[string]string{}}
	fs.StringVar(&cl.configFile, "config", os.Getenv("LIVECLUSTER_CONFIG"), "YAML config file (env LIVECLUSTER_CONFIG)")
	defaults := b.Config.Defaults()
	var flags []Flag
	if all {
		flags = append(append([]Flag(nil), CommonFlags...), b.Flags...)
	} else {
		flags = []Flag{{Name: "admin-listen", Key: "adminListen", Usage: "admin address of the local process"}}
		fs.DurationVar(&cl.timeout, "timeout", 0, "give up after this long (0: a default)")
	}
	if sub == "healthcheck" {
		fs.StringVar(&cl.grpc, "grpc", "", "check grpc.health.v1 on this host:port (plaintext) instead of the local /readyz")
		fs.BoolVar(&cl.grpcTLS, "grpc-tls", false, "with --grpc: over TLS (the certificate is not verified: a probe sends nothing secret)")
		fs.StringVar(&cl.url, "url", "", "GET this URL instead of the local /readyz")
		fs.IntVar(&cl.expectStatus, "expect-status", http.StatusOK, "with --url: the HTTP status that counts as healthy")
	}
	byName := map[string]string{}
	for _, f := range flags {
		def, _ := b.Config.Value(&defaults, f.Key)
		fs.String(f.Name, def, fmt.Sprintf("%s (config %s, env %s)", f.Usage, f.Key, config.EnvName(f.Key)))
		byName[f.Name] = f.Key
	}
	if err := fs.Parse(args); err != nil {
		return nil, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(b.Stderr, "%s %s: unexpected arguments %q\n", b.Name, sub, fs.Args())
		return nil, false
	}
	if cl.grpc != "" && cl.url != "" {
		fmt.Fprintf(b.Stderr, "%s %s: give --grpc or --url, not both\n", b.Name, sub)
		return nil, false
	}
	fs.Visit(func(f *flag.Flag) {
		if key, ok := byName[f.Name]; ok {
			cl.flags[key] = f.Value.String()
		}
	})
	return cl, true
}

func (cl *cmdline) source() config.Source {
	return config.Source{File: cl.configFile, Env: os.Environ(), Flags: cl.flags}
}

func lifecycleOptions(c *config.Common) lifecycle.Options {
	return lifecycle.Options{
		StartWait:    c.Shutdown.StartWait.D(),
		DrainTimeout: c.Shutdown.DrainTimeout.D(),
		FinalWait:    c.Shutdown.FinalWait.D(),
		SigtermFast:  c.Shutdown.Sigterm == config.SigtermFast,
	}
}

func serve[T any](b Binary[T], args []string) int {
	cl, ok := parse(b, "serve", args, true)
	if !ok {
		return ExitUsage
	}
	for _, f := range b.Flags {
		if !b.Config.HasKey(f.Key) {
			fmt.Fprintf(b.Stderr, "%s: flag --%s maps to unknown config key %q\n", b.Name, f.Name, f.Key)
			return ExitUsage
		}
	}
	cfg, err := b.Config.Load(cl.source())
	if err != nil {
		fmt.Fprintf(b.Stderr, "%s: %v\n", b.Name, err)
		return ExitUsage
	}
	common := config.CommonOf(cfg)

	var level slog.LevelVar
	lvl, _ := config.ParseLevel(common.Log.Level) // validated
	level.Set(lvl)
	logger := logging.New(b.Stdout, &level, slog.String("binary", b.Name), slog.String("node", common.NodeID))

	lc := lifecycle.New(logger, lifecycleOptions(common))
	stopSignals := lc.NotifySignals()
	defer stopSignals()

	rt := &Runtime[T]{
		Name: b.Name, Version: b.Version, Logger: logger,
		Metrics: admin.NewRegistry(b.Name, b.Version), Lifecycle: lc,
	}
	rt.current.Store(cfg)

	var started atomic.Bool
	lc.AddCheck("started", func() error {
		if !started.Load() {
			return errors.New("starting")
		}
		return nil
	})
	adminTLS, adminToken, err := adminSecurity(common, logger)
	if err != nil {
		logger.Error("cannot start", "err", err.Error())
		return lifecycle.ExitFatal
	}
	rt.Admin = admin.New(admin.Options{
		Logger: logger, Listen: common.AdminListen, Registry: rt.Metrics,
		Readiness: lc.Checks, Drain: lc.StartDrain, Pprof: common.Pprof,
		TLS: adminTLS, Token: adminToken,
	})
	rt.AdminToken = adminToken
	if err := rt.Admin.Start(); err != nil {
		logger.Error("cannot start", "err", err.Error())
		return lifecycle.ExitFatal
	}
	code := lifecycle.ExitFatal
	defer func() {
		if code != lifecycle.ExitGraceful {
			_ = rt.Admin.Close() // quitting at once: no grace for scrapes either
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = rt.Admin.Shutdown(ctx)
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	w, err := reload.New(reload.Options{
		Path: cl.configFile, Trigger: lc.Reloads(), Logger: logger, Registerer: rt.Metrics,
		Reload: func(ctx context.Context) error { return reloadConfig(ctx, b, rt, cl, &level) },
	})
	if err != nil {
		logger.Error("cannot start", "err", err.Error())
		return lifecycle.ExitFatal
	}
	go func() {
		if err := w.Run(ctx); err != nil {
			// Not fatal: the node works without hot reload; SIGHUP still
			// cannot be served by this watcher, so say so loudly.
			logger.Error("config hot reload disabled", "err", err.Error())
		}
	}()

	logger.Info("starting", "version", b.Version, "admin", rt.Admin.Addr().String(),
		"config", cl.configFile, "shutdown", lc.Options().String())
	go func() {
		if err := b.Run(ctx, rt); err != nil {
			lc.Fatal(fmt.Errorf("start %s: %w", b.Name, err))
			return
		}
		started.Store(true)
		logger.Info("started")
	}()
	code = lc.Run(ctx)
	logger.Info("exiting", "exit_code", code)
	return code
}

// adminSecurity loads admin.tls and admin.token; a file that does not
// load is an error at start (later changes are re-read, a bad one keeps
// the previous certificate or token).
func adminSecurity(c *config.Common, log *slog.Logger) (*tls.Config, *authn.Token, error) {
	var cfg *tls.Config
	if t := c.Admin.TLS; t.Enabled() {
		st, err := tlsfiles.New(tlsfiles.Options{Name: "admin", CertFile: t.CertFile, KeyFile: t.KeyFile, CAFile: t.ClientCAFile, Logger: log})
		if err != nil {
			return nil, nil, fmt.Errorf("admin.tls: %w", err)
		}
		cfg = st.ServerConfig()
	}
	tok, err := authn.NewToken("admin", c.Admin.Token, 0, log)
	if err != nil {
		return nil, nil, fmt.Errorf("admin.token: %w", err)
	}
	return cfg, tok, nil
}

func reloadConfig[T any](ctx context.Context, b Binary[T], rt *Runtime[T], cl *cmdline, level *slog.LevelVar) error {
	next, err := b.Config.Load(cl.source())
	if err != nil {
		return err
	}
	old := rt.Config()
	merged, changed, restartOnly := b.Config.Merge(old, next)
	for _, k := range restartOnly {
		rt.Logger.Warn("config key changed but takes effect only after a restart; not applied", "key", k)
	}
	if len(changed) == 0 {
		rt.Logger.Info("config reloaded: no live key changed")
		return nil
	}
	if b.Apply != nil {
		if err := b.Apply(ctx, rt, old, merged); err != nil {
			return fmt.Errorf("apply reloaded config: %w", err)
		}
	}
	c := config.CommonOf(merged)
	lvl, _ := config.ParseLevel(c.Log.Level)
	level.Set(lvl)
	rt.Lifecycle.SetOptions(lifecycleOptions(c))
	rt.current.Store(merged)
	rt.Logger.Info("config reloaded", "changed", changed)
	return nil
}

// adminURL turns a listen address into a URL for a client on this host.
func adminURL(c *config.Common, path string) (string, error) {
	listen := c.AdminListen
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("admin address %q: %w", listen, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::", "[::]":
		host = "::1"
	}
	scheme := "http://"
	if c.Admin.TLS.Enabled() {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(host, port) + path, nil
}

// localClient is the HTTP client of the subcommands that call the local
// admin port. Over HTTPS it does not verify the certificate: the peer is
// this host's own process on a loopback address, and the certificate
// names the pod's Service, not 127.0.0.1.
func localClient(c *config.Common, timeout time.Duration, keepAlive bool) *http.Client {
	tr := &http.Transport{DisableKeepAlives: !keepAlive}
	if c.Admin.TLS.Enabled() {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	return &http.Client{Timeout: timeout, Transport: tr}
}

func localTarget[T any](b Binary[T], sub string, args []string) (*cmdline, *config.Common, bool) {
	cl, ok := parse(b, sub, args, false)
	if !ok {
		return nil, nil, false
	}
	cfg, err := b.Config.Load(cl.source())
	if err != nil {
		fmt.Fprintf(b.Stderr, "%s %s: %v\n", b.Name, sub, err)
		return nil, nil, false
	}
	return cl, config.CommonOf(cfg), true
}

func healthcheck[T any](b Binary[T], args []string) int {
	cl, common, ok := localTarget(b, "healthcheck", args)
	if !ok {
		return ExitUsage
	}
	timeout := cl.timeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	if cl.grpc != "" {
		return grpcHealthcheck(b, cl.grpc, cl.grpcTLS, timeout)
	}
	u, want := cl.url, cl.expectStatus
	if u == "" {
		var err error
		u, err = adminURL(common, "/readyz?verbose")
		if err != nil {
			fmt.Fprintln(b.Stderr, err)
			return ExitUsage
		}
		want = http.StatusOK
	}
	client := &http.Client{Timeout: timeout}
	if cl.url == "" {
		client = localClient(common, timeout, true)
	}
	resp, err := client.Get(u)
	if err != nil {
		fmt.Fprintf(b.Stderr, "%s healthcheck: %v\n", b.Name, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != want {
		fmt.Fprintf(b.Stderr, "%s healthcheck: GET %s: %s (want %d)\n%s", b.Name, u, resp.Status, want, body)
		return 1
	}
	fmt.Fprintf(b.Stdout, "%s", body)
	return 0
}

// grpcHealthcheck asks grpc.health.v1 Check (the server as a whole, service
// "") on addr over plaintext (TLS with useTLS); 0 when SERVING, 1 otherwise (unreachable,
// NOT_SERVING, no health service), printing why.
func grpcHealthcheck[T any](b Binary[T], addr string, useTLS bool, timeout time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	creds := insecure.NewCredentials()
	if useTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintf(b.Stderr, "%s healthcheck: grpc %s: %v\n", b.Name, addr, err)
		return ExitUsage
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		fmt.Fprintf(b.Stderr, "%s healthcheck: grpc %s: %v\n", b.Name, addr, err)
		return 1
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		fmt.Fprintf(b.Stderr, "%s healthcheck: grpc %s: %s\n", b.Name, addr, st)
		return 1
	}
	fmt.Fprintf(b.Stdout, "grpc %s: SERVING\n", addr)
	return 0
}

func drain[T any](b Binary[T], args []string) int {
	cl, common, ok := localTarget(b, "drain", args)
	if !ok {
		return ExitUsage
	}
	timeout := cl.timeout
	if timeout <= 0 {
		timeout = common.Shutdown.StartWait.D() + common.Shutdown.DrainTimeout.D() +
			common.Shutdown.FinalWait.D() + lifecycle.FinalHookTimeout + 10*time.Second
	}
	deadline := time.Now().Add(timeout)
	u, err := adminURL(common, admin.DrainPath)
	if err != nil {
		fmt.Fprintln(b.Stderr, err)
		return ExitUsage
	}
	req, err := http.NewRequest(http.MethodPost, u, nil)
	if err != nil {
		fmt.Fprintf(b.Stderr, "%s drain: %v\n", b.Name, err)
		return ExitUsage
	}
	req.Header.Set("Content-Type", "application/json")
	if common.Admin.Token.Set() {
		tok, err := authn.NewToken("admin", common.Admin.Token, 0, nil)
		if err != nil {
			fmt.Fprintf(b.Stderr, "%s drain: admin.token: %v\n", b.Name, err)
			return ExitUsage
		}
		req.Header.Set("Authorization", "Bearer "+tok.Value())
	}
	resp, err := localClient(common, 5*time.Second, true).Do(req)
	if err != nil {
		fmt.Fprintf(b.Stderr, "%s drain: %v\n", b.Name, err)
		return 1
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		fmt.Fprintf(b.Stderr, "%s drain: %s: %s", b.Name, resp.Status, body)
		return 1
	}
	fmt.Fprintf(b.Stderr, "%s drain: draining; waiting for the process to exit (up to %s)\n", b.Name, timeout)
	hz, _ := adminURL(common, "/healthz")
	// No keep-alive: a pooled connection to the exiting process would make
	// "still answering" look true a little longer.
	poll := localClient(common, time.Second, false)
	for time.Now().Before(deadline) {
		resp, err := poll.Get(hz)
		if err != nil {
			fmt.Fprintf(b.Stderr, "%s drain: process gone\n", b.Name)
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Fprintf(b.Stderr, "%s drain: still running after %s\n", b.Name, timeout)
	return 1
}
