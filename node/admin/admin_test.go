package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/lifecycle"
	"github.com/livecluster/livecluster/node/proctest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func start(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	opts.Listen = "127.0.0.1:0"
	s := New(opts)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, "http://" + s.Addr().String()
}

func TestBareTCPCheckIsNotAnError(t *testing.T) {
	var logs proctest.SyncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, base := start(t, Options{Logger: logger})

	// Connect-and-close, connect-send-half-a-request-and-close, and a reset.
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 1:
			_, _ = c.Write([]byte("GET /hea"))
		case 2:
			_ = c.(*net.TCPConn).SetLinger(0) // RST instead of FIN
		}
		c.Close()
	}
	// A TLS client on the plain port: http.Server answers 400 and may log.
	tc, err := tls.Dial("tcp", s.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		tc.Close()
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	time.Sleep(100 * time.Millisecond) // let the server goroutines finish their logging; nothing to poll
	out := logs.String()
	t.Logf("admin log:\n%s", out)
	if strings.Contains(out, `"level":"ERROR"`) || strings.Contains(out, `"level":"WARN"`) {
		t.Fatalf("bare connections logged above debug:\n%s", out)
	}
}

func TestQuietErrorLogIsDebug(t *testing.T) {
	var logs proctest.SyncBuffer
	l := QuietErrorLog(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Printf("http: TLS handshake error from 127.0.0.1:1234: EOF")
	if out := logs.String(); !strings.Contains(out, `"level":"DEBUG"`) || !strings.Contains(out, "TLS handshake error") {
		t.Fatalf("got %q", out)
	}
	var quiet proctest.SyncBuffer
	l = QuietErrorLog(slog.New(slog.NewJSONHandler(&quiet, nil))) // info level: dropped
	l.Printf("http: TLS handshake error from 127.0.0.1:1234: EOF")
	if quiet.String() != "" {
		t.Fatalf("debug line leaked at info level: %q", quiet.String())
	}
}

func TestIsBenignConnError(t *testing.T) {
	for _, err := range []error{io.EOF, fmt.Errorf("read: %w", syscall.ECONNRESET), net.ErrClosed,
		&net.OpError{Op: "write", Err: syscall.EPIPE}} {
		if !IsBenignConnError(err) || ConnErrorLevel(err) != slog.LevelDebug {
			t.Errorf("%v should be benign", err)
		}
	}
	if IsBenignConnError(errors.New("rtmp: bad chunk header")) {
		t.Error("a protocol error is not benign")
	}
}

func TestReadyzHealthzMetrics(t *testing.T) {
	var draining atomic.Bool
	var regErr atomic.Value
	regErr.Store("")
	readiness := func() []lifecycle.Check {
		var d, r error
		if draining.Load() {
			d = lifecycle.ErrDraining
		}
		if s := regErr.Load().(string); s != "" {
			r = errors.New(s)
		}
		return []lifecycle.Check{{Name: "draining", Err: d}, {Name: "ocm-registered", Err: r}}
	}
	var drained atomic.Int32
	s, base := start(t, Options{
		Registry: NewRegistry("testbin", "v1"), Readiness: readiness,
		Drain: func(string) { drained.Add(1) },
	})
	s.Mux.HandleFunc("GET /api/v1/thing", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("thing")) })

	if code, body := get(t, base+"/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("/readyz %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz?verbose"); code != 200 || !strings.Contains(body, "[+]ocm-registered ok") {
		t.Errorf("/readyz?verbose %d %q", code, body)
	}
	regErr.Store("not registered yet")
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "ocm-registered: not registered yet") {
		t.Errorf("/readyz unregistered %d %q", code, body)
	}
	// Liveness never follows the OCM (or etcd behind it): the chart's
	// livenessProbe is /healthz, and an OCM outage must not restart every
	// pod at once.
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz %d while the OCM check fails", code)
	}
	regErr.Store("")
	draining.Store(true)
	if code, body := get(t, base+"/readyz?verbose"); code != 503 || !strings.Contains(body, "[-]draining failed: draining") {
		t.Errorf("/readyz draining %d %q", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz %d while draining", code)
	}
	if code, body := get(t, base+"/api/v1/thing"); code != 200 || body != "thing" {
		t.Errorf("mounted API route: %d %q", code, body)
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Errorf("pprof served while off: %d", code)
	}
	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, `livecluster_build_info{binary="testbin",version="v1"} 1`) ||
		!strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_cpu_seconds_total") {
		t.Errorf("/metrics %d:\n%s", code, body)
	}

	resp, err := http.Post(base+DrainPath, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || drained.Load() != 1 {
		t.Errorf("drain: %d, calls %d", resp.StatusCode, drained.Load())
	}
	if code, _ := get(t, base+DrainPath); code != http.StatusMethodNotAllowed {
		t.Errorf("GET drain: %d", code)
	}
}

func TestDrainRefusedFromAnotherHost(t *testing.T) {
	var drained atomic.Int32
	s := New(Options{Drain: func(string) { drained.Add(1) }})
	req := httptest.NewRequest("POST", DrainPath, nil)
	req.RemoteAddr = "10.1.2.3:5555"
	req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey,
		&net.TCPAddr{IP: net.ParseIP("10.9.9.9"), Port: 1985}))
	rec := httptest.NewRecorder()
	s.Mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || drained.Load() != 0 {
		t.Errorf("remote drain: %d, calls %d", rec.Code, drained.Load())
	}
	// The same host dialling its own pod IP is accepted.
	req.RemoteAddr = "10.9.9.9:5555"
	rec = httptest.NewRecorder()
	s.Mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted || drained.Load() != 1 {
		t.Errorf("same-host drain: %d, calls %d", rec.Code, drained.Load())
	}
}

func TestPprofWhenOn(t *testing.T) {
	_, base := start(t, Options{Pprof: true})
	if code, _ := get(t, base+"/debug/pprof/"); code != 200 {
		t.Errorf("pprof: %d", code)
	}
}

func TestStartFailsOnBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := New(Options{Listen: ln.Addr().String()})
	if err := s.Start(); err == nil || !strings.Contains(err.Error(), "admin listen") {
		t.Fatalf("Start on a busy port: %v", err)
	}
}
