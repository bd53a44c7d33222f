package connlimit_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/livecluster/livecluster/node/connlimit"
)

func listen(t *testing.T, opts connlimit.Options) *connlimit.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := connlimit.Wrap(ln, opts)
	t.Cleanup(func() { l.Close() })
	return l
}

// dialFrom connects from a chosen loopback address, so that two clients
// have two IPs.
func dialFrom(t *testing.T, src, dst string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestHTTPLimits(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := connlimit.NewMetrics(reg)
	var lim atomic.Pointer[connlimit.Limits]
	lim.Store(&connlimit.Limits{MaxConns: 3, MaxConnsPerIP: 2})
	l := listen(t, connlimit.Options{
		Name: "http", Metrics: m, Refuse: connlimit.RefuseHTTP,
		Limits: func() connlimit.Limits { return *lim.Load() },
	})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	addr := l.Addr().String()

	get := func(c net.Conn) (int, string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	a1, a2 := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	for _, c := range []net.Conn{a1, a2} {
		if code, _ := get(c); code != 200 {
			t.Fatalf("within the limits: %d", code)
		}
	}
	code, body := get(dialFrom(t, "127.0.0.1", addr))
	if code != http.StatusTooManyRequests || !strings.Contains(body, "too many connections from your address") {
		t.Fatalf("third connection from one IP: %d %q, want 429", code, body)
	}
	b1 := dialFrom(t, "127.0.0.2", addr)
	if code, _ := get(b1); code != 200 {
		t.Fatalf("another IP within the global limit: %d", code)
	}
	code, body = get(dialFrom(t, "127.0.0.3", addr))
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "connection limit") {
		t.Fatalf("fourth connection: %d %q, want 503", code, body)
	}
	// The clients inside the limits were not disturbed.
	if code, _ := get(a1); code != 200 {
		t.Fatalf("first client after the refusals: %d", code)
	}
	if got := testutil.ToFloat64(m.RejectedCounter("http", connlimit.ReasonMaxConnsPerIP)); got != 1 {
		t.Errorf("max_conns_per_ip rejections = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.RejectedCounter("http", connlimit.ReasonMaxConns)); got != 1 {
		t.Errorf("max_conns rejections = %v, want 1", got)
	}
	// Closing frees the slot; a raised limit applies to the next Accept.
	a2.Close()
	waitOpen(t, l, 2)
	if code, _ := get(dialFrom(t, "127.0.0.1", addr)); code != 200 {
		t.Fatalf("after a close: %d", code)
	}
	lim.Store(&connlimit.Limits{MaxConns: 10, MaxConnsPerIP: 5})
	if code, _ := get(dialFrom(t, "127.0.0.1", addr)); code != 200 {
		t.Fatalf("after raising the limit: %d", code)
	}
}

func waitOpen(t *testing.T, l *connlimit.Listener, want int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for l.Open() != want {
		if time.Now().After(deadline) {
			t.Fatalf("open connections = %d, want %d", l.Open(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A slowloris trickling its header is cut at ReadHeaderTimeout and
// counted; a normal client on the same server is served meanwhile.
func TestHTTPSlowloris(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := connlimit.NewMetrics(reg)
	l := listen(t, connlimit.Options{Name: "http", Metrics: m})
	const rht = 300 * time.Millisecond
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: rht,
		ConnState:         connlimit.HTTPTimeouts(m, "http"),
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	slow := dialFrom(t, "127.0.0.1", l.Addr().String())
	start := time.Now()
	cut := make(chan time.Duration, 1)
	go func() {
		for _, b := range []byte("GET / HTTP/1.1\r\nHost: x\r\nX-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa") {
			if _, err := slow.Write([]byte{b}); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		slow.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, slow)
		cut <- time.Since(start)
	}()
	resp, err := http.Get("http://" + l.Addr().String() + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("normal client during the slowloris: %v", err)
	}
	resp.Body.Close()
	if d := <-cut; d > 2*time.Second {
		t.Fatalf("slowloris held its connection for %s (ReadHeaderTimeout %s)", d, rht)
	}
	deadline := time.Now().Add(2 * time.Second)
	for testutil.ToFloat64(m.RejectedCounter("http", connlimit.ReasonHeaderTimeout)) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("header_timeout rejections = %v, want 1",
				testutil.ToFloat64(m.RejectedCounter("http", connlimit.ReasonHeaderTimeout)))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A kept-alive connection that stays silent after its request is cut at
// IdleTimeout and counted as idle_timeout, not header_timeout.
func TestHTTPIdleTimeout(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := connlimit.NewMetrics(reg)
	l := listen(t, connlimit.Options{Name: "http", Metrics: m})
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       200 * time.Millisecond,
		ConnState:         connlimit.HTTPTimeouts(m, "http"),
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	c := dialFrom(t, "127.0.0.1", l.Addr().String())
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v", err)
	}
	// Silent now: the server closes the connection at IdleTimeout.
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("waiting for the idle cut: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for testutil.ToFloat64(m.RejectedCounter("http", connlimit.ReasonIdleTimeout)) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("idle_timeout rejections = %v, want 1",
				testutil.ToFloat64(m.RejectedCounter("http", connlimit.ReasonIdleTimeout)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := testutil.ToFloat64(m.RejectedCounter("http", connlimit.ReasonHeaderTimeout)); n != 0 {
		t.Fatalf("header_timeout rejections = %v, want 0", n)
	}
}

// Refusals never block Accept: a flood of refused clients that never read
// their answer does not keep a client within the limits waiting.
func TestRefusalsDoNotBlockAccept(t *testing.T) {
	l := listen(t, connlimit.Options{
		Name: "rtmp", Limits: func() connlimit.Limits { return connlimit.Limits{MaxConnsPerIP: 1} },
		Refuse: connlimit.RefuseHTTP,
	})
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	addr := l.Addr().String()
	dialFrom(t, "127.0.0.1", addr)
	first := <-accepted
	for range 3 * connlimit.MaxRefusing {
		dialFrom(t, "127.0.0.1", addr)
	}
	dialFrom(t, "127.0.0.2", addr)
	select {
	case c := <-accepted:
		if !strings.HasPrefix(c.RemoteAddr().String(), "127.0.0.2:") {
			t.Fatalf("accepted %s, want the client from 127.0.0.2", c.RemoteAddr())
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a client within the limits waited behind refusals")
	}
	first.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCounter(t *testing.T) {
	c := connlimit.NewCounter()
	r1, ok1 := c.Acquire("a", 2)
	_, ok2 := c.Acquire("a", 2)
	_, ok3 := c.Acquire("a", 2)
	_, okb := c.Acquire("b", 2)
	if !ok1 || !ok2 || ok3 || !okb {
		t.Fatalf("acquire results %v %v %v %v, want true true false true", ok1, ok2, ok3, okb)
	}
	r1()
	r1() // a second release is a no-op
	if n := c.Count("a"); n != 1 {
		t.Fatalf("count after release = %d, want 1", n)
	}
	if _, ok := c.Acquire("a", 0); !ok {
		t.Fatal("max 0 must mean no cap")
	}
}

// readFromConn is a real TCP connection that records ReadFrom calls.
type readFromConn struct {
	*net.TCPConn
	calls atomic.Int32
}

func (c *readFromConn) ReadFrom(r io.Reader) (int64, error) {
	c.calls.Add(1)
	return c.TCPConn.ReadFrom(r)
}

// TestReadFromPassesThrough: io.Copy to a wrapped connection reaches the
// connection's own ReadFrom (where a TCP connection uses sendfile for a
// file), and the bytes arrive.
func TestReadFromPassesThrough(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(c)
		c.Close()
		got <- b
	}()
	inner, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc := &readFromConn{TCPConn: inner.(*net.TCPConn)}
	wl := connlimit.Wrap(&oneConnListener{c: rc, Listener: ln}, connlimit.Options{Name: "http"})
	c, err := wl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("sendfile ", 10000)
	f, err := os.CreateTemp(t.TempDir(), "body")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(want); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(c, f); err != nil || n != int64(len(want)) {
		t.Fatalf("copy: %d, %v", n, err)
	}
	c.Close()
	if b := <-got; string(b) != want {
		t.Fatalf("peer got %d bytes, want %d", len(b), len(want))
	}
	if rc.calls.Load() == 0 {
		t.Fatal("the wrapped connection's ReadFrom was not used")
	}
}

// oneConnListener hands out c once (the Addr and Close of Listener).
type oneConnListener struct {
	net.Listener
	c    net.Conn
	done bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if l.done {
		return nil, net.ErrClosed
	}
	l.done = true
	return l.c, nil
}

// writeCalls returns the write system calls (write and writev alike) this
// thread made; the caller locks its goroutine to the thread. It is
// media/mediatest/syscalls.ThreadWrites, kept here because the node module
// does not depend on the media module.
func writeCalls(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/io")
	if err != nil {
		t.Skipf("no per-thread I/O accounting: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "syscw: "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no syscw in /proc/thread-self/io")
	return 0
}

// TestWriteBuffersWritev: a wrapped connection writes a net.Buffers with
// one writev of the TCP connection underneath (net.Buffers.WriteTo on the
// wrapper itself makes one write call per slice), and the bytes arrive.
func TestWriteBuffersWritev(t *testing.T) {
	l := listen(t, connlimit.Options{Name: "rtmp"})
	peer, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	bw, ok := c.(interface {
		WriteBuffers(*net.Buffers) (int64, error)
	})
	if !ok {
		t.Fatalf("%T has no WriteBuffers", c)
	}
	var bufs net.Buffers
	var want []byte
	for i := range 32 {
		b := []byte(strings.Repeat(string(rune('a'+i%26)), 100+i))
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	runtime.LockOSThread()
	before := writeCalls(t)
	n, err := bw.WriteBuffers(&bufs)
	calls := writeCalls(t) - before
	runtime.UnlockOSThread()
	if err != nil || n != int64(len(want)) {
		t.Fatalf("WriteBuffers: %d bytes, %v; want %d", n, err, len(want))
	}
	if calls != 1 {
		t.Errorf("%d write system calls for 32 slices, want 1 (writev)", calls)
	}
	c.Close()
	got, err := io.ReadAll(peer)
	if err != nil || string(got) != string(want) {
		t.Fatalf("peer got %d bytes (%v), want %d", len(got), err, len(want))
	}
}

// An accepted connection's Unwrap reaches the socket (a syscall.Conn): the
// media packages write players' sockets without blocking through it, and
// what is written on it reaches the peer.
func TestUnwrapReachesSocket(t *testing.T) {
	l := listen(t, connlimit.Options{Name: "rtmp"})
	peer, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	u, ok := c.(interface{ Unwrap() net.Conn })
	if !ok {
		t.Fatalf("%T has no Unwrap", c)
	}
	sc, ok := u.Unwrap().(syscall.Conn)
	if !ok {
		t.Fatalf("%T unwraps to %T, not a syscall.Conn", c, u.Unwrap())
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("written on the raw socket")
	var werr error
	if err := rc.Write(func(fd uintptr) bool {
		_, werr = syscall.Write(int(fd), want)
		return true
	}); err != nil || werr != nil {
		t.Fatalf("raw write: %v, %v", err, werr)
	}
	c.Close()
	got, err := io.ReadAll(peer)
	if err != nil || string(got) != string(want) {
		t.Fatalf("peer got %q (%v), want %q", got, err, want)
	}
}
