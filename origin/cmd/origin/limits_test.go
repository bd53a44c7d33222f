package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/proctest"
)

// TestLimits runs a real origin with small limits: a second stream, a
// second player of a stream and a third HTTP connection are each refused
// with a clear answer, a slowloris is cut, and every refusal is counted;
// the stream inside the limits keeps playing.
func TestLimits(t *testing.T) {
	slow(t)
	ffmpeg := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	ocm := startOCM(t)
	o := startOrigin(t, "origin-l", ocm.addr, `limits:
  maxStreams: 1
  maxPlayersPerStream: 1
  maxConnsPerIP: 3
  timeouts:
    httpReadHeader: 1s
`, true)
	publish(t, o.url("one"))
	waitOwner(t, ocm, "one", "origin-l", 10*time.Second)

	// A second stream: NetStream.Publish.Rejected with the reason.
	out, err := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-re", "-i", flvFile(t), "-t", "3", "-c", "copy", "-f", "flv",
		o.url("two")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "most streams it allows (1)") {
		t.Errorf("second stream: err %v, ffmpeg said: %s", err, out)
	}

	// One HTTP-FLV player holds the stream's only player slot; an RTMP
	// player is refused meanwhile.
	resp, err := http.Get("http://" + o.http + "/live/one.flv")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first player: %v", err)
	}
	defer resp.Body.Close()
	go io.Copy(io.Discard, resp.Body)
	out, err = exec.Command(ffmpeg, "-nostdin", "-v", "error", "-i", o.url("one"), "-t", "1", "-f", "null", "-").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "most players this server allows (1)") {
		t.Errorf("second player: err %v, ffmpeg said: %s", err, out)
	}

	// A slowloris on the HTTP port is cut at httpReadHeader.
	nc, err := net.Dial("tcp", o.http)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write([]byte("GET /live/one.m3u8 HTTP/1.1\r\nHost: x\r\n"))
	start := time.Now()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, nc)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("slowloris held its connection for %s (httpReadHeader 1s)", d)
	}

	var metrics []byte
	waitMetric := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, metrics = get(t, "http://"+o.admin+"/metrics")
			if strings.Contains(string(metrics), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("metrics lack %s", want)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitMetric(`livecluster_conns_rejected_total{listener="http",reason="header_timeout"} 1`)

	// Per IP: three kept-alive connections (each served one request, so
	// the header deadline no longer applies) fill 127.0.0.1's three; the
	// next request is answered 429.
	resp.Body.Close()
	for range 3 {
		c, err := net.Dial("tcp", o.http)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /crossdomain.xml HTTP/1.1\r\nHost: x\r\n\r\n")
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	waitMetric(`livecluster_conns_open{listener="http"} 3`)
	code, body := rawGET(t, o.http, "/live/one.m3u8")
	if code != http.StatusTooManyRequests || !strings.Contains(body, "too many connections from your address") {
		t.Errorf("fourth connection from one address: %d %q, want 429", code, body)
	}
	for _, want := range []string{
		`livecluster_conns_rejected_total{listener="rtmp",reason="max_streams"} 1`,
		`livecluster_conns_rejected_total{listener="rtmp",reason="max_players"} 1`,
		`livecluster_conns_rejected_total{listener="http",reason="header_timeout"} 1`,
		`livecluster_conns_rejected_total{listener="http",reason="max_conns_per_ip"} 1`,
	} {
		waitMetric(want)
	}
	if t.Failed() {
		for _, l := range strings.Split(string(metrics), "\n") {
			if strings.Contains(l, "livecluster_conns") {
				t.Log(l)
			}
		}
	}
	o.noErrors(t)
}
