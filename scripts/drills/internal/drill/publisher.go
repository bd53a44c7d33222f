package drill

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// TestFile writes (once per Dir) a 10 s 320x240 H.264 + AAC FLV with a
// keyframe every second, which publishers loop with stream copy (no
// encoding load during the drill).
func (e *Env) TestFile(ctx context.Context) (string, error) {
	p := filepath.Join(e.Dir, "drill.flv")
	if st, err := os.Stat(p); err == nil && st.Size() > 0 {
		return p, nil
	}
	cmd := exec.CommandContext(ctx, e.FFmpeg, "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100",
		"-t", "10", "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0",
		"-pix_fmt", "yuv420p", "-b:v", "300k", "-c:a", "aac", "-b:a", "64k", "-f", "flv", p+".tmp")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("make the test file: ffmpeg: %w: %s", err, out)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return "", fmt.Errorf("make the test file: %w", err)
	}
	return p, nil
}

// Attempt is one connection of a Publisher: when ffmpeg started and
// ended, to which URL, and how it ended.
type Attempt struct {
	URL   string
	Start time.Time
	End   time.Time // zero while it runs
	Err   string
}

// Publisher publishes a looped file with ffmpeg (stream copy, real-time
// pace) and, as an encoder does, starts again one Retry after each end,
// at the URL Target returns then.
type Publisher struct {
	Env    *Env
	File   string
	Retry  time.Duration            // between an end and the next attempt (1 s)
	Target func(attempt int) string // the URL of attempt n (0 = the first)

	mu       sync.Mutex
	attempts []Attempt
	cmd      *exec.Cmd
	done     chan struct{}
}

// Start runs the publisher until ctx ends or Stop.
func (p *Publisher) Start(ctx context.Context) {
	if p.Retry <= 0 {
		p.Retry = time.Second
	}
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		for n := 0; ctx.Err() == nil; n++ {
			u := p.Target(n)
			cmd := exec.CommandContext(ctx, p.Env.FFmpeg, "-nostdin", "-v", "error", "-re", "-stream_loop", "-1",
				"-i", p.File, "-c", "copy", "-f", "flv", u)
			out := &tail{}
			cmd.Stdout, cmd.Stderr = out, out
			a := Attempt{URL: u, Start: time.Now()}
			err := cmd.Start()
			p.mu.Lock()
			i := len(p.attempts)
			p.attempts = append(p.attempts, a)
			p.cmd = cmd
			p.mu.Unlock()
			if err == nil {
				err = cmd.Wait()
			}
			p.mu.Lock()
			p.attempts[i].End = time.Now()
			if err != nil {
				p.attempts[i].Err = fmt.Sprintf("%v: %s", err, out.String())
			}
			p.cmd = nil
			p.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			p.Env.Logf("publisher: attempt %d to %s ended after %v: %v %s", n, u, time.Since(a.Start).Round(time.Millisecond), err, out.String())
			if Sleep(ctx, p.Retry) != nil {
				return
			}
		}
	}()
}

// Reconnect ends the running ffmpeg (SIGKILL): the encoder's own stall
// detection, for a host that vanished without closing its sockets.
func (p *Publisher) Reconnect() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
	}
}

// Wait waits for the publisher's loop to end (after its ctx ended).
func (p *Publisher) Wait() { <-p.done }

// Attempts returns the attempts so far.
func (p *Publisher) Attempts() []Attempt {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Attempt(nil), p.attempts...)
}

// tail keeps the last 512 bytes written to it.
type tail struct {
	mu sync.Mutex
	b  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 512 {
		t.b = t.b[len(t.b)-512:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
