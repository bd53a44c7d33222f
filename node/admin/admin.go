// Package admin serves a node's admin HTTP port (shutdown.adminListen,
// default :1985):
//
//	GET  /healthz        liveness: 200 "ok" while the process works.
//	GET  /readyz         readiness: 200 when every check passes and the node
//	                     is not draining, else 503 naming the failing
//	                     checks; ?verbose lists every check.
//	GET  /metrics        Prometheus metrics from the node's own registry
//	                     (never the global default one), with Go and
//	                     process collectors.
//	POST /api/v1/drain   starts a graceful drain and answers 202 at once.
//	                     Only accepted from the same host (a loopback
//	                     address, or the address the request arrived on):
//	                     the admin port is usually reachable cluster-wide
//	                     for scraping, and a drain is disruptive. This is what
//	                     the `drain` subcommand (a Kubernetes preStop exec)
//	                     calls.
//
// With Options.Token, every request that changes something (any method but
// GET, HEAD and OPTIONS: the drain, the origin's client kick, routes
// binaries add) needs "Authorization: Bearer <token>" (401 without, 403
// with a wrong one); reads and the probes stay open. With Options.TLS the
// port serves HTTPS only (probes use scheme HTTPS).
//
//	/debug/pprof/   when pprof is on.
//
// Binaries add their JSON API routes to Server.Mux.
//
// A bare TCP connect-and-close (a load balancer's TCP health check) is not
// an error: http.Server's own error log is routed to slog at debug level
// (QuietErrorLog). Other listeners can use QuietErrorLog and IsBenignConnError
// the same way.
package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/livecluster/livecluster/node/authn"
	"github.com/livecluster/livecluster/node/lifecycle"
)

// DrainPath is the endpoint the `drain` subcommand posts to.
const DrainPath = "/api/v1/drain"

// Options configure a Server.
type Options struct {
	Logger *slog.Logger
	// Listen is the address to bind, e.g. ":1985".
	Listen string
	// Registry serves /metrics; NewRegistry makes a suitable one.
	Registry *prometheus.Registry
	// Readiness returns the readiness checks (lifecycle.Lifecycle.Checks).
	Readiness func() []lifecycle.Check
	// Drain starts a graceful drain (lifecycle.Lifecycle.StartDrain); nil
	// disables /api/v1/drain.
	Drain func(reason string)
	// Pprof mounts /debug/pprof/.
	Pprof bool
	// TLS serves HTTPS (tlsfiles.Store.ServerConfig: rotated files apply
	// to new connections); nil: plain HTTP.
	TLS *tls.Config
	// Token guards the requests that change something; nil: none needed.
	Token *authn.Token
}

// Server is the admin HTTP server.
type Server struct {
	// Mux routes every admin request; binaries add their API routes to it
	// (Go 1.22 patterns, e.g. "GET /api/v1/streams").
	Mux  *http.ServeMux
	opts Options
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// NewRegistry returns a fresh metrics registry with the Go and process
// collectors, and livecluster_build_info{binary,version} set to 1.
func NewRegistry(binary, version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	bi := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "livecluster_build_info",
		Help: "Always 1; labels name the binary and its version.",
	}, []string{"binary", "version"})
	bi.WithLabelValues(binary, version).Set(1)
	reg.MustRegister(bi)
	return reg
}

// New builds the server; Start binds it.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Logger = opts.Logger.With("component", "admin")
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	s := &Server{Mux: http.NewServeMux(), opts: opts, done: make(chan struct{})}
	s.Mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.Mux.HandleFunc("GET /readyz", s.readyz)
	s.Mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{
		Registry:          opts.Registry, // promhttp's own error counters go here too
		ErrorLog:          slogPrintln{opts.Logger},
		EnableOpenMetrics: true,
	}))
	if opts.Drain != nil {
		s.Mux.HandleFunc("POST "+DrainPath, s.drain)
	}
	if opts.Pprof {
		s.Mux.HandleFunc("/debug/pprof/", pprof.Index)
		s.Mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		s.Mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		s.Mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		s.Mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.srv = &http.Server{
		Handler:           authn.RequireForChanges(opts.Token, opts.Logger, s.Mux),
		TLSConfig:         opts.TLS,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          QuietErrorLog(opts.Logger),
	}
	return s
}

// Start binds the listen address (so a busy port fails here, at start-up)
// and serves in the background until Shutdown or Close.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", s.opts.Listen, err)
	}
	s.ln = ln
	s.opts.Logger.Info("admin server listening", "addr", ln.Addr().String(), "https", s.opts.TLS != nil, "token", s.opts.Token != nil)
	go func() {
		defer close(s.done)
		serve := s.srv.Serve
		if s.opts.TLS != nil {
			// The certificate comes from TLSConfig.GetCertificate.
			serve = func(ln net.Listener) error { return s.srv.ServeTLS(ln, "", "") }
		}
		if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.opts.Logger.Error("admin server stopped", "err", err.Error())
		}
	}()
	return nil
}

// Addr is the bound address (useful with ":0"); nil before Start.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops the server gracefully, bounded by ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if s.ln != nil {
		select {
		case <-s.done:
		case <-ctx.Done():
		}
	}
	return err
}

// Close stops the server at once.
func (s *Server) Close() error { return s.srv.Close() }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	var checks []lifecycle.Check
	if s.opts.Readiness != nil {
		checks = s.opts.Readiness()
	}
	var failed []string
	var b strings.Builder
	for _, c := range checks {
		if c.Err != nil {
			failed = append(failed, c.Name+": "+c.Err.Error())
			fmt.Fprintf(&b, "[-]%s failed: %s\n", c.Name, c.Err)
		} else {
			fmt.Fprintf(&b, "[+]%s ok\n", c.Name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, verbose := r.URL.Query()["verbose"]
	if len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		if verbose {
			b.WriteString("readyz check failed\n")
			_, _ = w.Write([]byte(b.String()))
			return
		}
		_, _ = fmt.Fprintf(w, "not ready: %s\n", strings.Join(failed, "; "))
		return
	}
	if verbose {
		b.WriteString("readyz check passed\n")
		_, _ = w.Write([]byte(b.String()))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	if !sameHost(r) {
		s.opts.Logger.Warn("drain refused: not from this host", "remote", r.RemoteAddr)
		http.Error(w, "drain is only accepted from this host", http.StatusForbidden)
		return
	}
	s.opts.Logger.Info("drain requested over the admin API", "remote", r.RemoteAddr)
	s.opts.Drain("admin api " + DrainPath)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"draining": true})
}

// sameHost: the peer is loopback, or is this host dialling its own address.
func sameHost(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if tcp, ok := la.(*net.TCPAddr); ok && tcp.IP.Equal(ip) {
			return true
		}
	}
	return false
}
