package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/proctest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// An origin that dies (SIGKILL: no Deregister, but its sockets close) loses
// its streams after the OCM's session grace (1.5 s by default), not after
// the 10 s lease TTL: a publisher retrying on another origin every 500 ms,
// as an encoder behind the origins' Service does, is accepted there within
// about grace + 2 s of the kill.
func TestCrashedOwnerFreedAfterSessionGrace(t *testing.T) {
	slow(t)
	ff := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	ocm := startOCM(t)
	a := startOrigin(t, "origin-a", ocm.addr, "", true)
	b := startOrigin(t, "origin-b", ocm.addr, "", true)
	publish(t, a.url("crash"))
	waitOwner(t, ocm, "crash", "origin-a", 10*time.Second)
	// The origin's session stream is open before the kill (the metric is
	// set once the OCM's first message arrives).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, body := get(t, "http://"+a.admin+"/metrics"); strings.Contains(string(body), "ocm_session_stream_up 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("origin-a's session stream to the OCM never came up (ocm_session_stream_up)")
		}
	}

	killed := time.Now()
	if err := a.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	attempts := 0
	for {
		if time.Since(killed) > 9*time.Second {
			t.Fatalf("origin-b still refuses the publish %s after origin-a was killed (%d attempts)", time.Since(killed), attempts)
		}
		attempts++
		tried := time.Now()
		p := proctest.Start(t, "ffmpeg-publish-b", ff, "-nostdin", "-v", "error", "-re", "-stream_loop", "-1",
			"-i", flvFile(t), "-c", "copy", "-f", "flv", b.url("crash"))
		if accepted(ocm, p, "crash", "origin-b", 3*time.Second) {
			break
		}
		time.Sleep(time.Until(tried.Add(500 * time.Millisecond)))
	}
	took := time.Since(killed)
	t.Logf("publish accepted by origin-b %s after origin-a was SIGKILLed (%d attempts; OCM sessionGrace 1.5s, leaseTTL 10s)", took, attempts)
	if took > 1500*time.Millisecond+2*time.Second {
		t.Errorf("took %s: want within sessionGrace (1.5s) + 2s", took)
	}
	// The claim precedes the publish's start by a few milliseconds.
	b.WaitOutput(`"msg":"publish started"`, 5*time.Second)
	playRTMP(t, b.url("crash"), time.Second)
	b.noErrors(t)
}

// accepted waits until the OCM names owner for the stream (true) or the
// publisher p exits, refused (false).
func accepted(ocm *ocmProc, p *proctest.Proc, name, owner string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && !p.Exited() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := ocm.api.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key(name)})
		cancel()
		if err == nil && resp.GetStream().GetOwnerNodeId() == owner {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
