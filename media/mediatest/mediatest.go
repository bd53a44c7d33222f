// Package mediatest holds test helpers for media and the binaries built on
// it (as net/http/httptest does for net/http): locating ffmpeg
// and ffprobe, and generating a small H.264/AAC test FLV.
package mediatest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv"
	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/internal/flvx"
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

// flvs caches the generated test files of one test binary by size.
var flvs struct {
	mu   sync.Mutex
	dir  string
	path map[string]string
}

// TestFLV returns a 12 s 320x240 30 fps H.264 (GOP 30) + AAC FLV, generated
// once per test binary in a directory removed by Cleanup.
func TestFLV(t testing.TB) string { return TestFLVSized(t, "320x240") }

// TestFLVSized is TestFLV at another picture size: its H.264 sequence header
// differs, so switching between two sizes is a codec change.
func TestFLVSized(t testing.TB, size string) string {
	t.Helper()
	ffmpeg := Tool(t, "ffmpeg")
	flvs.mu.Lock()
	defer flvs.mu.Unlock()
	if p := flvs.path[size]; p != "" {
		return p
	}
	if flvs.dir == "" {
		dir, err := os.MkdirTemp("", "mediatest-")
		if err != nil {
			t.Fatal(err)
		}
		flvs.dir, flvs.path = dir, map[string]string{}
	}
	p := filepath.Join(flvs.dir, "test-"+size+".flv")
	cmd := exec.Command(ffmpeg, "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size="+size+":rate=30",
		"-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100",
		"-t", "12", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "500k",
		"-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-f", "flv", p)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate test flv: %v: %s", err, out)
	}
	flvs.path[size] = p
	return p
}

// Main runs a package's tests and then removes the FLVs they generated
// (Cleanup): a package whose tests use the generated FLVs calls it as its
// TestMain, so no run leaves them in the temporary directory. It exits
// with the tests' code.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// Cleanup removes the generated FLVs; Main calls it after the tests.
func Cleanup() {
	flvs.mu.Lock()
	defer flvs.mu.Unlock()
	if flvs.dir != "" {
		os.RemoveAll(flvs.dir)
	}
}

// Part is one run of packets with its codecs, for FLVBytes.
type Part struct {
	Streams []av.CodecData
	Pkts    []av.Packet
}

// FLVBytes serializes parts into one FLV byte stream, each part starting
// with its metadata and sequence headers and continuing the timeline of the
// previous one: what a publisher that changes encoder settings sends.
func FLVBytes(t testing.TB, parts ...Part) []byte {
	t.Helper()
	b := make([]byte, flvio.FileHeaderLength+4)
	flvio.FillFileHeader(b, flvio.FILE_HAS_AUDIO|flvio.FILE_HAS_VIDEO)
	var base time.Duration
	for _, part := range parts {
		hdrs, err := flvx.EncodeHeaders(part.Streams, nil, flvio.TimeToTs(base))
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hdrs {
			b = append(b, h...)
		}
		var last time.Duration
		for _, p := range part.Pkts {
			p.Time += base
			last = max(last, p.Time)
			b = append(b, flvx.EncodePacket(p, part.Streams[p.Idx])...)
		}
		base = last + 40*time.Millisecond
	}
	return b
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

// StallFile makes path a file whose writes block, as on a hung NFS mount:
// a FIFO whose kernel buffer is already full, held open by the test (so
// opening it for writing does not wait, but the first write(2) does).
// resume drains it from then on, so blocked writers go on. Both end at test
// cleanup.
func StallFile(t testing.TB, path string) (resume func()) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0) // a FIFO opened read-write never waits
	if err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := syscall.Write(fd, buf); err != nil {
			break // EAGAIN: the pipe is full
		}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() {
		close(stop)
		once.Do(func() { close(done) })
		<-done
		f.Close()
	})
	return func() {
		once.Do(func() {
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := syscall.Read(fd, buf); err != nil {
						time.Sleep(2 * time.Millisecond) // EAGAIN: drained for now
					}
				}
			}()
		})
	}
}
