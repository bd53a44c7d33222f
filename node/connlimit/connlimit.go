// Package connlimit bounds what clients may hold on a node's data-plane
// listeners (RTMP and HTTP on origins and edges alike): connections in
// total and per client address (Listener), and players per stream or
// publishes per node (Counter). It also counts every connection a limit
// or a deadline cut off, in livecluster_conns_rejected_total{listener,
// reason}, so a slowloris or a flood shows on a dashboard.
//
// A refused connection is told why where its protocol allows it before
// the request is read: the Listener hands it to a Refuse function (HTTP:
// RefuseHTTP writes a 503 or 429; RTMP: rtmp.Server.Refuse answers the
// connect with NetConnection.Connect.Rejected). At most MaxRefusing
// refusals run at once; beyond that a refused connection is closed
// unanswered, so a flood costs a goroutine per refusal in flight and no
// more. Refused connections never count against the limits, and never
// slow the Accept loop the other clients depend on.
package connlimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits are the connection caps of one listener; 0 means no limit.
type Limits struct {
	MaxConns      int // open connections on the listener
	MaxConnsPerIP int // open connections from one client address
}

// Rejection reasons, the values of the reason label.
const (
	ReasonMaxConns         = "max_conns"
	ReasonMaxConnsPerIP    = "max_conns_per_ip"
	ReasonHandshakeTimeout = "handshake_timeout" // RTMP handshake or commands too slow
	ReasonHeaderTimeout    = "header_timeout"    // HTTP request header too slow
	ReasonIdleTimeout      = "idle_timeout"      // nothing received for too long
	ReasonBitrate          = "bitrate"           // publish above the bitrate ceiling
	ReasonMaxStreams       = "max_streams"
	ReasonMaxPlayers       = "max_players"
)

// MaxRefusing bounds the refusals (a short answer, then close) running at
// once on one Listener.
const MaxRefusing = 64

// ErrMaxConns and ErrMaxConnsPerIP are the errors a Refuse function is
// given; their text is what the client is told.
var (
	ErrMaxConns      = errors.New("server at its connection limit, try again later")
	ErrMaxConnsPerIP = errors.New("too many connections from your address")
)

// Metrics are the limiter's metrics; one per registry, shared by the
// node's listeners (the listener label tells them apart).
type Metrics struct {
	rejected *prometheus.CounterVec
	open     *prometheus.GaugeVec
}

// NewMetrics registers livecluster_conns_rejected_total and
// livecluster_conns_open on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livecluster_conns_rejected_total",
			Help: "Client connections or sessions refused or cut off by a limit or a deadline, by listener and reason.",
		}, []string{"listener", "reason"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "livecluster_conns_open",
			Help: "Client connections open on a data-plane listener.",
		}, []string{"listener"}),
	}
	reg.MustRegister(m.rejected, m.open)
	return m
}

// Rejected counts one connection or session refused or cut off. A nil
// *Metrics counts nothing (unit tests).
func (m *Metrics) Rejected(listener, reason string) {
	if m != nil {
		m.rejected.WithLabelValues(listener, reason).Inc()
	}
}

// Rejecter returns Rejected bound to one listener name.
func (m *Metrics) Rejecter(listener string) func(reason string) {
	return func(reason string) { m.Rejected(listener, reason) }
}

// Options configure a Listener.
type Options struct {
	// Name is the listener label of the metrics ("rtmp", "http").
	Name string
	// Limits is read on every Accept, so a reloaded configuration applies
	// to the next connection. nil: no limits.
	Limits func() Limits
	// Refuse tells a refused client why (err is ErrMaxConns or
	// ErrMaxConnsPerIP) and returns; the Listener closes nc afterwards.
	// ctx ends when the Listener is closed. It must bound its own I/O
	// (deadlines). nil: refused connections are closed at once.
	Refuse  func(ctx context.Context, nc net.Conn, err error)
	Metrics *Metrics
}

// Listener wraps a net.Listener with connection limits. Its Accept returns
// only connections within the limits; Close closes the inner listener and
// ends and waits for the refusals in flight.
type Listener struct {
	net.Listener
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	refuse chan struct{} // semaphore of refusals in flight
	wg     sync.WaitGroup

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
}

// Wrap returns a limiting Listener around ln.
func Wrap(ln net.Listener, opts Options) *Listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &Listener{
		Listener: ln, opts: opts, ctx: ctx, cancel: cancel,
		refuse: make(chan struct{}, MaxRefusing), perIP: map[netip.Addr]int{},
	}
}

// Accept returns the next connection within the limits; connections over
// a limit are refused (see Options.Refuse) and counted, and Accept goes on
// waiting. Its errors are the inner listener's.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrOf(nc.RemoteAddr())
		if reason, rerr := l.admit(ip); rerr != nil {
			l.opts.Metrics.Rejected(l.opts.Name, reason)
			l.refuseConn(nc, rerr)
			continue
		}
		l.opts.Metrics.openAdd(l.opts.Name, 1)
		return &conn{Conn: nc, l: l, ip: ip}, nil
	}
}

// Close closes the inner listener, ends the refusals in flight and waits
// for them. Connections already accepted stay open.
func (l *Listener) Close() error {
	err := l.Listener.Close()
	l.cancel()
	l.wg.Wait()
	return err
}

// Open returns the connections currently accepted and not yet closed.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func (l *Listener) admit(ip netip.Addr) (string, error) {
	var lim Limits
	if l.opts.Limits != nil {
		lim = l.opts.Limits()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim.MaxConns > 0 && l.total >= lim.MaxConns {
		return ReasonMaxConns, fmt.Errorf("%w (%d)", ErrMaxConns, lim.MaxConns)
	}
	if lim.MaxConnsPerIP > 0 && l.perIP[ip] >= lim.MaxConnsPerIP {
		return ReasonMaxConnsPerIP, fmt.Errorf("%w (limit %d)", ErrMaxConnsPerIP, lim.MaxConnsPerIP)
	}
	l.total++
	l.perIP[ip]++
	return "", nil
}

func (l *Listener) release(ip netip.Addr) {
	l.mu.Lock()
	l.total--
	if n := l.perIP[ip] - 1; n > 0 {
		l.perIP[ip] = n
	} else {
		delete(l.perIP, ip)
	}
	l.mu.Unlock()
	l.opts.Metrics.openAdd(l.opts.Name, -1)
}

func (l *Listener) refuseConn(nc net.Conn, err error) {
	if l.opts.Refuse == nil {
		nc.Close()
		return
	}
	select {
	case l.refuse <- struct{}{}:
	default:
		nc.Close() // too many refusals in flight: no answer
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer func() { <-l.refuse }()
		stop := context.AfterFunc(l.ctx, func() { nc.Close() })
		defer stop()
		l.opts.Refuse(l.ctx, nc, err)
		nc.Close()
	}()
}

func (m *Metrics) openAdd(listener string, d float64) {
	if m != nil {
		m.open.WithLabelValues(listener).Add(d)
	}
}

// conn releases its slot once, on the first Close.
type conn struct {
	net.Conn
	l    *Listener
	ip   netip.Addr
	once sync.Once
	// readTimeout is set when a Read ended at a deadline (see HTTPTimeouts).
	readTimeout atomic.Bool
	// served is set once an HTTP server has answered a request on the
	// connection (HTTPTimeouts).
	served atomic.Bool
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.readTimeout.Store(true)
	}
	return n, err
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}

// ReadFrom copies r to the connection with the connection's own ReadFrom
// when it has one: net/http's ResponseWriter.ReadFrom passes a file (under
// an io.LimitedReader) down to it, and a TCP connection sends that with
// sendfile(2) instead of copying it through user space. Its errors are
// the connection's or r's.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// WriteBuffers writes v with the writev of the connection underneath:
// net.Buffers.WriteTo uses writev only on the net package's own
// connections, and through this wrapper made one write call per slice
// (per RTMP message or FLV tag a player was sent: 1.8 times the CPU of a
// writev per merge window, docs/benchmarks.md). The media packages look
// for this method (media/netx.BuffersWriter). It consumes v as
// v.WriteTo does and returns the connection's error.
func (c *conn) WriteBuffers(v *net.Buffers) (int64, error) {
	if bw, ok := c.Conn.(interface {
		WriteBuffers(*net.Buffers) (int64, error)
	}); ok {
		return bw.WriteBuffers(v)
	}
	return v.WriteTo(c.Conn)
}

// Unwrap returns the connection underneath: for TCP options, and for the
// media packages' writes to players' sockets without blocking (they reach
// the socket through it, media/netx.RawConn). The wrapper itself
// is deliberately not a syscall.Conn: os.File.WriteTo would then send
// files around its ReadFrom.
func (c *conn) Unwrap() net.Conn { return c.Conn }

// addrOf is the client address a per-IP limit counts: the IP without port
// and zone, IPv4-mapped IPv6 as IPv4. A non-IP address counts as one
// address (the zero Addr).
func addrOf(a net.Addr) netip.Addr {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	return netip.Addr{}
}

// refuseTimeout bounds the answer to a refused client.
const refuseTimeout = time.Second

// RejectedCounter returns the counter of one listener and reason (for
// tests and for callers that count on a hot path).
func (m *Metrics) RejectedCounter(listener, reason string) prometheus.Counter {
	return m.rejected.WithLabelValues(listener, reason)
}

// CloseWrite half-closes the connection when the one underneath can (a
// TCP connection), so lingering closes work through the wrapper.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
