// Command drillplay runs the publisher and the players of the Kubernetes
// drill (scripts/k8s/drill.sh) and measures what a viewer notices while the
// cluster is rolled, edited and broken under them.
//
// The publisher is ffmpeg pushing a looped test file (-re, stream copy) to an
// RTMP URL; each player is an ffprobe process reading a URL (RTMP, HTTP-FLV
// or HLS) and printing one line per packet, so the figures are those of
// FFmpeg's own demuxers, not of our client code. When a process exits (the
// server closed the connection, or it failed), that is a disconnect: it is
// recorded and the process is started again at once, which is what a player
// with retry does.
//
// Per player it records packets, disconnects, the longest wall-clock gap
// between two packets (across reconnects) and one "outage" per disconnect:
// from the last packet before it to the first packet after it. A small HTTP
// API on -listen serves the figures:
//
//	GET /stats          JSON of every player and the publisher since the last reset
//	POST /reset         start a new measurement window
//	GET /ready          200 when every player had a packet in the last 3 s
//
// `drillplay yamlset FILE key.path=value...` prints FILE with the keys set
// (the drill's ConfigMap edits).
//
// It stops (and stops its processes) on SIGTERM or SIGINT.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

type urlList []string

func (u *urlList) String() string     { return strings.Join(*u, ",") }
func (u *urlList) Set(s string) error { *u = append(*u, s); return nil }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "yamlset" {
		if err := runYAMLSet(os.Args[2:]); err != nil {
			log.Fatalf("drillplay yamlset: %v", err)
		}
		return
	}
	var plays urlList
	listen := flag.String("listen", "127.0.0.1:16990", "address of the stats API")
	ffmpeg := flag.String("ffmpeg", "ffmpeg", "ffmpeg binary")
	ffprobe := flag.String("ffprobe", "ffprobe", "ffprobe binary")
	publish := flag.String("publish", "", "RTMP URL to publish the test stream to (empty: no publisher)")
	source := flag.String("source", "", "FLV file to publish in a loop (empty: generate a 10 s test file)")
	copies := flag.Int("copies", 1, "players per -play URL")
	flag.Var(&plays, "play", "URL to play (repeatable): rtmp://, http://...flv, http://...m3u8")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *listen, *ffmpeg, *ffprobe, *publish, *source, *copies, plays); err != nil {
		log.Fatalf("drillplay: %v", err)
	}
}

func run(ctx context.Context, listen, ffmpeg, ffprobe, publish, source string, copies int, plays []string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("stats API: %w", err)
	}
	var subjects []*subject
	if publish != "" {
		if source == "" {
			dir, err := os.MkdirTemp("", "lck8s-drillplay-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			source = filepath.Join(dir, "src.flv")
			if err := makeSource(ctx, ffmpeg, source); err != nil {
				return err
			}
		}
		subjects = append(subjects, newSubject("publisher", publish, func(ctx context.Context) *exec.Cmd {
			// -progress prints a block per period; each "frame=" line is
			// counted like a packet so a stalled publish shows as a gap.
			return exec.CommandContext(ctx, ffmpeg, "-nostdin", "-v", "error", "-re", "-stream_loop", "-1",
				"-i", source, "-c", "copy", "-f", "flv", "-progress", "pipe:1", "-stats_period", "0.2", publish)
		}, "frame="))
	}
	for _, u := range plays {
		for i := 0; i < copies; i++ {
			name := fmt.Sprintf("%s#%d", kind(u), i+1)
			url := u
			subjects = append(subjects, newSubject(name, url, func(ctx context.Context) *exec.Cmd {
				// stdbuf: ffprobe prints through stdio, which a pipe would
				// buffer by 4 KiB and turn into false stalls.
				return exec.CommandContext(ctx, "stdbuf", "-oL", ffprobe, "-v", "error",
					"-rw_timeout", "15000000", "-show_entries", "packet=stream_index,pts_time",
					"-of", "csv=p=0", "-i", url)
			}, ""))
		}
	}

	var wg sync.WaitGroup
	for _, s := range subjects {
		wg.Add(1)
		go func() { defer wg.Done(); s.loop(ctx) }()
	}
	srv := &http.Server{Handler: api(subjects), ReadHeaderTimeout: 5 * time.Second}
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err = srv.Serve(ln)
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func kind(u string) string {
	switch {
	case strings.HasPrefix(u, "rtmp://"):
		return "rtmp"
	case strings.Contains(u, ".m3u8"):
		return "hls"
	default:
		return "flv"
	}
}

// makeSource encodes a short test file once, so that publishing it costs
// only a stream copy (the drill shares two cores with the whole cluster).
func makeSource(ctx context.Context, ffmpeg, path string) error {
	cmd := exec.CommandContext(ctx, ffmpeg, "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100",
		"-t", "10", "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-f", "flv", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("making the test source: %v: %s", err, out)
	}
	return nil
}

// outage is one disconnect as a viewer saw it.
type outage struct {
	At       time.Time `json:"at"`
	GapMs    int64     `json:"gapMs"` // last packet before to first packet after; -1 while still out
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"` // processes started until media came back
}

type subject struct {
	name, url string
	command   func(context.Context) *exec.Cmd
	prefix    string // only lines with this prefix count as packets ("" = every line)

	mu          sync.Mutex
	packets     int64
	lastAt      time.Time
	maxGap      time.Duration
	maxGapAt    time.Time
	disconnects int
	outages     []outage
	open        *outage // the outage in progress
	lastErr     string
}

func newSubject(name, url string, command func(context.Context) *exec.Cmd, prefix string) *subject {
	return &subject{name: name, url: url, command: command, prefix: prefix}
}

// loop runs the process again each time it ends, until ctx is done.
func (s *subject) loop(ctx context.Context) {
	for ctx.Err() == nil {
		reason := s.once(ctx)
		if ctx.Err() != nil {
			return
		}
		s.exited(reason)
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *subject) once(ctx context.Context) string {
	cmd := s.command(ctx)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err.Error()
	}
	tail := &lastLine{}
	cmd.Stderr = tail
	if err := cmd.Start(); err != nil {
		return err.Error()
	}
	s.started()
	sc := bufio.NewScanner(out)
	prev := ""
	for sc.Scan() {
		line := sc.Text()
		if s.prefix != "" {
			// ffmpeg's progress repeats the same frame count while
			// blocked: only a new count is progress.
			if !strings.HasPrefix(line, s.prefix) || line == prev {
				continue
			}
			prev = line
		}
		s.packet(time.Now())
	}
	_, _ = io.Copy(io.Discard, out)
	err = cmd.Wait()
	msg := "exit 0 (end of stream)"
	if err != nil {
		msg = err.Error()
	}
	if t := tail.String(); t != "" {
		msg += ": " + t
	}
	return msg
}

func (s *subject) started() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open != nil {
		s.open.Attempts++
	}
}

func (s *subject) packet(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.lastAt.IsZero() {
		if g := now.Sub(s.lastAt); g > s.maxGap {
			s.maxGap, s.maxGapAt = g, now
		}
	}
	if s.open != nil {
		if !s.lastAt.IsZero() {
			s.open.GapMs = now.Sub(s.lastAt).Milliseconds()
		}
		s.outages = append(s.outages, *s.open)
		s.open = nil
	}
	s.lastAt = now
	s.packets++
}

func (s *subject) exited(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = reason
	if s.lastAt.IsZero() {
		return // never played yet: a failed first connect, not a disconnect
	}
	if s.open == nil {
		s.disconnects++
		s.open = &outage{At: time.Now(), GapMs: -1, Reason: reason}
	}
}

type stats struct {
	Name        string   `json:"name"`
	URL         string   `json:"url"`
	Packets     int64    `json:"packets"`
	Disconnects int      `json:"disconnects"`
	MaxGapMs    int64    `json:"maxGapMs"`
	MaxGapAt    string   `json:"maxGapAt,omitempty"`
	SinceLastMs int64    `json:"sinceLastPacketMs"`
	Outages     []outage `json:"outages"`
	LastErr     string   `json:"lastErr,omitempty"`
}

func (s *subject) snapshot(now time.Time) stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := stats{Name: s.name, URL: s.url, Packets: s.packets, Disconnects: s.disconnects,
		MaxGapMs: s.maxGap.Milliseconds(), Outages: append([]outage{}, s.outages...), LastErr: s.lastErr,
		SinceLastMs: -1}
	if !s.maxGapAt.IsZero() {
		st.MaxGapAt = s.maxGapAt.UTC().Format(time.RFC3339Nano)
	}
	if !s.lastAt.IsZero() {
		st.SinceLastMs = now.Sub(s.lastAt).Milliseconds()
		// A gap still open counts as a stall too.
		if g := now.Sub(s.lastAt); g > s.maxGap {
			st.MaxGapMs = g.Milliseconds()
		}
	}
	if s.open != nil {
		st.Outages = append(st.Outages, *s.open)
	}
	return st
}

// reset starts a new window; an outage in progress stays open.
func (s *subject) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.packets, s.maxGap, s.maxGapAt, s.disconnects, s.outages = 0, 0, time.Time{}, 0, nil
	if s.open != nil {
		s.disconnects = 1
	}
}

func api(subjects []*subject) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		out := make([]stats, 0, len(subjects))
		for _, s := range subjects {
			out = append(out, s.snapshot(now))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		for _, s := range subjects {
			s.reset()
		}
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		for _, s := range subjects {
			st := s.snapshot(now)
			if st.SinceLastMs < 0 || st.SinceLastMs > 3000 {
				http.Error(w, fmt.Sprintf("%s: no packet for %d ms (%s)", s.name, st.SinceLastMs, st.LastErr), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// lastLine keeps the last non-empty line written to it (a process's stderr).
type lastLine struct {
	mu   sync.Mutex
	buf  []byte
	last string
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimSpace(string(l.buf[:i])); line != "" {
			l.last = line
		}
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 4096 {
		l.buf = l.buf[len(l.buf)-4096:]
	}
	return len(p), nil
}

func (l *lastLine) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := strings.TrimSpace(string(l.buf)); s != "" {
		return s
	}
	return l.last
}
