// Package e2e tests the edge binary in a real cluster on loopback: the ocm
// binary (embedded etcd), origin binaries and edge binaries as child
// processes, real ffmpeg publishers and ffprobe, and our own RTMP and
// HTTP-FLV clients for the precise checks.
//
// Every test runs in parallel with the others (t.Parallel; go test's
// -parallel, GOMAXPROCS by default, bounds how many at once): each starts a
// cluster of its own (its own OCM and etcd, ports from FreeAddr, its own
// t.TempDir), so no two share a process, a port, a file or a stream.
// Settings for one child go in that child's environment (startEdgeEnv),
// never t.Setenv. Most of a test's time is waiting (publishers in real
// time, leases, timeouts), which is why they overlap well.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nareix/joy4/av"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/livecluster/livecluster/media/httpflv"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/proctest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

var bins struct {
	ocm, origin, edge string
}

func TestMain(m *testing.M) {
	if isShort() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "edge-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The three builds at once: each ends in a link of its own, and the
	// package's time is on the suite's critical path.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	var (
		wg   sync.WaitGroup
		errs = make([]error, 3)
	)
	for i, b := range []struct {
		dst *string
		pkg string
	}{
		{&bins.ocm, "github.com/livecluster/livecluster/ocm/cmd/ocm"},
		{&bins.origin, "github.com/livecluster/livecluster/origin/cmd/origin"},
		{&bins.edge, "github.com/livecluster/livecluster/edge/cmd/edge"},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b.dst == &bins.edge && os.Getenv("EDGE_E2E_RACE") != "" {
				// The edge under the race detector: its goroutines are the
				// ones under test here.
				p := filepath.Join(dir, "edge-race")
				cmd := exec.CommandContext(ctx, "go", "build", "-race", "-trimpath", "-o", p, b.pkg)
				cmd.Stderr = os.Stderr
				if err := cmd.Run(); err != nil {
					errs[i] = fmt.Errorf("go build -race %s: %w", b.pkg, err)
					return
				}
				*b.dst = p
				return
			}
			*b.dst, errs[i] = proctest.Build(ctx, dir, b.pkg)
		}()
	}
	wg.Wait()
	cancel()
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// isShort reads -test.short before flag parsing has happened in TestMain.
func isShort() bool {
	for _, a := range os.Args[1:] {
		if a == "-test.short" || a == "-test.short=true" || a == "-short" {
			return true
		}
	}
	return false
}

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process test; skipped with -short")
	}
}

// node is one running binary.
type node struct {
	*proctest.Proc
	id                string
	rtmp, http, admin string
}

type cluster struct {
	t       *testing.T
	dir     string
	ocmAddr string
	ocm     *proctest.Proc
	api     ocmv1.OCMServiceClient
	ffmpeg  string
	flv     string
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterTTL(t, "3s")
}

// newClusterTTL starts the OCM with the given lease TTL (a short one makes
// failovers quick; fencing stops an origin's streams TTL minus its margin
// after the OCM goes away).
func newClusterTTL(t *testing.T, leaseTTL string) *cluster {
	t.Helper()
	skipShort(t)
	c := &cluster{t: t, dir: t.TempDir()}
	c.ffmpeg = proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	c.flv = proctest.MakeTestFLV(t, c.ffmpeg, c.dir, 10, 30)
	c.ocmAddr = proctest.FreeAddr(t)
	admin := proctest.FreeAddr(t)
	cfg := writeFile(t, filepath.Join(c.dir, "ocm.yaml"), fmt.Sprintf(`
leaseTTL: %s
etcd:
  clientURL: http://%s
  peerURL: http://%s
shutdown:
  startWait: 0s
  finalWait: 0s
`, leaseTTL, proctest.FreeAddr(t), proctest.FreeAddr(t)))
	c.ocm = proctest.Start(t, "ocm", bins.ocm, "--config", cfg, "--node-id", "ocm-0",
		"--grpc-listen", c.ocmAddr, "--admin-listen", admin, "--data-dir", filepath.Join(c.dir, "etcd"))
	proctest.WaitHTTP(t, "http://"+admin+"/readyz", 200, 30*time.Second)
	cc, err := grpc.NewClient(c.ocmAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c.api = ocmv1.NewOCMServiceClient(cc)
	return c
}

func (c *cluster) startOrigin(id string) *node {
	c.t.Helper()
	return c.startOriginAdvertising(id, "127.0.0.1")
}

// startOriginAdvertising starts an origin listening on 127.0.0.1 whose
// advertised addresses (those edges dial) name host with the same ports: a
// proxy on another loopback address can stand between it and the edges.
func (c *cluster) startOriginAdvertising(id, host string) *node {
	t := c.t
	t.Helper()
	n := &node{id: id, rtmp: proctest.FreeAddr(t), http: proctest.FreeAddr(t), admin: proctest.FreeAddr(t)}
	cfg := writeFile(t, filepath.Join(c.dir, id+".yaml"), `
hls:
  fragment: 1s
shutdown:
  startWait: 300ms
  drainTimeout: 15s
  finalWait: 0s
`)
	n.Proc = proctest.Start(t, id, bins.origin, "--config", cfg, "--node-id", id, "--ocm", c.ocmAddr,
		"--rtmp-listen", n.rtmp, "--http-listen", n.http, "--admin-listen", n.admin,
		"--advertise-host", host, "--hls-dir", filepath.Join(c.dir, id+"-hls"))
	proctest.WaitHTTP(t, "http://"+n.admin+"/readyz", 200, 30*time.Second)
	return n
}

// edgeConfig is the YAML the test edges run with: short timeouts so the
// tests see idle closes and not-found answers quickly. The forward's
// safety-net poll is left at its default (10 s), so a forward that moves
// within a second of a drain was moved by the watch event.
const edgeConfig = `
edge:
  idleTimeout: 1500ms
  waitTimeout: 2s
shutdown:
  startWait: 200ms
  drainTimeout: 5s
  finalWait: 0s
`

func (c *cluster) startEdge(id string, extra ...string) *node {
	c.t.Helper()
	return c.startEdgeEnv(id, nil, extra...)
}

// startEdgeEnv is startEdge with env ("KEY=value") set for this edge
// process alone (the tests run in parallel: no t.Setenv).
func (c *cluster) startEdgeEnv(id string, env []string, extra ...string) *node {
	t := c.t
	t.Helper()
	n := &node{id: id, rtmp: proctest.FreeAddr(t), http: proctest.FreeAddr(t), admin: proctest.FreeAddr(t)}
	cfg := writeFile(t, filepath.Join(c.dir, id+".yaml"), edgeConfig)
	args := append([]string{"--config", cfg, "--node-id", id, "--ocm", c.ocmAddr,
		"--rtmp-listen", n.rtmp, "--http-listen", n.http, "--admin-listen", n.admin,
		"--advertise-host", "127.0.0.1", "--log-level", "debug"}, extra...)
	n.Proc = proctest.StartEnv(t, id, env, bins.edge, args...)
	t.Cleanup(func() {
		if strings.Contains(n.Output(), "WARNING: DATA RACE") {
			t.Errorf("%s: data race reported", id)
		}
	})
	proctest.WaitHTTP(t, "http://"+n.admin+"/readyz", 200, 30*time.Second)
	return n
}

// publish starts ffmpeg pushing the test stream in a loop, in real time.
func (c *cluster) publish(name, url string) *proctest.Proc {
	c.t.Helper()
	return proctest.Start(c.t, name, c.ffmpeg, "-nostdin", "-v", "error", "-re", "-stream_loop", "-1",
		"-i", c.flv, "-c", "copy", "-f", "flv", url)
}

func (c *cluster) lookup(name string) (*ocmv1.LookupStreamResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.api.LookupStream(ctx, &ocmv1.LookupStreamRequest{Key: &ocmv1.StreamKey{App: "live", Name: name}})
}

// waitOwner waits until the stream is owned (by want, when not empty).
func (c *cluster) waitOwner(name, want string, timeout time.Duration) *ocmv1.LookupStreamResponse {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		resp, err := c.lookup(name)
		if err == nil && (want == "" || resp.GetStream().GetOwnerNodeId() == want) {
			return resp
		}
		last = fmt.Sprint(resp.GetStream(), err)
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("stream %s not owned by %q within %v; last: %s", name, want, timeout, last)
	return nil
}

// player reads a stream through our RTMP or HTTP-FLV client and records
// what a viewer would notice: disconnects, timestamps going backwards and
// the longest wall-clock pause between packets.
type player struct {
	mu          sync.Mutex
	packets     int
	lastTS      map[int8]time.Duration
	backwards   int
	lastAt      time.Time
	maxGap      time.Duration
	maxGapAt    time.Time
	codecResets int
	err         error
	done        chan struct{}
	cancel      context.CancelFunc
}

type packetSource interface {
	Streams() ([]av.CodecData, error)
	ReadPacket() (av.Packet, error)
	Close() error
}

// startPlayer connects (rtmp:// or http:// URL) and reads in the background.
// It returns once the first packet arrived, or with the connect error.
func startPlayer(url string) (*player, error) {
	ctx, cancel := context.WithCancel(context.Background())
	var src packetSource
	var err error
	if strings.HasPrefix(url, "rtmp://") {
		var c *rtmp.Conn
		c, err = rtmp.Dial(ctx, url, rtmp.Config{})
		if err == nil {
			if err = c.Play(); err != nil {
				c.Close()
			}
		}
		src = c
	} else {
		src, err = httpflv.Dial(ctx, url, nil)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	p := &player{lastTS: map[int8]time.Duration{}, done: make(chan struct{}), cancel: cancel}
	first := make(chan error, 1)
	go func() {
		defer close(p.done)
		defer src.Close()
		if _, err := src.Streams(); err != nil {
			first <- err
			p.finish(err)
			return
		}
		signalled := false
		for {
			pkt, err := src.ReadPacket()
			if errors.Is(err, rtmp.ErrCodecChanged) {
				p.mu.Lock()
				p.codecResets++
				p.mu.Unlock()
				if _, err := src.Streams(); err != nil {
					p.finish(err)
					return
				}
				continue
			}
			if err != nil {
				if !signalled {
					first <- err
				}
				p.finish(err)
				return
			}
			now := time.Now()
			p.mu.Lock()
			if last, ok := p.lastTS[pkt.Idx]; ok && pkt.Time < last {
				p.backwards++
			}
			p.lastTS[pkt.Idx] = pkt.Time
			if !p.lastAt.IsZero() && now.Sub(p.lastAt) > p.maxGap && p.packets > 50 {
				p.maxGap, p.maxGapAt = now.Sub(p.lastAt), now
			}
			p.lastAt = now
			p.packets++
			p.mu.Unlock()
			if !signalled {
				signalled = true
				first <- nil
			}
		}
	}()
	select {
	case err := <-first:
		if err != nil {
			cancel()
			<-p.done
			return nil, err
		}
	case <-time.After(15 * time.Second):
		cancel()
		<-p.done
		return nil, fmt.Errorf("no packet from %s within 15s", url)
	}
	return p, nil
}

func (p *player) finish(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
		if err == nil {
			p.err = io.EOF
		}
	}
	p.mu.Unlock()
}

func (p *player) stop() {
	p.cancel()
	<-p.done
}

type playerStats struct {
	packets, backwards, codecResets int
	maxGap                          time.Duration
	err                             error
}

func (p *player) stats() playerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return playerStats{p.packets, p.backwards, p.codecResets, p.maxGap, p.err}
}

// count returns how many packets arrived so far.
func (p *player) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.packets
}

// flowsAfter checks that media arrives after a switch: each player gets
// at least want more packets than it had at marks (taken at the switch)
// within d, and is still connected.
func flowsAfter(t *testing.T, players []*player, marks []int, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for i, p := range players {
		for p.count() < marks[i]+want {
			if st := p.stats(); st.err != nil {
				t.Fatalf("player %d ended after the switch: %v", i, st.err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("player %d got %d packets in %v after the switch, want at least %d", i, p.count()-marks[i], d, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func counts(players []*player) []int {
	out := make([]int, len(players))
	for i, p := range players {
		out[i] = p.count()
	}
	return out
}

func (p *player) resetGap() {
	p.mu.Lock()
	p.maxGap = 0
	p.mu.Unlock()
}

// originClients returns the clients the origin's API lists.
func originClients(t *testing.T, n *node) []map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + n.admin + "/api/v1/clients?count=1000")
	if err != nil {
		t.Fatalf("origin clients: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Clients []map[string]any `json:"clients"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("origin clients: %v", err)
	}
	return body.Clients
}

// countPlayers counts the origin's player clients of a stream.
func countPlayers(t *testing.T, n *node, name string) int {
	t.Helper()
	k := 0
	for _, c := range originClients(t, n) {
		typ, _ := c["type"].(string)
		if strings.HasSuffix(typ, "-play") && (c["name"] == name || strings.Contains(fmt.Sprint(c["url"]), "/"+name)) {
			k++
		}
	}
	return k
}

// metric returns the sum of a metric's samples whose labels contain all of
// labels (`kind="segment"`).
func metric(t *testing.T, adminAddr, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		var v float64
		fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
		sum += v
	}
	return sum
}

// logLines returns the JSON log lines of p whose msg is msg.
func logLines(p *proctest.Proc, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(p.Output(), "\n") {
		if !strings.Contains(l, `"msg":"`+msg+`"`) {
			continue
		}
		m := map[string]any{}
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
