package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/livecluster/livecluster/node/config"
)

// The test binary re-executes itself as a real node when this is set (not a
// LIVECLUSTER_ variable: the loader would refuse it as an unknown key).
const childEnv = "NODE_CLI_TEST_CHILD"

type childConfig struct {
	config.Common `yaml:",inline"`
	TCP           struct {
		Listen string `yaml:"listen"`
	} `yaml:"tcp"`
	// DrainHold is how long the drain hook holds (clients leaving).
	DrainHold config.Duration `yaml:"drainHold"`
}

func childBinary() Binary[childConfig] {
	return Binary[childConfig]{
		Name:    "testnode",
		Version: "v0.0.0-test",
		Config: config.Loader[childConfig]{
			Defaults: func() childConfig {
				c := childConfig{Common: config.DefaultCommon()}
				c.AdminListen = "127.0.0.1:0"
				c.TCP.Listen = "127.0.0.1:0"
				return c
			},
			Validate: func(c *childConfig) error {
				if err := config.ValidListen(c.TCP.Listen); err != nil {
					return fmt.Errorf("tcp.listen: %w", err)
				}
				return nil
			},
			Live: []string{"drainHold"},
		},
		Flags: []Flag{{Name: "tcp-listen", Key: "tcp.listen", Usage: "test TCP port"}},
		Run: func(ctx context.Context, rt *Runtime[childConfig]) error {
			ln, err := net.Listen("tcp", rt.Config().TCP.Listen)
			if err != nil {
				return fmt.Errorf("tcp listen: %w", err)
			}
			rt.Logger.Info("tcp listening", "addr", ln.Addr().String())
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			rt.Lifecycle.AddListener("tcp", ln)
			rt.Lifecycle.OnDraining("ocm-draining", func(ctx context.Context) error {
				rt.Logger.Info("told the ocm: draining")
				return nil
			})
			rt.Lifecycle.OnDrain("clients", func(ctx context.Context) error {
				select {
				case <-time.After(rt.Config().DrainHold.D()):
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			rt.Lifecycle.OnFinal("deregister", func(ctx context.Context) error {
				rt.Logger.Info("deregistered")
				return nil
			})
			return nil
		},
	}
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(Main(childBinary(), os.Args[1:]))
	}
	os.Exit(m.Run())
}

type logLine struct {
	at time.Time
	m  map[string]any
}

type child struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []logLine
	raw   []string
	exit  chan struct{} // stdout closed
	done  chan struct{} // process waited for
	at    time.Time     // when it was seen exiting
	admin string
	tcp   string
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func self(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	return cmd
}

func startChild(t *testing.T, configBody string, args ...string) *child {
	t.Helper()
	cfg := writeConfig(t, configBody)
	c := &child{t: t, cmd: self(t, append([]string{"serve", "--config", cfg}, args...)...), exit: make(chan struct{}), done: make(chan struct{})}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stderr = os.Stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.exit)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				t.Errorf("child wrote a non-JSON line: %q", sc.Text())
				continue
			}
			c.mu.Lock()
			c.lines = append(c.lines, logLine{time.Now(), m})
			c.raw = append(c.raw, sc.Text())
			c.mu.Unlock()
		}
	}()
	go func() {
		<-c.exit // stdout fully read before Wait closes the pipe
		_ = c.cmd.Wait()
		c.at = time.Now()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			c.mu.Lock()
			t.Logf("child log:\n%s", strings.Join(c.raw, "\n"))
			c.mu.Unlock()
		}
	})
	c.admin = c.waitLog("admin server listening", 10*time.Second)["addr"].(string)
	c.tcp = c.waitLog("tcp listening", 5*time.Second)["addr"].(string)
	c.waitReady(5 * time.Second)
	return c
}

func (c *child) find(msg string) (map[string]any, time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if l.m["msg"] == msg {
			return l.m, l.at, true
		}
	}
	return nil, time.Time{}, false
}

func (c *child) waitLog(msg string, within time.Duration) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m, _, ok := c.find(msg); ok {
			return m
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("no log line %q within %s", msg, within)
	return nil
}

func status(url string) int {
	cl := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (c *child) waitReady(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if status("http://"+c.admin+"/readyz") == 200 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("child not ready within %s", within)
}

func (c *child) signal(sig syscall.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
}

// wait returns the exit code and when the process exited.
func (c *child) wait(within time.Duration) (int, time.Time) {
	c.t.Helper()
	select {
	case <-c.done:
		return c.cmd.ProcessState.ExitCode(), c.at
	case <-time.After(within):
		c.t.Fatalf("child still running after %s", within)
		return -1, time.Time{}
	}
}

func canDial(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

const gracefulConfig = `
shutdown:
  startWait: 300ms
  finalWait: 300ms
  drainTimeout: 5s
drainHold: 200ms
`

func TestGracefulDrainOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	c := startChild(t, gracefulConfig)

	// A load balancer's TCP check on the admin port: no error-level log.
	conn, err := net.Dial("tcp", c.admin)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()

	t0 := time.Now()
	c.signal(syscall.SIGTERM)
	for status("http://"+c.admin+"/readyz") != 503 {
		if time.Since(t0) > time.Second {
			t.Fatal("/readyz did not fail after SIGTERM")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if d := time.Since(t0); d > 100*time.Millisecond {
		t.Errorf("/readyz failed %s after SIGTERM, want < 100ms", d)
	}
	if status("http://"+c.admin+"/healthz") != 200 {
		t.Error("/healthz must stay 200 while draining")
	}
	// Still accepting during startWait.
	if !canDial(c.tcp) {
		t.Errorf("TCP listener refused a connection %s after SIGTERM, during startWait", time.Since(t0))
	}
	for canDial(c.tcp) {
		if time.Since(t0) > 2*time.Second {
			t.Fatal("TCP listener never closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if closed := time.Since(t0); closed < 280*time.Millisecond {
		t.Errorf("TCP listener closed %s after SIGTERM, before startWait (300ms)", closed)
	}
	code, exited := c.wait(10 * time.Second)
	if code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	// startWait 300 + drain hook 200 + finalWait 300.
	if total := exited.Sub(t0); total < 800*time.Millisecond || total > 3*time.Second {
		t.Errorf("exited %s after SIGTERM, want ~800ms", total)
	}

	// Order of the steps in the log.
	order := []string{"told the ocm: draining"}
	var last time.Time
	for step := 1; step <= 4; step++ {
		var at time.Time
		c.mu.Lock()
		for _, l := range c.lines {
			if l.m["msg"] == "drain step" && l.m["step"] == float64(step) {
				at = l.at
			}
		}
		c.mu.Unlock()
		if at.IsZero() {
			t.Fatalf("no log for drain step %d", step)
		}
		if at.Before(last) {
			t.Errorf("drain step %d logged before the previous step", step)
		}
		last = at
	}
	for _, msg := range append(order, "deregistered", "drain complete, exiting") {
		if _, _, ok := c.find(msg); !ok {
			t.Errorf("missing log %q", msg)
		}
	}
	c.mu.Lock()
	for _, l := range c.raw {
		if strings.Contains(l, `"level":"ERROR"`) {
			t.Errorf("error-level log: %s", l)
		}
	}
	c.mu.Unlock()
}

func TestSIGINTDrainsLikeSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	c := startChild(t, gracefulConfig)
	c.signal(syscall.SIGINT)
	if code, _ := c.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	c.waitLog("drain complete, exiting", time.Second)
}

func TestFastSIGTERMQuitsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	c := startChild(t, "shutdown:\n  sigterm: fast\n  startWait: 5s\n  finalWait: 5s\n")
	t0 := time.Now()
	c.signal(syscall.SIGTERM)
	code, at := c.wait(10 * time.Second)
	if code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit code %d, want %d", code, 128+int(syscall.SIGTERM))
	}
	if d := at.Sub(t0); d > time.Second {
		t.Errorf("fast quit took %s", d)
	}
	if _, _, ok := c.find("drain step"); ok {
		t.Error("fast quit ran the drain")
	}
}

func TestSIGQUITDrainsEvenWhenFast(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	c := startChild(t, "shutdown:\n  sigterm: fast\n  startWait: 300ms\n  finalWait: 300ms\n")
	t0 := time.Now()
	c.signal(syscall.SIGQUIT)
	code, at := c.wait(10 * time.Second)
	if code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if d := at.Sub(t0); d < 600*time.Millisecond {
		t.Errorf("SIGQUIT exited after %s, before startWait+finalWait", d)
	}
	c.waitLog("drain complete, exiting", time.Second)
}

func TestSecondSignalQuitsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	c := startChild(t, "shutdown:\n  startWait: 10s\n  finalWait: 10s\n")
	c.signal(syscall.SIGTERM)
	c.waitLog("drain step", 2*time.Second)
	t0 := time.Now()
	c.signal(syscall.SIGTERM)
	code, at := c.wait(5 * time.Second)
	if code != 143 {
		t.Errorf("exit code %d, want 143", code)
	}
	if d := at.Sub(t0); d > time.Second {
		t.Errorf("second signal took %s to quit", d)
	}
}

func TestHealthcheckAndDrainSubcommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	c := startChild(t, "shutdown:\n  startWait: 500ms\n  finalWait: 200ms\ndrainHold: 100ms\n")
	hc := func() int {
		out, err := self(t, "healthcheck", "--admin-listen", c.admin).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		t.Logf("healthcheck exit %d: %s", code, out)
		return code
	}
	if code := hc(); code != 0 {
		t.Fatalf("healthcheck on a ready node: exit %d", code)
	}

	drain := self(t, "drain", "--admin-listen", c.admin)
	drain.Stderr = os.Stderr
	if err := drain.Start(); err != nil {
		t.Fatal(err)
	}
	c.waitLog("drain requested", 2*time.Second)
	if code := hc(); code != 1 {
		t.Errorf("healthcheck on a draining node: exit %d, want 1", code)
	}
	if err := drain.Wait(); err != nil {
		t.Fatalf("drain subcommand: %v", err)
	}
	// drain returns only once the node is gone.
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
		t.Fatal("drain subcommand returned while the node still runs")
	}
	if code, _ := c.wait(5 * time.Second); code != 0 {
		t.Fatalf("node exit code %d, want 0", code)
	}
	if code := hc(); code != 1 {
		t.Errorf("healthcheck with no node: exit %d, want 1", code)
	}
}

func TestSIGHUPReload(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	c := startChild(t, "log:\n  level: info\n")
	cfgPath := c.cmd.Args[3]
	write := func(body string) {
		// Write to a temp file and rename, so the file watcher never sees a
		// half-written file; then SIGHUP.
		tmp := cfgPath + ".tmp"
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	write("log:\n  level: debug\ntcp:\n  listen: 127.0.0.1:1\n")
	c.signal(syscall.SIGHUP)
	c.waitLog("config reloaded", 5*time.Second)
	m := c.waitLog("config key changed but takes effect only after a restart; not applied", time.Second)
	if m["key"] != "tcp.listen" {
		t.Errorf("restart-only warning for %v, want tcp.listen", m["key"])
	}
	write("log:\n  level: debug\nbogus: 1\n")
	c.signal(syscall.SIGHUP)
	m = c.waitLog("config reload refused; keeping the running configuration", 5*time.Second)
	if m["level"] != "ERROR" || !strings.Contains(m["err"].(string), "unknown key bogus") {
		t.Errorf("refusal log: %v", m)
	}
	if status("http://"+c.admin+"/readyz") != 200 {
		t.Error("node not ready after a refused reload")
	}
	resp, err := http.Get("http://" + c.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`livecluster_config_reload_total{result="failure"} 1`, `livecluster_config_reload_total{result="success"} 1`,
		"livecluster_build_info{", "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	c.signal(syscall.SIGTERM)
	c.wait(15 * time.Second)
}

func TestUsageErrors(t *testing.T) {
	var out strings.Builder
	b := childBinary()
	b.Stdout, b.Stderr = &out, &out
	if code := Main(b, []string{"serve", "--no-such-flag"}); code != ExitUsage {
		t.Errorf("unknown flag: exit %d", code)
	}
	if code := Main(b, []string{"nope"}); code != ExitUsage {
		t.Errorf("unknown subcommand: exit %d", code)
	}
	out.Reset()
	if code := Main(b, []string{"--log-level", "loud"}); code != ExitUsage || !strings.Contains(out.String(), "log.level: must be") {
		t.Errorf("bad flag value: exit %d, %q", code, out.String())
	}
	out.Reset()
	if code := Main(b, []string{"version"}); code != 0 || !strings.HasPrefix(out.String(), "testnode v0.0.0-test") {
		t.Errorf("version: exit %d, %q", code, out.String())
	}
}

// exitCode runs cmd and returns its exit code and output.
func exitCode(t *testing.T, cmd *exec.Cmd) (int, string) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestHealthcheckGRPC checks `healthcheck --grpc` against grpc-go's own
// health server: what a `helm test` pod runs against the OCM Service.
func TestHealthcheckGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	h := health.NewServer()
	healthpb.RegisterHealthServer(srv, h)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	addr := ln.Addr().String()
	hc := func() (int, string) {
		return exitCode(t, self(t, "healthcheck", "--grpc", addr, "--timeout", "2s"))
	}

	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if code, out := hc(); code != 0 || !strings.Contains(out, "SERVING") {
		t.Errorf("SERVING: exit %d, want 0: %s", code, out)
	}
	h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if code, out := hc(); code != 1 || !strings.Contains(out, "NOT_SERVING") {
		t.Errorf("NOT_SERVING: exit %d, want 1: %s", code, out)
	}
	srv.Stop()
	t0 := time.Now()
	if code, out := hc(); code != 1 {
		t.Errorf("server gone: exit %d, want 1: %s", code, out)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("server gone: took %s, --timeout is 2s", d)
	}
	if code, out := exitCode(t, self(t, "healthcheck", "--grpc", addr, "--url", "http://x/")); code != ExitUsage {
		t.Errorf("--grpc with --url: exit %d, want %d: %s", code, ExitUsage, out)
	}
}

// TestHealthcheckURL checks `healthcheck --url` and --expect-status: the
// `helm test` pod asks an edge, through its Service, for a stream nobody
// publishes and expects the edge's 404 (which it answers only after the
// OCM said "not found").
func TestHealthcheckURL(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("fine\n")) })
	mux.HandleFunc("GET /live/absent.m3u8", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "stream default/live/absent not found", http.StatusNotFound)
	})
	mux.HandleFunc("GET /broken", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "ocm unreachable", http.StatusServiceUnavailable)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"--url", base + "/ok"}, 0},
		{[]string{"--url", base + "/live/absent.m3u8"}, 1},
		{[]string{"--url", base + "/live/absent.m3u8", "--expect-status", "404"}, 0},
		{[]string{"--url", base + "/broken", "--expect-status", "404"}, 1},
		{[]string{"--url", "http://127.0.0.1:1/", "--timeout", "1s"}, 1},
	} {
		code, out := exitCode(t, self(t, append([]string{"healthcheck"}, c.args...)...))
		if code != c.want {
			t.Errorf("healthcheck %v: exit %d, want %d: %s", c.args, code, c.want, out)
		}
	}
}
