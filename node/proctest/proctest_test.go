package proctest

import (
	"net/http"
	"net/http/httptest"
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
