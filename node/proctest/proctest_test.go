package proctest

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartSignalWait(t *testing.T) {
	p := Start(t, "sh", "/bin/sh", "-c", `trap 'echo got-term; exit 7' TERM; echo up; while :; do sleep 0.05; done`)
	p.WaitOutput("up", 5*time.Second)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(5 * time.Second); code != 7 {
		t.Fatalf("exit code %d, want 7 (output %q)", code, p.Output())
	}
	if !p.Exited() {
		t.Fatal("Exited() false after Wait")
	}
}

// StartEnv gives the variables to that process alone: the test binary's
// environment, and so the next Start, stay as they were.
func TestStartEnv(t *testing.T) {
	const key = "PROCTEST_START_ENV"
	if v, ok := os.LookupEnv(key); ok {
		t.Fatalf("%s already set to %q", key, v)
	}
	p := StartEnv(t, "sh", []string{key + "=child-only"}, "/bin/sh", "-c", `echo "got=${`+key+`:-unset}"`)
	if code := p.Wait(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d (output %q)", code, p.Output())
	}
	if got := strings.TrimSpace(p.Output()); got != "got=child-only" {
		t.Fatalf("child saw %q, want got=child-only", got)
	}
	if v, ok := os.LookupEnv(key); ok {
		t.Fatalf("the test binary's environment has %s=%q after StartEnv", key, v)
	}
	q := Start(t, "sh", "/bin/sh", "-c", `echo "got=${`+key+`:-unset}"`)
	q.Wait(5 * time.Second)
	if got := strings.TrimSpace(q.Output()); got != "got=unset" {
		t.Fatalf("a later Start saw %q, want got=unset", got)
	}
}

func TestWaitHTTP(t *testing.T) {
	ready := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-ready:
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	time.AfterFunc(200*time.Millisecond, func() { close(ready) })
	WaitHTTP(t, srv.URL, http.StatusOK, 5*time.Second)
}

func TestFreeAddr(t *testing.T) {
	a, b := FreeAddr(t), FreeAddr(t)
	if a == "" || b == "" {
		t.Fatal("empty address")
	}
}
