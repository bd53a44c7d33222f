package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/media/httpflv"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/proctest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

var ocmBin, originBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test here runs processes; they skip
	}
	dir, err := os.MkdirTemp("", "origin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testDir = dir
	ctx := context.Background()
	ocmBin, err = proctest.Build(ctx, dir, "github.com/livecluster/livecluster/ocm/cmd/ocm")
	if err == nil {
		originBin, err = proctest.Build(ctx, dir, "github.com/livecluster/livecluster/origin/cmd/origin")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func slow(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process test; skipped with -short")
	}
}

// --- cluster helpers ---

type ocmProc struct {
	*proctest.Proc
	addr string
	api  ocmv1.OCMServiceClient
}

func startOCM(t *testing.T) *ocmProc {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ocm.yaml")
	writeFile(t, cfg, fmt.Sprintf("etcd:\n  clientURL: http://%s\n  peerURL: http://%s\n  dataDir: %s\nshutdown:\n  startWait: 0s\n  finalWait: 0s\n",
		proctest.FreeAddr(t), proctest.FreeAddr(t), filepath.Join(dir, "etcd")))
	addr, adm := proctest.FreeAddr(t), proctest.FreeAddr(t)
	p := proctest.Start(t, "ocm", ocmBin, "--config", cfg, "--node-id", "ocm-1", "--grpc-listen", addr, "--admin-listen", adm)
	proctest.WaitHTTP(t, "http://"+adm+"/readyz", 200, 20*time.Second)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &ocmProc{Proc: p, addr: addr, api: ocmv1.NewOCMServiceClient(conn)}
}

type originProc struct {
	*proctest.Proc
	id, rtmp, http, admin, hlsDir, root string
	cfg                                 string // the config file
}

// startOrigin starts an origin; extraYAML is appended to its config file,
// except a first line "drainTimeout=D" which sets shutdown.drainTimeout.
func startOrigin(t *testing.T, id, ocmAddr, extraYAML string, waitReady bool) *originProc {
	t.Helper()
	dir := t.TempDir()
	o := &originProc{id: id, rtmp: proctest.FreeAddr(t), http: proctest.FreeAddr(t), admin: proctest.FreeAddr(t),
		hlsDir: filepath.Join(dir, "hls"), root: filepath.Join(dir, "hls")}
	cfg := filepath.Join(dir, "origin.yaml")
	o.cfg = cfg
	drain := "20s"
	if d, ok := strings.CutPrefix(extraYAML, "drainTimeout="); ok {
		drain, extraYAML, _ = strings.Cut(d, "\n")
	}
	writeFile(t, cfg, "shutdown:\n  startWait: 300ms\n  finalWait: 100ms\n  drainTimeout: "+drain+"\nhls:\n  fragment: 1s\n"+extraYAML)
	o.Proc = proctest.Start(t, id, originBin, "--config", cfg, "--node-id", id, "--ocm", ocmAddr,
		"--admin-listen", o.admin, "--rtmp-listen", o.rtmp, "--http-listen", o.http,
		"--hls-dir", o.hlsDir, "--advertise-host", "127.0.0.1")
	if waitReady {
		proctest.WaitHTTP(t, "http://"+o.admin+"/readyz", 200, 20*time.Second)
	} else {
		proctest.WaitHTTP(t, "http://"+o.admin+"/healthz", 200, 20*time.Second)
	}
	return o
}

func (o *originProc) url(name string) string { return "rtmp://" + o.rtmp + "/live/" + name }

// noErrors fails when the origin logged at error level.
func (o *originProc) noErrors(t *testing.T) {
	t.Helper()
	for _, l := range strings.Split(o.Output(), "\n") {
		if strings.Contains(l, `"level":"ERROR"`) {
			t.Errorf("%s logged an error: %s", o.id, l)
		}
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// testDir (made by TestMain, removed when the tests end) holds the built
// binaries and the shared test FLV.
var testDir, testFLV string

func flvFile(t *testing.T) string {
	t.Helper()
	ff := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	if testFLV == "" {
		testFLV = proctest.MakeTestFLV(t, ff, testDir, 6, 30)
	}
	return testFLV
}

// publish starts ffmpeg publishing the test stream in a loop to url.
func publish(t *testing.T, url string) *proctest.Proc {
	t.Helper()
	ff := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	return proctest.Start(t, "ffmpeg-publish", ff, "-nostdin", "-v", "error", "-re", "-stream_loop", "-1",
		"-i", flvFile(t), "-c", "copy", "-f", "flv", url)
}

func key(name string) *ocmv1.StreamKey {
	return &ocmv1.StreamKey{Vhost: "default", App: "live", Name: name}
}

// waitOwner polls LookupStream until the stream is owned by owner ("" = not owned).
func waitOwner(t *testing.T, ocm *ocmProc, name, owner string, timeout time.Duration) *ocmv1.LookupStreamResponse {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := ocm.api.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: key(name)})
		cancel()
		switch {
		case owner == "" && status.Code(err) == codes.NotFound:
			return nil
		case err == nil && resp.GetStream().GetOwnerNodeId() == owner && owner != "":
			return resp
		case err == nil:
			last = "owned by " + resp.GetStream().GetOwnerNodeId()
		default:
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("stream %s: want owner %q within %v, last: %s", name, owner, timeout, last)
	return nil
}

// waitPlayable retries playOnce until the stream at url plays, or fails
// the test after timeout.
func waitPlayable(t *testing.T, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := playOnce(url)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not playable within %v: %v", url, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// playRTMP plays url with our client for d and returns the packets read;
// it checks the first video packet is a keyframe.
func playRTMP(t *testing.T, url string, d time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Second)
	defer cancel()
	c, err := rtmp.Dial(ctx, url, rtmp.Config{})
	if err != nil {
		t.Fatalf("play %s: %v", url, err)
	}
	defer c.Close()
	if err := c.Play(); err != nil {
		t.Fatalf("play %s: %v", url, err)
	}
	streams, err := c.Streams()
	if err != nil {
		t.Fatalf("play %s: streams: %v", url, err)
	}
	n, sawVideo := 0, false
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		pkt, err := c.ReadPacket()
		if err != nil {
			t.Fatalf("play %s: after %d packets: %v", url, n, err)
		}
		n++
		if !sawVideo && streams[pkt.Idx].Type().IsVideo() {
			sawVideo = true
			if !pkt.IsKeyFrame {
				t.Fatalf("play %s: first video packet is not a keyframe", url)
			}
		}
	}
	if !sawVideo || n < 10 {
		t.Fatalf("play %s: %d packets, video %v", url, n, sawVideo)
	}
	return n
}

func getJSON(t *testing.T, url string, out any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: decode: %v", url, err)
	}
	return resp.StatusCode
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp, b
}

// rawGET sends path byte for byte (no client-side cleaning) and returns the
// status code and body.
func rawGET(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// decodeErrors drops the null muxer's "non monotonically increasing dts"
// complaint: ffmpeg 5.1 sometimes guesses r_frame_rate 120/1 for a live
// 30 fps B-frame stream joined mid-stream and then rounds two output frames
// onto one tick. It is about ffmpeg's output timing, not the stream (the
// packets' dts are monotonic, see ffprobe -show_packets); anything else
// ffmpeg prints is kept.
func decodeErrors(out string) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" && !strings.Contains(l, "non monotonically increasing dts to muxer") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func waitExit(t *testing.T, p *proctest.Proc, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v", p.Name, timeout)
	}
}

// --- tests ---

// Publish, ownership, RTMP and HTTP-FLV play, HLS, API and kick, hostile
// keys, TCP health checks, and unpublish.
func TestPublishPlayHLS(t *testing.T) {
	slow(t)
	ffmpeg := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	ffprobe := proctest.Tool(t, "LIVECLUSTER_FFPROBE", "ffprobe")
	ocm := startOCM(t)
	o := startOrigin(t, "origin-a", ocm.addr, "", true)

	// Bare TCP connects, like a load balancer's check.
	for _, a := range []string{o.rtmp, o.http} {
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	pub := publish(t, o.url("s"))
	lk := waitOwner(t, ocm, "s", "origin-a", 10*time.Second)
	if lk.GetStream().GetPublishPath() != ocmv1.PublishPath_PUBLISH_PATH_DIRECT || lk.GetStream().GetEpoch() == 0 {
		t.Errorf("ownership record: %v", lk.GetStream())
	}
	if lk.GetOwner().GetAddresses().GetRtmp() != o.rtmp {
		t.Errorf("advertised rtmp address %q, want %q", lk.GetOwner().GetAddresses().GetRtmp(), o.rtmp)
	}

	// Join mid-GOP (GOP is 1 s): the first video packet must be a keyframe.
	time.Sleep(1500 * time.Millisecond)
	playRTMP(t, o.url("s"), time.Second)

	ffPlay := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-i", o.url("s"), "-t", "2", "-f", "null", "-")
	if out, err := ffPlay.CombinedOutput(); err != nil || decodeErrors(string(out)) != "" {
		t.Errorf("ffmpeg RTMP play: %v: %s", err, out)
	}
	probe := exec.Command(ffprobe, "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
		"http://"+o.http+"/live/s.flv")
	out, err := probe.Output()
	if err != nil || !strings.Contains(string(out), "h264") || !strings.Contains(string(out), "aac") {
		t.Errorf("ffprobe HTTP-FLV: %v: %s", err, out)
	}

	// HLS: wait for 4 segments, fetch them, check headers, decode the joins.
	base := "http://" + o.http + "/live/"
	var segs []string
	deadline := time.Now().Add(15 * time.Second)
	for len(segs) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("playlist has %d segments", len(segs))
		}
		time.Sleep(200 * time.Millisecond)
		resp, body := get(t, base+"s.m3u8")
		if resp.StatusCode != 200 {
			continue
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=1" {
			t.Errorf("playlist Cache-Control %q", cc)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("playlist without CORS header")
		}
		segs = segs[:0]
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasSuffix(l, ".ts") {
				segs = append(segs, l)
			}
		}
	}
	cat := filepath.Join(t.TempDir(), "cat.ts")
	f, err := os.Create(cat)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range segs {
		resp, body := get(t, base+s)
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Fatalf("GET %s: %s", s, resp.Status)
		}
		if cc := resp.Header.Get("Cache-Control"); !strings.HasPrefix(cc, "public, max-age=") || cc == "public, max-age=1" {
			t.Errorf("segment Cache-Control %q", cc)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "video/mp2t" {
			t.Errorf("segment Content-Type %q", ct)
		}
		f.Write(body)
	}
	f.Close()
	// -enc_time_base:v -1 keeps the demuxer's time base for the null muxer:
	// at a guessed 1/30 it rounds two frames joined mid-GOP onto one dts and
	// complains about the rounding, not the stream (see media/rtmp tests).
	if out, err := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-i", cat, "-enc_time_base:v", "-1", "-f", "null", "-").CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("decode %d concatenated segments: %v: %s", len(segs), err, out)
	}
	if out, err := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-i", base+"s.m3u8", "-t", "3", "-enc_time_base:v", "-1", "-f", "null", "-").CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("ffmpeg HLS play: %v: %s", err, out)
	}

	// API: versions, streams, clients; kick an HTTP-FLV player.
	var ver struct {
		Code   int    `json:"code"`
		Server string `json:"server"`
		Data   struct {
			Version string `json:"version"`
		} `json:"data"`
	}
	if getJSON(t, "http://"+o.http+"/api/v1/versions", &ver); ver.Code != 0 || ver.Server != "origin-a" || ver.Data.Version == "" {
		t.Errorf("versions: %+v", ver)
	}
	var sum struct {
		Code int `json:"code"`
		Data struct {
			OK bool `json:"ok"`
		} `json:"data"`
	}
	if getJSON(t, "http://"+o.http+"/api/v1/summaries", &sum); sum.Code != 0 || !sum.Data.OK {
		t.Errorf("summaries: %+v", sum)
	}
	var streams struct {
		Code    int `json:"code"`
		Streams []struct {
			ID    string `json:"id"`
			Name  string `json:"name"`
			Owner struct {
				Epoch int64 `json:"epoch"`
			} `json:"owner"`
		} `json:"streams"`
	}
	if getJSON(t, "http://"+o.admin+"/api/v1/streams", &streams); streams.Code != 0 || len(streams.Streams) != 1 ||
		streams.Streams[0].Name != "s" || streams.Streams[0].Owner.Epoch != lk.GetStream().GetEpoch() {
		t.Errorf("streams (admin port): %+v", streams)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	player, err := httpflv.Dial(ctx, "http://"+o.http+"/live/s.flv", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer player.Close()
	if _, err := player.Streams(); err != nil {
		t.Fatal(err)
	}
	type client struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Publish bool   `json:"publish"`
	}
	var cl struct {
		Code    int      `json:"code"`
		Clients []client `json:"clients"`
	}
	getJSON(t, "http://"+o.http+"/api/v1/clients", &cl)
	var flvID string
	pubs := 0
	for _, c := range cl.Clients {
		if c.Type == "flv-play" {
			flvID = c.ID
		}
		if c.Publish {
			pubs++
		}
	}
	if cl.Code != 0 || flvID == "" || pubs != 1 {
		t.Fatalf("clients: %+v", cl)
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+o.http+"/api/v1/clients/"+flvID, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("DELETE client: %v %v", err, resp)
	}
	resp.Body.Close()
	kicked := make(chan error, 1)
	go func() {
		for {
			if _, err := player.ReadPacket(); err != nil {
				kicked <- err
				return
			}
		}
	}()
	select {
	case <-kicked:
	case <-time.After(5 * time.Second):
		t.Fatal("kicked HTTP-FLV player still receives")
	}
	var nf struct {
		Code int `json:"code"`
	}
	// The player sees its connection end before the server's handler has
	// unlisted it: give the handler a moment.
	st := 0
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		nf.Code = 0
		if st = getJSON(t, "http://"+o.http+"/api/v1/clients/"+flvID, &nf); st == 404 || time.Now().After(deadline) {
			break
		}
	}
	if st != 404 || nf.Code == 0 {
		t.Errorf("kicked client still listed: %d %+v", st, nf)
	}

	// Hostile keys, RTMP and HTTP: refused, and the stream plays on.
	for _, name := range []string{"..", "a..b", "a/b", strings.Repeat("x", 200), "a%20b"} {
		c, err := rtmp.Dial(ctx, o.url(name), rtmp.Config{})
		if err != nil {
			continue // refused at connect
		}
		if err := c.Publish(); err == nil {
			t.Errorf("publish of hostile name %q accepted", name)
		}
		c.Close()
	}
	for _, p := range []string{
		"/live/../../../../etc/passwd", "/live/..%2f..%2f..%2fetc%2fpasswd.m3u8", "/live/%2e%2e.m3u8",
		"/..%2f..%2fetc/passwd.ts", "/live/s%00.m3u8", "/live/s-..ts", "/live/..%2fs-1.ts",
		"/%2e%2e/s.flv", "/live/" + strings.Repeat("y", 300) + ".m3u8",
	} {
		code, body := rawGET(t, o.http, p)
		if code == 200 || strings.Contains(body, "root:") {
			t.Errorf("GET %s: %d %q", p, code, body)
		}
	}
	playRTMP(t, o.url("s"), 500*time.Millisecond)

	// Unpublish frees the key.
	pub.Signal(syscall.SIGTERM)
	waitExit(t, pub, 10*time.Second)
	waitOwner(t, ocm, "s", "", 10*time.Second)
	o.noErrors(t)
}

// A second origin refuses a key the first one owns; the first keeps flowing.
func TestSecondOriginRefused(t *testing.T) {
	slow(t)
	ffmpeg := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	ocm := startOCM(t)
	a := startOrigin(t, "origin-a", ocm.addr, "", true)
	b := startOrigin(t, "origin-b", ocm.addr, "", true)
	publish(t, a.url("dup"))
	waitOwner(t, ocm, "dup", "origin-a", 10*time.Second)

	cmd := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-re", "-i", flvFile(t), "-t", "3", "-c", "copy", "-f", "flv", b.url("dup"))
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("second publish on origin-b succeeded: %s", out)
	}
	if !strings.Contains(string(out), "already published on origin origin-a") {
		t.Errorf("ffmpeg did not print the owner: %s", out)
	}
	waitOwner(t, ocm, "dup", "origin-a", time.Second)
	playRTMP(t, a.url("dup"), time.Second)
	a.noErrors(t)
	b.noErrors(t)
}

// With the OCM down a new publish is refused clearly; an owned stream
// keeps flowing until the origin's local lease deadline (the last
// heartbeat's send + TTL - margin: at least 4.7 s after the kill with the
// default 10 s TTL), then it is fenced; an origin never registered refuses
// too.
func TestOCMDown(t *testing.T) {
	slow(t)
	ffmpeg := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	ocm := startOCM(t)
	a := startOrigin(t, "origin-a", ocm.addr, "ocm:\n  claimTimeout: 2s\n", true)
	pub := publish(t, a.url("kept"))
	waitOwner(t, ocm, "kept", "origin-a", 10*time.Second)
	// The claim comes before the publish goes live: wait until it plays,
	// so the stream is flowing when the OCM dies.
	waitPlayable(t, a.url("kept"), 10*time.Second)

	killed := time.Now()
	ocm.Cmd.Process.Kill()
	waitExit(t, ocm.Proc, 5*time.Second)
	playRTMP(t, a.url("kept"), time.Second)
	// Readiness holds through the blip.
	proctest.WaitHTTP(t, "http://"+a.admin+"/readyz", 200, time.Second)

	cmd := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-re", "-i", flvFile(t), "-t", "3", "-c", "copy", "-f", "flv", a.url("new"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unreachable") {
		t.Errorf("publish with the OCM down: err %v, output %s", err, out)
	}
	select {
	case <-pub.Done():
		if d := time.Since(killed); d > 8500*time.Millisecond {
			t.Errorf("publisher fenced %v after the OCM died, want by the lease deadline (< 8 s)", d)
		}
	case <-time.After(9 * time.Second):
		t.Error("owned stream not fenced 9 s after the OCM died")
	}

	// An origin that never registered refuses with its own message.
	n := startOrigin(t, "origin-n", proctest.FreeAddr(t), "", false)
	cmd = exec.Command(ffmpeg, "-nostdin", "-v", "error", "-re", "-i", flvFile(t), "-t", "3", "-c", "copy", "-f", "flv", n.url("x"))
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not registered") {
		t.Errorf("publish to an unregistered origin: err %v, output %s", err, out)
	}
	a.noErrors(t)
}

// SIGTERM drains: readiness fails at once, the node is DRAINING at the OCM,
// the process exits 0 once the publisher left (a) or at drainTimeout (b),
// and is deregistered with its streams freed.
func TestDrain(t *testing.T) {
	slow(t)
	ocm := startOCM(t)
	a := startOrigin(t, "origin-a", ocm.addr, "", true)
	b := startOrigin(t, "origin-b", ocm.addr, "drainTimeout=2s\n", true)
	pubA := publish(t, a.url("da"))
	pubB := publish(t, b.url("db"))
	waitOwner(t, ocm, "da", "origin-a", 10*time.Second)
	waitOwner(t, ocm, "db", "origin-b", 10*time.Second)

	a.Signal(syscall.SIGTERM)
	b.Signal(syscall.SIGTERM)
	// "At once": the signal is delivered asynchronously, so allow only the
	// delivery time, far below startWait.
	proctest.WaitHTTP(t, "http://"+a.admin+"/readyz", 503, 250*time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := ocm.api.ListNodes(context.Background(), &ocmv1.ListNodesRequest{State: ocmv1.NodeState_NODE_STATE_DRAINING})
		if err == nil && len(ln.GetNodes()) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes not DRAINING at the OCM: %v %v", ln, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Streams keep their owner during the drain.
	waitOwner(t, ocm, "da", "origin-a", time.Second)

	// a: the publisher leaves, a exits well before its 20 s drainTimeout.
	start := time.Now()
	pubA.Signal(syscall.SIGTERM)
	if code := a.Wait(10 * time.Second); code != 0 {
		t.Errorf("origin-a exit code %d", code)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("origin-a took %v to exit after its publisher left", d)
	}
	// b: the publisher stays; b closes it at drainTimeout and exits 0.
	if code := b.Wait(15 * time.Second); code != 0 {
		t.Errorf("origin-b exit code %d", code)
	}
	waitExit(t, pubB, 5*time.Second)

	waitOwner(t, ocm, "da", "", 5*time.Second)
	waitOwner(t, ocm, "db", "", 5*time.Second)
	ln, err := ocm.api.ListNodes(context.Background(), &ocmv1.ListNodesRequest{})
	if err != nil || len(ln.GetNodes()) != 0 {
		t.Errorf("nodes still registered: %v %v", ln, err)
	}
	a.noErrors(t)
	b.noErrors(t)
}

// Make-before-break: a forwarded publish of a stream owned by a DRAINING
// origin takes it over, and the draining origin lets its publisher go.
func TestTransferFromDrainingOrigin(t *testing.T) {
	slow(t)
	ocm := startOCM(t)
	a := startOrigin(t, "origin-a", ocm.addr, "", true)
	b := startOrigin(t, "origin-b", ocm.addr, "", true)
	oldPub := publish(t, a.url("mv?lc_forwarded_by=edge-1"))
	lk := waitOwner(t, ocm, "mv", "origin-a", 10*time.Second)
	if lk.GetStream().GetPublishPath() != ocmv1.PublishPath_PUBLISH_PATH_FORWARDED || lk.GetStream().GetForwardedBy() != "edge-1" {
		t.Fatalf("forwarded claim recorded as %v", lk.GetStream())
	}
	a.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := ocm.api.LookupStream(context.Background(), &ocmv1.LookupStreamRequest{Key: key("mv")})
		if err == nil && r.GetOwner().GetState() == ocmv1.NodeState_NODE_STATE_DRAINING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("origin-a not DRAINING: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	publish(t, b.url("mv?lc_forwarded_by=edge-1"))
	nlk := waitOwner(t, ocm, "mv", "origin-b", 10*time.Second)
	if nlk.GetStream().GetEpoch() <= lk.GetStream().GetEpoch() {
		t.Errorf("epoch did not advance: %d → %d", lk.GetStream().GetEpoch(), nlk.GetStream().GetEpoch())
	}
	waitExit(t, oldPub, 10*time.Second) // origin-a let its publisher go
	if code := a.Wait(10 * time.Second); code != 0 {
		t.Errorf("origin-a exit code %d", code)
	}
	waitOwner(t, ocm, "mv", "origin-b", time.Second) // a's deregistration did not free it
	playRTMP(t, b.url("mv"), time.Second)
	a.noErrors(t)
	b.noErrors(t)
}

// index.html and crossdomain.xml are written when missing, never
// overwritten, and served.
func TestDefaultFiles(t *testing.T) {
	slow(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "www")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "index.html"), "mine")
	o := startOrigin(t, "origin-f", proctest.FreeAddr(t), "http:\n  root: "+root+"\n", false)
	b, err := os.ReadFile(filepath.Join(root, "index.html"))
	if err != nil || string(b) != "mine" {
		t.Errorf("index.html overwritten: %q %v", b, err)
	}
	x, err := os.ReadFile(filepath.Join(root, "crossdomain.xml"))
	if err != nil || !strings.Contains(string(x), "cross-domain-policy") {
		t.Errorf("crossdomain.xml not written: %v", err)
	}
	resp, body := get(t, "http://"+o.http+"/")
	if resp.StatusCode != 200 || string(body) != "mine" {
		t.Errorf("GET /: %s %q", resp.Status, body)
	}
	resp, body = get(t, "http://"+o.http+"/crossdomain.xml")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "allow-access-from") {
		t.Errorf("GET /crossdomain.xml: %s", resp.Status)
	}
	// Not ready without the OCM, but alive.
	resp, _ = get(t, "http://"+o.admin+"/readyz")
	if resp.StatusCode != 503 {
		t.Errorf("readyz without an OCM: %s", resp.Status)
	}
	o.noErrors(t)
}
