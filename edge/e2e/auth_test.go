package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/proctest"
)

const (
	userKeys     = `["k2:0123456789abcdef-key-two", "k1:0123456789abcdef-key-one"]`
	internalKeys = `["i1:internal-0123456789abcdef"]`
)

// authYAML requires tokens to publish and play, with the internal legs'
// keys; hooks, when given, are appended under auth.
func authYAML(hooks string) string {
	return fmt.Sprintf(`
auth:
  token:
    publish: true
    play: true
    keys: %s
  internal:
    keys: %s
%s`, userKeys, internalKeys, hooks)
}

func (c *cluster) startOriginWith(id, extra string) *node {
	t := c.t
	t.Helper()
	n := &node{id: id, rtmp: proctest.FreeAddr(t), http: proctest.FreeAddr(t), admin: proctest.FreeAddr(t)}
	cfg := writeFile(t, filepath.Join(c.dir, id+".yaml"), "hls:\n  fragment: 1s\nshutdown:\n  startWait: 0s\n  finalWait: 0s\n"+extra)
	n.Proc = proctest.Start(t, id, bins.origin, "--config", cfg, "--node-id", id, "--ocm", c.ocmAddr,
		"--rtmp-listen", n.rtmp, "--http-listen", n.http, "--admin-listen", n.admin,
		"--advertise-host", "127.0.0.1", "--hls-dir", filepath.Join(c.dir, id+"-hls"))
	proctest.WaitHTTP(t, "http://"+n.admin+"/readyz", 200, 30*time.Second)
	return n
}

func (c *cluster) startEdgeWith(id, extra string) *node {
	t := c.t
	t.Helper()
	n := &node{id: id, rtmp: proctest.FreeAddr(t), http: proctest.FreeAddr(t), admin: proctest.FreeAddr(t)}
	cfg := writeFile(t, filepath.Join(c.dir, id+".yaml"), edgeConfig+extra)
	n.Proc = proctest.Start(t, id, bins.edge, "--config", cfg, "--node-id", id, "--ocm", c.ocmAddr,
		"--rtmp-listen", n.rtmp, "--http-listen", n.http, "--admin-listen", n.admin,
		"--advertise-host", "127.0.0.1", "--log-level", "debug")
	proctest.WaitHTTP(t, "http://"+n.admin+"/readyz", 200, 30*time.Second)
	return n
}

// mint runs the origin binary's token subcommand, as an operator would.
func (c *cluster) mint(t *testing.T, action, name string, extra ...string) string {
	t.Helper()
	cfg := writeFile(t, filepath.Join(c.dir, "mint.yaml"), authYAML(""))
	args := append([]string{"token", "--config", cfg, "--action", action, "--app", "live", "--stream", name}, extra...)
	out, err := exec.Command(bins.origin, args...).Output()
	if err != nil {
		t.Fatalf("origin token %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// publishOnce runs ffmpeg pushing 3 s of the test stream and returns its
// exit error and stderr (a refused publish exits at once).
func (c *cluster) publishOnce(t *testing.T, u string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.ffmpeg, "-nostdin", "-v", "error", "-re", "-t", "3", "-i", c.flv, "-c", "copy", "-f", "flv", u)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

// probe runs ffprobe on u: its exit error and output.
func probe(t *testing.T, u string) (string, error) {
	t.Helper()
	ffprobe := proctest.Tool(t, "LIVECLUSTER_FFPROBE", "ffprobe")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ffprobe, "-v", "error", "-rw_timeout", "10000000", "-show_entries", "stream=codec_name", "-of", "csv=p=0", u).CombinedOutput()
	return string(out), err
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	// FLV never ends: a few KB tell it is flowing.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b)
}

func cacheControl(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Cache-Control")
}

// TestTokensThroughOriginAndEdge: real ffmpeg and ffprobe with and without
// valid tokens, on an origin and through an edge whose legs to the origin
// carry only the internal credential.
func TestTokensThroughOriginAndEdge(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	o := c.startOriginWith("origin-a", authYAML(""))
	e := c.startEdgeWith("edge-a", authYAML(""))

	// Refused publishes: no token, another stream's token, a play token,
	// an expired one. Each gets the reason, and no claim reaches the OCM.
	for _, bad := range []struct{ u, want string }{
		{"rtmp://" + o.rtmp + "/live/s1", "token is required"},
		{"rtmp://" + e.rtmp + "/live/s1", "token is required"},
		{"rtmp://" + o.rtmp + "/live/s1?token=" + c.mint(t, "publish", "other"), "token not valid for publish"},
		{"rtmp://" + e.rtmp + "/live/s1?token=" + c.mint(t, "play", "s1"), "token not valid for publish"},
	} {
		stderr, err := c.publishOnce(t, bad.u)
		if err == nil || !strings.Contains(stderr, bad.want) {
			t.Errorf("publish %s: err %v, stderr %q; want a refusal saying %q", bad.u, err, stderr, bad.want)
		}
	}
	if _, err := c.lookup("s1"); err == nil {
		t.Fatal("a refused publish claimed the stream")
	}

	// A valid token through the edge: forwarded to the origin on the
	// internal credential.
	pub := c.publish("ffmpeg-s1", "rtmp://"+e.rtmp+"/live/s1?token="+c.mint(t, "publish", "s1"))
	c.waitOwner("s1", "origin-a", 15*time.Second)

	play := c.mint(t, "play", "s1")
	// Players: refused without or with a wrong token, on both nodes.
	for _, u := range []string{"rtmp://" + e.rtmp + "/live/s1", "rtmp://" + o.rtmp + "/live/s1",
		"rtmp://" + e.rtmp + "/live/s1?token=" + c.mint(t, "publish", "s1")} {
		if out, err := probe(t, u); err == nil {
			t.Errorf("ffprobe %s allowed: %s", u, out)
		}
	}
	for _, c := range []struct {
		u    string
		want int
	}{
		{"http://" + e.http + "/live/s1.flv", 401},
		{"http://" + e.http + "/live/s1.flv?token=v1.k1.1.AAAA", 403},
		{"http://" + o.http + "/live/s1.flv", 401},
		{"http://" + e.http + "/live/s1.m3u8", 401},
		{"http://" + o.http + "/live/s1.m3u8", 401},
		{"http://" + o.http + "/live/s1-0.ts", 401},
	} {
		if code, body := httpGet(t, c.u); code != c.want {
			t.Errorf("GET %s: %d %q, want %d", c.u, code, body, c.want)
		}
	}
	// ... and allowed with the play token: ffprobe over RTMP and HTTP-FLV
	// at the edge (the edge pulls from the origin on its own credential)
	// and at the origin.
	for _, u := range []string{
		"rtmp://" + e.rtmp + "/live/s1?token=" + play,
		"http://" + e.http + "/live/s1.flv?token=" + url.QueryEscape(play),
		"rtmp://" + o.rtmp + "/live/s1?token=" + play,
	} {
		if out, err := probe(t, u); err != nil || !strings.Contains(out, "h264") {
			t.Errorf("ffprobe %s: %v %q", u, err, out)
		}
	}

	// HLS at the edge and at the origin: the playlist's segment URIs carry
	// the token, so a player that does not propagate query strings works;
	// ffprobe reads the stream through it.
	for _, n := range []*node{e, o} {
		pl := "http://" + n.http + "/live/s1.m3u8?token=" + url.QueryEscape(play)
		var (
			body string
			code int
		)
		waitFor(t, n.id+" HLS playlist", 20*time.Second, func() bool {
			code, body = httpGet(t, pl)
			if code == 200 && strings.Contains(body, ".ts") {
				return true
			}
			t.Logf("%s HLS playlist: %d %q", n.id, code, body)
			return false
		})
		var seg string
		for _, l := range strings.Split(body, "\n") {
			if strings.HasSuffix(strings.SplitN(l, "?", 2)[0], ".ts") {
				seg = l
			}
		}
		if !strings.Contains(seg, "token="+url.QueryEscape(play)) {
			t.Fatalf("%s: segment URI %q does not carry the token:\n%s", n.id, seg, body)
		}
		if cc := cacheControl(t, pl); !strings.Contains(cc, "private") {
			t.Errorf("%s: playlist with a token is cacheable by shared caches: %q", n.id, cc)
		}
		if code, _ := httpGet(t, "http://"+n.http+"/live/"+seg); code != 200 {
			t.Errorf("%s: segment with the carried token: %d", n.id, code)
		}
		if code, _ := httpGet(t, "http://"+n.http+"/live/"+strings.SplitN(seg, "?", 2)[0]); code != 401 {
			t.Errorf("%s: segment without token: %d, want 401", n.id, code)
		}
		if out, err := probe(t, pl); err != nil || !strings.Contains(out, "h264") {
			t.Errorf("ffprobe %s: %v %q", pl, err, out)
		}
	}

	// A forged forwarded-by marker without the internal credential is refused
	// even with a valid user token (it could take a draining stream over).
	stderr, err := c.publishOnce(t, "rtmp://"+o.rtmp+"/live/s2?lc_forwarded_by=edge-a&token="+c.mint(t, "publish", "s2"))
	if err == nil || !strings.Contains(stderr, "internal credential") {
		t.Errorf("forged forward: err %v, %q", err, stderr)
	}
	// Key rotation through a live reload of the edge's file: k3 added
	// first, k1 removed. No restart: the edge process stays the same.
	k1Play := c.mint(t, "play", "s1", "--kid", "k1")
	if code, _ := httpGet(t, "http://"+e.http+"/live/s1.flv?token="+url.QueryEscape(k1Play)); code != 200 {
		t.Fatalf("k1 token before the rotation: %d", code)
	}
	rotated := strings.Replace(authYAML(""), userKeys, `["k3:0123456789abcdef-key-three", "k2:0123456789abcdef-key-two"]`, 1)
	writeFile(t, filepath.Join(c.dir, "mint3.yaml"), rotated)
	out, err := exec.Command(bins.origin, "token", "--config", filepath.Join(c.dir, "mint3.yaml"), "--action", "play",
		"--app", "live", "--stream", "s1").Output()
	if err != nil {
		t.Fatal(err)
	}
	k3Play := strings.TrimSpace(string(out))
	if code, _ := httpGet(t, "http://"+e.http+"/live/s1.flv?token="+url.QueryEscape(k3Play)); code != 403 {
		t.Fatalf("k3 token before the rotation: %d, want 403", code)
	}
	writeFile(t, filepath.Join(c.dir, "edge-a.yaml"), edgeConfig+rotated)
	waitFor(t, "k3 accepted after the reload", 15*time.Second, func() bool {
		code, _ := httpGet(t, "http://"+e.http+"/live/s1.flv?token="+url.QueryEscape(k3Play))
		return code == 200
	})
	if code, _ := httpGet(t, "http://"+e.http+"/live/s1.flv?token="+url.QueryEscape(k1Play)); code != 403 {
		t.Errorf("k1 token after its removal: %d, want 403", code)
	}
	if code, _ := httpGet(t, "http://"+e.http+"/live/s1.flv?token="+url.QueryEscape(play)); code != 200 {
		t.Errorf("k2 token (kept) after the rotation: %d", code)
	}
	if e.Exited() {
		t.Fatal("the edge restarted")
	}
	pub.Stop(5 * time.Second)
}

// TestHookRefuses: an edge whose on_publish and on_play hooks refuse some
// streams; a refused publisher never reaches the OCM, a refused player never
// makes the edge pull; on_unpublish and on_stop are told.
func TestHookRefuses(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var mu sync.Mutex
	var got []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		_ = json.NewDecoder(r.Body).Decode(&b)
		mu.Lock()
		got = append(got, b)
		mu.Unlock()
		if strings.Contains(fmt.Sprint(b["stream"]), "banned") || strings.Contains(fmt.Sprint(b["param"]), "user=eve") {
			fmt.Fprint(w, `{"code":403,"msg":"banned by policy"}`)
			return
		}
		fmt.Fprint(w, `{"code":0}`)
	}))
	t.Cleanup(hook.Close)
	actions := func(a string) []map[string]any {
		mu.Lock()
		defer mu.Unlock()
		var out []map[string]any
		for _, b := range got {
			if b["action"] == a {
				out = append(out, b)
			}
		}
		return out
	}
	// The origin has no hooks: it trusts the edge's legs (internal keys).
	o := c.startOriginWith("origin-h", "auth:\n  internal:\n    keys: "+internalKeys+"\n  token:\n    publish: true\n    keys: "+userKeys+"\n")
	_ = o
	e := c.startEdgeWith("edge-h", fmt.Sprintf(`
auth:
  internal:
    keys: %s
  hooks:
    onConnect: %[2]s/on_connect
    onPublish: %[2]s/on_publish
    onUnpublish: %[2]s/on_unpublish
    onPlay: %[2]s/on_play
    onStop: %[2]s/on_stop
    timeout: 2s
`, internalKeys, hook.URL))

	stderr, err := c.publishOnce(t, "rtmp://"+e.rtmp+"/live/banned1")
	if err == nil || !strings.Contains(stderr, "banned by policy") {
		t.Fatalf("banned publish: err %v, %q", err, stderr)
	}
	if _, err := c.lookup("banned1"); err == nil {
		t.Fatal("refused publish claimed at the OCM")
	}
	if len(actions("on_connect")) == 0 {
		t.Error("on_connect not called")
	}
	if b := actions("on_publish"); len(b) != 1 || b[0]["app"] != "live" || b[0]["stream"] != "banned1" ||
		b[0]["server_id"] != "edge-h" || b[0]["ip"] != "127.0.0.1" || b[0]["vhost"] != "default" {
		t.Errorf("on_publish bodies %v", b)
	}

	pub := c.publish("ffmpeg-ok", "rtmp://"+e.rtmp+"/live/ok1")
	c.waitOwner("ok1", "origin-h", 15*time.Second)
	// A refused player: 403, and the edge opens no upstream for it.
	if code, body := httpGet(t, "http://"+e.http+"/live/ok1.flv?user=eve"); code != 403 || !strings.Contains(body, "banned by policy") {
		t.Errorf("eve: %d %q", code, body)
	}
	if out, err := probe(t, "rtmp://"+e.rtmp+"/live/ok1?user=eve"); err == nil {
		t.Errorf("eve over RTMP allowed: %s", out)
	}
	if n := metric(t, e.admin, "livecluster_edge_upstream_dials_total"); n != 0 {
		t.Errorf("refused players opened %v upstreams", n)
	}
	if out, err := probe(t, "http://"+e.http+"/live/ok1.flv?user=bob"); err != nil || !strings.Contains(out, "h264") {
		t.Fatalf("bob: %v %q", err, out)
	}
	waitFor(t, "on_stop", 10*time.Second, func() bool { return len(actions("on_stop")) > 0 })
	pub.Stop(5 * time.Second)
	waitFor(t, "on_unpublish", 10*time.Second, func() bool { return len(actions("on_unpublish")) > 0 })
	if b := actions("on_unpublish"); b[0]["stream"] != "ok1" {
		t.Errorf("on_unpublish %v", b)
	}
}
