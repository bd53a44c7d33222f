// Package mediatest holds helpers shared by media's tests: locating ffmpeg
// and ffprobe, and generating a small H.264/AAC test FLV.
package mediatest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv"

	"github.com/livecluster/livecluster/media/hub"
)

// Tool returns the path of ffmpeg or ffprobe from env (LIVECLUSTER_FFMPEG,
// LIVECLUSTER_FFPROBE) or PATH. Missing: skip, or fail when CI is set.
func Tool(t testing.TB, name string) string {
	t.Helper()
	env := map[string]string{"ffmpeg": "LIVECLUSTER_FFMPEG", "ffprobe": "LIVECLUSTER_FFPROBE"}[name]
	if p := os.Getenv(env); p != "" {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found (set %s): %v", name, env, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

var (
	flvOnce sync.Once
	flvPath string
	flvErr  []byte
)

// TestFLV returns a 12 s 320x240 30 fps H.264 (GOP 30) + AAC FLV, generated
// once per test binary in a directory removed by Cleanup.
func TestFLV(t testing.TB) string {
	t.Helper()
	ffmpeg := Tool(t, "ffmpeg")
	flvOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mediatest-")
		if err != nil {
			flvErr = []byte(err.Error())
			return
		}
		p := filepath.Join(dir, "test.flv")
		cmd := exec.Command(ffmpeg, "-v", "error", "-y",
			"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
			"-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100",
			"-t", "12", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "500k",
			"-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
			"-c:a", "aac", "-b:a", "64k", "-f", "flv", p)
		if out, err := cmd.CombinedOutput(); err != nil {
			flvErr = append(out, []byte(err.Error())...)
			return
		}
		flvPath = p
	})
	if flvPath == "" {
		t.Fatalf("generate test flv: %s", flvErr)
	}
	return flvPath
}

// Cleanup removes the generated FLV; call from TestMain after m.Run.
func Cleanup() {
	if flvPath != "" {
		os.RemoveAll(filepath.Dir(flvPath))
	}
}

// Proc is a child process with captured stderr.
type Proc struct {
	Cmd    *exec.Cmd
	Stderr *syncBuffer
	done   chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs a command in the background; it is killed at test cleanup.
func Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, name, args...)
	p := &Proc{Cmd: cmd, Stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// Wait waits up to d for the process to exit.
func (p *Proc) Wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v; stderr: %s", p.Cmd.Path, d, p.Stderr.String())
		return nil
	}
}

// Done is closed when the process exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Eventually polls cond every 20 ms until it holds or d passes.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ReadFLV demuxes a whole FLV file.
func ReadFLV(t testing.TB, path string) ([]av.CodecData, []av.Packet) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := flv.NewDemuxer(f)
	streams, err := d.Streams()
	if err != nil {
		t.Fatalf("demux %s: %v", path, err)
	}
	var pkts []av.Packet
	for {
		pkt, err := d.ReadPacket()
		if err != nil {
			break
		}
		pkts = append(pkts, pkt)
	}
	return streams, pkts
}

// Feed writes pkts to src paced at speed times real time (0: unpaced),
// looping (with increasing timestamps) until ctx ends or loops runs out (0:
// forever). It returns the number of packets written.
func Feed(ctx context.Context, src *hub.Source, pkts []av.Packet, speed float64, loops int) (int, error) {
	start := time.Now()
	var base time.Duration
	n := 0
	last := pkts[len(pkts)-1].Time + 40*time.Millisecond
	for loop := 0; loops == 0 || loop < loops; loop++ {
		for _, p := range pkts {
			p.Time += base
			if speed > 0 {
				if d := time.Until(start.Add(time.Duration(float64(p.Time) / speed))); d > 0 {
					select {
					case <-ctx.Done():
						return n, ctx.Err()
					case <-time.After(d):
					}
				}
			} else if ctx.Err() != nil {
				return n, ctx.Err()
			}
			if err := src.WritePacket(p); err != nil {
				return n, err
			}
			n++
		}
		base += last
	}
	return n, nil
}
