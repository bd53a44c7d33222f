package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/proctest"
)

// TestHLSAcrossOwnerChanges: ffmpeg plays a stream's HLS through an edge
// while its owner changes twice: origin-0 is drained (SIGTERM; its
// publisher leaves, it ends its playlist) and the stream is republished on
// origin-1; then origin-1 is SIGKILLed and the publisher retries on
// origin-2 until the OCM lets it. The player keeps playing past both
// switches, the edge never answers 404 for the stream, and the media
// sequence of the playlists sampled meanwhile never goes back.
func TestHLSAcrossOwnerChanges(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	o0 := c.startOrigin("origin-0")
	o1 := c.startOrigin("origin-1")
	o2 := c.startOrigin("origin-2")
	e := c.startEdge("edge-0")
	ffprobe := proctest.Tool(t, "LIVECLUSTER_FFPROBE", "ffprobe")

	pub := c.publish("ffmpeg-pub-0", "rtmp://"+o0.rtmp+"/live/h")
	c.waitOwner("h", "origin-0", 15*time.Second)
	// Ask the origin, not the edge, until it has segments: the edge's
	// answers are all counted below.
	waitFor(t, "origin-0 playlist with 3 segments", 20*time.Second, func() bool {
		body, code := get("http://" + o0.http + "/live/h.m3u8")
		return code == 200 && strings.Count(body, ".ts") >= 3
	})
	url := "http://" + e.http + "/live/h.m3u8"

	// The sampler polls the playlist as a second player would.
	var (
		mu       sync.Mutex
		samples  int
		lastSeq  int64 = -1
		problems []string
		discs    = map[string]bool{}
	)
	stopSampler := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		for {
			select {
			case <-stopSampler:
				return
			case <-time.After(250 * time.Millisecond):
			}
			body, code := get(url)
			mu.Lock()
			samples++
			if code != 200 {
				problems = append(problems, fmt.Sprintf("playlist answered %d: %q", code, body))
			}
			var prevDisc bool
			for _, line := range strings.Split(body, "\n") {
				if v, ok := strings.CutPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					if n < lastSeq {
						problems = append(problems, fmt.Sprintf("media sequence went back from %d to %d", lastSeq, n))
					}
					lastSeq = n
				}
				if line == "#EXT-X-DISCONTINUITY" {
					prevDisc = true
				} else if strings.HasSuffix(line, ".ts") {
					if prevDisc {
						discs[line] = true
					}
					prevDisc = false
				}
				if line == "#EXT-X-ENDLIST" {
					problems = append(problems, "playlist ended")
				}
			}
			mu.Unlock()
		}
	}()
	defer func() {
		select {
		case <-stopSampler:
		default:
			close(stopSampler)
		}
		<-samplerDone
	}()

	out := filepath.Join(c.dir, "player.ts")
	player := proctest.Start(t, "ffmpeg-player", c.ffmpeg, "-nostdin", "-v", "warning", "-i", url,
		"-c", "copy", "-f", "mpegts", out)
	size := func() int64 {
		st, err := os.Stat(out)
		if err != nil {
			return 0
		}
		return st.Size()
	}
	grows := func(what string) {
		t.Helper()
		from := size()
		waitFor(t, what, 20*time.Second, func() bool {
			if player.Exited() {
				t.Fatalf("HLS player exited (%s):\n%s", what, player.Output())
			}
			return size() > from+100_000
		})
	}
	grows("player output grows before any switch")
	t.Logf("player running; output %d bytes", size())

	// 1. Drain origin-0; its publisher leaves (an encoder whose server
	// went away) and comes back on origin-1.
	drainAt := time.Now()
	o0.Signal(syscall.SIGTERM)
	kill(pub)
	c.waitNotOwned("h", 15*time.Second)
	pub = c.publish("ffmpeg-pub-1", "rtmp://"+o1.rtmp+"/live/h")
	c.waitOwner("h", "origin-1", 15*time.Second)
	grows("player output grows after the move to origin-1")
	t.Logf("after the drain: output grows %v after SIGTERM, %d bytes", time.Since(drainAt), size())

	// 2. Crash origin-1; the publisher retries on origin-2, as an encoder
	// would, a second after each refusal, until the OCM lets it (the lease
	// runs out). An attempt is given until it is refused (ffmpeg exits) or
	// owns the stream: on a loaded machine ffmpeg's start and the claim
	// can take over a second, and killing it then would release what it
	// was about to own.
	killAt := time.Now()
	o1.Signal(syscall.SIGKILL)
	kill(pub)
	owner := func() string {
		r, err := c.lookup("h")
		if err != nil {
			return "lookup: " + err.Error()
		}
		return r.GetStream().GetOwnerNodeId()
	}
	var lastOwner string
	waitFor(t, "republish on origin-2", 30*time.Second, func() bool {
		p := c.publish(fmt.Sprintf("ffmpeg-pub-2-%d", time.Now().UnixMilli()), "rtmp://"+o2.rtmp+"/live/h")
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
			if lastOwner = owner(); lastOwner == "origin-2" {
				return true
			}
			if p.Exited() {
				t.Logf("publisher on origin-2 refused (owner %q): %s", lastOwner, strings.TrimSpace(p.Output()))
				time.Sleep(time.Second)
				return false
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("publisher on origin-2 neither refused nor owner after 10 s (owner %q); trying again", lastOwner)
		kill(p)
		return false
	})
	grows("player output grows after the move to origin-2")
	t.Logf("after the crash: output grows %v after SIGKILL, %d bytes", time.Since(killAt), size())
	time.Sleep(3 * time.Second)
	if player.Exited() {
		t.Fatalf("HLS player exited:\n%s", player.Output())
	}
	player.Signal(syscall.SIGINT)
	player.Wait(10 * time.Second)
	close(stopSampler)
	<-samplerDone

	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d playlists sampled, last media sequence %d, segments after a discontinuity: %d", samples, lastSeq, len(discs))
	if len(discs) < 2 {
		t.Errorf("saw %d segments after a discontinuity, want one per owner change (2)", len(discs))
	}
	for _, code := range []string{"404", "500", "502", "503"} {
		if n := metric(t, e.admin, "livecluster_edge_hls_responses_total", `code="`+code+`"`); n > 0 {
			t.Errorf("edge answered %v HLS requests with %s", n, code)
		}
	}
	t.Logf("edge: %v playlists held, %v discontinuities, %v answers 200",
		metric(t, e.admin, "livecluster_edge_hls_playlist_held_total"),
		metric(t, e.admin, "livecluster_edge_hls_discontinuities_total"),
		metric(t, e.admin, "livecluster_edge_hls_responses_total", `code="200"`))

	// What the player wrote decodes, and holds the time it played.
	probe, err := exec.Command(ffprobe, "-v", "error", "-count_packets", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", out).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", out, err, probe)
	}
	frames, _ := strconv.Atoi(strings.TrimSpace(strings.Split(string(probe), "\n")[0]))
	t.Logf("player output: %d bytes, %d video frames", size(), frames)
	if frames < 30*10 {
		t.Errorf("player output holds %d video frames, want at least 10 s at 30 fps", frames)
	}
}

// kill SIGKILLs a publisher that may have exited already (its origin went
// away, or it was refused).
func kill(p *proctest.Proc) {
	_ = p.Cmd.Process.Kill()
	<-p.Done()
}
