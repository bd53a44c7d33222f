package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/proctest"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stats"
)

var ocmBin, originBin, loadgenBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // the multi-process tests skip
	}
	dir, err := os.MkdirTemp("", "loadgen-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx := context.Background()
	for _, b := range []struct {
		dst *string
		pkg string
	}{
		{&ocmBin, "github.com/livecluster/livecluster/ocm/cmd/ocm"},
		{&originBin, "github.com/livecluster/livecluster/origin/cmd/origin"},
		{&loadgenBin, "github.com/livecluster/livecluster/scripts/loadgen"},
	} {
		if *b.dst, err = proctest.Build(ctx, dir, b.pkg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestParseFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "-url is required"},
		{[]string{"-url", "rtmp://h/a/b"}, "either -players"},
		{[]string{"-url", "rtmp://h/a/b", "-players", "1", "-publish", "1"}, "either -players"},
		{[]string{"-url", "rtmp://h/a/b", "-publish", "1"}, "-flv"},
		{[]string{"-url", "http://h/a/b.flv", "-publish", "1", "-flv", "x"}, "rtmp://"},
		{[]string{"-url", "rtmp://h/a/b", "-publish", "2", "-flv", "x"}, "%d"},
		{[]string{"-url", "rtmp://h/a/b", "-players", "1", "-duration", "25h"}, "-duration"},
		{[]string{"-url", "rtmp://h/a/b", "-players", "1", "-ramp", "0"}, "-ramp"},
		{[]string{"-url", "rtmp://h/a/b", "-players", "1", "-pids", "12,abc"}, "-pids"},
		{[]string{"-url", "rtmp://h/a/b", "-players", "1", "extra"}, "unexpected"},
		{[]string{"-url", "http://h/a/b.m3u8", "-players", "1", "-hls-reload", "often"}, "-hls-reload"},
	} {
		_, err := parseFlags(c.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseFlags(%q) = %v, want an error containing %q", c.args, err, c.want)
		}
	}
	o, err := parseFlags([]string{"-url", "rtmp://h/a/s%d", "-players", "5", "-streams", "2", "-pids", "1, 2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.streamURL(3) != "rtmp://h/a/s1" || len(o.pids) != 2 {
		t.Fatalf("streamURL(3) = %s, pids %q", o.streamURL(3), o.pids)
	}
}

func slow(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process test; skipped with -short")
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// cluster is a real OCM (embedded etcd on free ports) and one origin.
type cluster struct {
	origin                *proctest.Proc
	rtmp, http, originPID string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	dir := t.TempDir()
	ocmCfg := filepath.Join(dir, "ocm.yaml")
	writeFile(t, ocmCfg, fmt.Sprintf("etcd:\n  clientURL: http://%s\n  peerURL: http://%s\n  dataDir: %s\nshutdown:\n  startWait: 0s\n  finalWait: 0s\n",
		proctest.FreeAddr(t), proctest.FreeAddr(t), filepath.Join(dir, "etcd")))
	ocmAddr, ocmAdmin := proctest.FreeAddr(t), proctest.FreeAddr(t)
	proctest.Start(t, "ocm", ocmBin, "--config", ocmCfg, "--node-id", "ocm-1", "--grpc-listen", ocmAddr, "--admin-listen", ocmAdmin)
	proctest.WaitHTTP(t, "http://"+ocmAdmin+"/readyz", 200, 20*time.Second)

	c := &cluster{rtmp: proctest.FreeAddr(t), http: proctest.FreeAddr(t)}
	admin := proctest.FreeAddr(t)
	cfg := filepath.Join(dir, "origin.yaml")
	writeFile(t, cfg, "shutdown:\n  startWait: 0s\n  finalWait: 0s\n  drainTimeout: 1s\nhls:\n  fragment: 1s\n")
	c.origin = proctest.Start(t, "origin", originBin, "--config", cfg, "--node-id", "origin-1", "--ocm", ocmAddr,
		"--admin-listen", admin, "--rtmp-listen", c.rtmp, "--http-listen", c.http,
		"--hls-dir", filepath.Join(dir, "hls"), "--advertise-host", "127.0.0.1")
	proctest.WaitHTTP(t, "http://"+admin+"/readyz", 200, 20*time.Second)
	c.originPID = strconv.Itoa(c.origin.Cmd.Process.Pid)
	return c
}

// loadgen runs the load generator with args plus -json FILE and returns
// the process and the summary's path.
func loadgen(t *testing.T, name string, args ...string) (*proctest.Proc, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), name+".json")
	return proctest.Start(t, name, loadgenBin, append(args, "-json", out)...), out
}

func summary(t *testing.T, p *proctest.Proc, path string, timeout time.Duration, wantCode int) stats.Summary {
	t.Helper()
	if code := p.Wait(timeout); code != wantCode {
		t.Fatalf("%s exited %d, want %d\n%s", p.Name, code, wantCode, p.Output())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: no summary: %v", p.Name, err)
	}
	var s stats.Summary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: summary is not JSON: %v\n%s", p.Name, err, b)
	}
	// Every documented field is present in the file, not just zero-valued.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"mode", "url", "protocol", "duration_s", "requested", "launched", "connected",
		"max_concurrent", "connected_end", "bytes", "mbps", "errors", "errors_total", "first_errors", "late_max",
		"late_clients", "late_after_s", "startup_ms", "latency_ms", "server", "loadgen"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("%s: summary lacks %q", p.Name, f)
		}
	}
	return s
}

// healthy checks a play run in which every player should have played.
func healthy(t *testing.T, name string, s stats.Summary, players int, stamped bool) {
	t.Helper()
	if s.Connected != int64(players) || s.MaxConcurrent != int64(players) || s.Launched != int64(players) {
		t.Errorf("%s: connected %d, max concurrent %d, launched %d; want %d", name, s.Connected, s.MaxConcurrent, s.Launched, players)
	}
	if s.Bytes <= 0 || s.ErrorsTotal != 0 || s.LateMax != 0 || s.LateClients != 0 {
		t.Errorf("%s: bytes %d, errors %v, late max %d, late clients %d", name, s.Bytes, s.Errors, s.LateMax, s.LateClients)
	}
	if s.StartupMS == nil || s.StartupMS.N != int64(players) || s.StartupMS.P50 <= 0 {
		t.Errorf("%s: start-up latency %+v, want one per player", name, s.StartupMS)
	}
	if stamped {
		// Loopback through one origin: well under a second.
		if s.LatencyMS == nil || s.LatencyMS.N == 0 || s.LatencyMS.P50 <= 0 || s.LatencyMS.P50 > 1000 {
			t.Errorf("%s: end-to-end latency %+v, want stamps read back", name, s.LatencyMS)
		}
	}
	if s.Server == nil || s.Server.RSSPeakBytes <= 0 || s.Server.PIDs[0] == "" {
		t.Errorf("%s: server figures %+v", name, s.Server)
	}
}

// TestPublishAndPlay publishes two streams with loadgen's publisher mode
// to a real origin and plays them with RTMP, HTTP-FLV and HLS players.
func TestPublishAndPlay(t *testing.T) {
	slow(t)
	ffmpeg := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	flv := proctest.MakeTestFLV(t, ffmpeg, t.TempDir(), 4, 30)
	c := startCluster(t)

	pub, pubJSON := loadgen(t, "publisher", "-publish", "2", "-flv", flv,
		"-url", "rtmp://"+c.rtmp+"/live/lg%d", "-duration", "45s", "-pids", c.originPID)
	pub.WaitOutput("connected=2 ", 15*time.Second)
	// HLS needs a few 1 s segments before a player starts 3 from the end.
	time.Sleep(3 * time.Second)

	const players = 3
	common := []string{"-players", strconv.Itoa(players), "-ramp", "20", "-duration", "6s", "-pids", c.originPID}
	rtmpP, rtmpJSON := loadgen(t, "rtmp-players", append(common, "-url", "rtmp://"+c.rtmp+"/live/lg0")...)
	flvP, flvJSON := loadgen(t, "flv-players", append(common, "-url", "http://"+c.http+"/live/lg1.flv")...)
	hlsP, hlsJSON := loadgen(t, "hls-players", append(common, "-url", "http://"+c.http+"/live/lg0.m3u8")...)
	// Absent streams: each player counts an error and the run ends by
	// itself long before its 30 s duration.
	absent := map[string]string{
		"rtmp":    "rtmp://" + c.rtmp + "/live/absent",
		"httpflv": "http://" + c.http + "/live/absent.flv",
		"hls":     "http://" + c.http + "/live/absent.m3u8",
	}
	type run struct {
		p    *proctest.Proc
		json string
	}
	absentRuns := map[string]run{}
	for proto, u := range absent {
		p, j := loadgen(t, "absent-"+proto, "-url", u, "-players", "1", "-duration", "30s", "-stall", "5s")
		absentRuns[proto] = run{p, j}
	}

	s := summary(t, rtmpP, rtmpJSON, 30*time.Second, 0)
	healthy(t, "rtmp", s, players, true)
	s = summary(t, flvP, flvJSON, 30*time.Second, 0)
	healthy(t, "httpflv", s, players, true)
	s = summary(t, hlsP, hlsJSON, 30*time.Second, 0)
	healthy(t, "hls", s, players, false)
	if s.Protocol != "hls" || s.Mode != "play" {
		t.Errorf("hls summary: protocol %q mode %q", s.Protocol, s.Mode)
	}

	for proto, r := range absentRuns {
		// 5 s stall + start: far less than the 30 s duration.
		s := summary(t, r.p, r.json, 15*time.Second, 1)
		if s.ErrorsTotal != 1 || len(s.Errors[proto]) != 1 || s.Connected != 0 {
			t.Errorf("absent stream over %s: errors %v, connected %d; want one %s error", proto, s.Errors, s.Connected, proto)
		}
		if s.DurationS > 12 {
			t.Errorf("absent stream over %s: ran %.1f s, want it to stop once its player failed", proto, s.DurationS)
		}
	}

	// The stamped stream still decodes cleanly: the SEI is ignorable. Only
	// the decoder's and demuxer's complaints count; ffmpeg's null muxer
	// warns about equal DTS after its frame-rate conversion whether or not
	// the stream is stamped.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ffmpeg, "-nostdin", "-v", "warning", "-i", "http://"+c.http+"/live/lg0.flv",
		"-t", "2", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Errorf("ffmpeg decoding the stamped stream: %v\n%s", err, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" && !strings.HasPrefix(l, "[null @") {
			t.Errorf("ffmpeg decoding the stamped stream: %s", l)
		}
	}

	// SIGINT ends the publisher early; it still writes its summary.
	pub.Signal(syscall.SIGINT)
	s = summary(t, pub, pubJSON, 10*time.Second, 0)
	if s.Mode != "publish" || s.Connected != 2 || s.MaxConcurrent != 2 || s.ErrorsTotal != 0 || s.LateMax != 0 || s.Bytes <= 0 {
		t.Errorf("publisher: %+v", s)
	}
	if s.DurationS >= 40 {
		t.Errorf("publisher ran %.1f s after SIGINT, want it stopped early", s.DurationS)
	}
	if s.Server == nil || s.Server.CPUPerS <= 0 {
		t.Errorf("publisher: the origin ingesting 2 streams used no CPU? %+v", s.Server)
	}
}
