// Package proctest runs the livecluster binaries and real media clients
// (ffmpeg, ffprobe) as child processes for multi-process tests: it builds a
// binary from the workspace, starts it with its output captured, waits for
// HTTP endpoints, sends real signals and stops only the processes it started,
// by PID.
package proctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago. Binaries under test take addresses as flags and some (embedded etcd)
// cannot report the port they bound, so the port is picked here.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("reserve a port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Build compiles the main package pkg (an import path in the workspace, e.g.
// "github.com/livecluster/livecluster/ocm/cmd/ocm") into dir and returns the
// binary's path. Call it from TestMain so a package builds each binary once.
// It returns go build's error (its output goes to stderr) when the build
// fails or ctx ends first.
func Build(ctx context.Context, dir, pkg string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	// -trimpath: the build cache's entries for the workspace's packages do
	// not depend on the checkout's directory, so a fresh clone (CI's) or a
	// second worktree reuses them instead of compiling them again (~20 s
	// for the ocm, origin and edge binaries on a 2-core machine).
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w", pkg, err)
	}
	return out, nil
}

// Tool finds an external program the tests need: the path in env (e.g.
// LIVECLUSTER_FFMPEG), else name on PATH. When it is missing the test is
// skipped, except under CI (CI set), where a missing tool is a failure: the
// test script installs it, so its absence is a broken script.
func Tool(t testing.TB, env, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found (set %s or install it)", name, env)
	}
	t.Skipf("%s not found (set %s or install it)", name, env)
	return ""
}

// Proc is a child process under test.
type Proc struct {
	Name string
	Cmd  *exec.Cmd

	t    testing.TB
	out  *SyncBuffer
	done chan struct{}
	err  error // set before done is closed
}

// Start runs bin with args; its stdout and stderr are captured (Output) and
// echoed to the test log when the test fails. The process is stopped with
// SIGKILL at the end of the test if it is still running. It fails the test
// when the process cannot be started.
func Start(t testing.TB, name, bin string, args ...string) *Proc {
	t.Helper()
	return StartEnv(t, name, nil, bin, args...)
}

// StartEnv is Start with env ("KEY=value" entries) added to the test
// binary's environment for this process alone. Tests that run in parallel
// (t.Parallel) cannot change the environment of the whole test binary
// (t.Setenv panics there, and every process started meanwhile would
// inherit it), so a setting meant for one child goes here.
func StartEnv(t testing.TB, name string, env []string, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, t: t, out: &SyncBuffer{}, done: make(chan struct{})}
	p.Cmd = exec.Command(bin, args...)
	if len(env) > 0 {
		// Later entries win in exec's environment: env overrides.
		p.Cmd.Env = append(os.Environ(), env...)
	}
	p.Cmd.Stdout = p.out
	p.Cmd.Stderr = p.out
	// Own process group: a signal meant for the test runner never reaches
	// the children, and a signal we send reaches only the one we mean.
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- output of %s (pid %d):\n%s", p.Name, p.Cmd.Process.Pid, p.Output())
		}
	})
	return p
}

// Output returns everything the process wrote so far.
func (p *Proc) Output() string { return p.out.String() }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v to %s: %v", sig, p.Name, err)
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process exits.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits up to timeout for the process to exit and returns its exit
// code; it fails the test on timeout.
func (p *Proc) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %v", p.Name, timeout)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	default:
		p.t.Fatalf("wait %s: %v", p.Name, p.err)
		return -1
	}
}

// Stop sends SIGTERM and waits up to timeout for the exit.
func (p *Proc) Stop(timeout time.Duration) int {
	p.t.Helper()
	if p.Exited() {
		return p.Wait(0)
	}
	p.Signal(syscall.SIGTERM)
	return p.Wait(timeout)
}

// WaitOutput waits until the process output contains s.
func (p *Proc) WaitOutput(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Output(), s) {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: %q not in output within %v", p.Name, s, timeout)
		}
		if p.Exited() {
			p.t.Fatalf("%s exited before printing %q", p.Name, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ReadSyscalls returns the read system calls the process has made so far
// (syscr of /proc/<pid>/io: every read(2), those that found nothing
// included), for tests that compare how often a server reads. Where the
// kernel keeps no I/O accounting the test is skipped; a file without a
// syscr line fails it.
func (p *Proc) ReadSyscalls() int64 {
	p.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p.Cmd.Process.Pid))
	if err != nil {
		p.t.Skipf("cannot count %s's read system calls: %v", p.Name, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "syscr: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				p.t.Fatalf("reading syscr of %s: %v", p.Name, err)
			}
			return n
		}
	}
	p.t.Fatalf("/proc/%d/io of %s has no syscr line", p.Cmd.Process.Pid, p.Name)
	return 0
}

// WaitHTTP polls url until it answers with status want, or fails the test
// after timeout.
func WaitHTTP(t testing.TB, url string, want int, timeout time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s: want %d within %v, last: %s", url, want, timeout, last)
}

// MakeTestFLV writes an H.264/AAC FLV test stream of the given length with a
// keyframe every gop frames at 30 fps, small enough to make in a second or
// two, and returns its path.
func MakeTestFLV(t testing.TB, ffmpeg, dir string, seconds, gop int) string {
	t.Helper()
	out := filepath.Join(dir, fmt.Sprintf("test-%ds.flv", seconds))
	args := []string{"-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100",
		"-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-preset", "veryfast", "-b:v", "500k",
		"-g", fmt.Sprint(gop), "-keyint_min", fmt.Sprint(gop), "-sc_threshold", "0",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv", out}
	cmd := exec.Command(ffmpeg, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make test stream: %v\n%s", err, b)
	}
	return out
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers (exec's copying
// goroutines, a logger) and the test's readers. The zero value is ready.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
