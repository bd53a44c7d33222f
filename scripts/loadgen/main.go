// Command loadgen loads a live-streaming server with many players (RTMP,
// HTTP-FLV, HLS) or many publishers (RTMP, a recorded FLV file at
// real-time pace), prints one line per second (elapsed, connected, Mbps,
// late, errors by kind) and ends with a JSON summary that includes the CPU
// and memory of the server processes given with -pids.
//
//	loadgen -url rtmp://127.0.0.1:1935/live/s0 -players 500 -ramp 100 -duration 30s -pids 1234 -json -
//	loadgen -url http://127.0.0.1:8080/live/s0.m3u8 -players 200 -duration 1m
//	loadgen -publish 100 -flv test.flv -url rtmp://127.0.0.1:1935/live/s%d -duration 1m
//
// It stops by itself after -duration, and early on SIGINT or SIGTERM; the
// summary is written either way. Exit status: 0, 1 when clients failed
// (errors counted), 2 on bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/livecluster/livecluster/scripts/loadgen/internal/player"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/publisher"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stats"
)

// maxDuration caps -duration so a forgotten run ends.
const maxDuration = 24 * time.Hour

type options struct {
	url        string
	players    int
	publishers int
	flv        string
	streams    int
	ramp       float64
	duration   time.Duration
	pids       []string
	jsonOut    string
	stall      time.Duration
	reqTimeout time.Duration
	hlsReload  string
	bodyPrefix int
	stamp      bool
	quiet      bool
	gaps       time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	var pids string
	fs.StringVar(&o.url, "url", "", "rtmp://host/app/name, http(s)://host/app/name.flv or http(s)://host/app/name.m3u8; a %d in it is replaced by the stream index (see -streams, -publish)")
	fs.IntVar(&o.players, "players", 0, "players to start")
	fs.IntVar(&o.publishers, "publish", 0, "publisher mode: publish -flv to this many streams (-url rtmp://host/app/name%d)")
	fs.StringVar(&o.flv, "flv", "", "publisher mode: the FLV file to publish")
	fs.IntVar(&o.streams, "streams", 1, "players: spread over this many streams, %d in -url = player index modulo streams")
	fs.Float64Var(&o.ramp, "ramp", 100, "clients started per second")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long to run (at most 24h)")
	fs.StringVar(&pids, "pids", "", "comma-separated server PIDs whose CPU and RSS to sample")
	fs.StringVar(&o.jsonOut, "json", "", "write the JSON summary to this file (- for stdout)")
	fs.DurationVar(&o.stall, "stall", 10*time.Second, "a client waiting longer than this for the server (connect, first media, any read or write) fails")
	fs.DurationVar(&o.reqTimeout, "request-timeout", 10*time.Second, "HLS: bound of each playlist or segment request")
	fs.IntVar(&o.bodyPrefix, "body-prefix", 256, "RTMP and HTTP-FLV players keep only the first N bytes of each audio or video frame (what they measure: keyframes and the send time stamped at a frame's start) and discard the rest uncopied, so more players fit on a core; 0: whole frames")
	fs.StringVar(&o.hlsReload, "hls-reload", player.ReloadRFC, "HLS: playlist reload pacing: rfc (as RFC 8216, hls.js and ffmpeg: the target duration after a changed playlist, half of it after an unchanged one) or half (every half target duration: about twice a real player's playlist requests)")
	fs.BoolVar(&o.stamp, "stamp", true, "publisher mode: embed the send time in each H.264 frame (SEI) for end-to-end latency")
	fs.BoolVar(&o.quiet, "quiet", false, "no per-second lines")
	fs.DurationVar(&o.gaps, "gaps", 0, "list every media gap of at least this long (wall time between two arrivals of one client, with both ends) in the summary; 0: off")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, p := range strings.Split(pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if n, err := strconv.Atoi(p); err != nil || n <= 0 {
			return nil, fmt.Errorf("-pids: %q is not a process id", p)
		}
		o.pids = append(o.pids, p)
	}
	switch {
	case o.url == "":
		return nil, errors.New("-url is required")
	case (o.players > 0) == (o.publishers > 0):
		return nil, errors.New("give either -players N or -publish N (N > 0)")
	case o.publishers > 0 && o.flv == "":
		return nil, errors.New("-publish needs -flv FILE")
	case o.publishers > 0 && !strings.HasPrefix(o.url, "rtmp://"):
		return nil, errors.New("-publish needs an rtmp:// -url")
	case o.publishers > 1 && !strings.Contains(o.url, "%d"):
		return nil, errors.New("-publish N > 1 needs %d in -url, one stream key per publisher")
	case o.streams < 1:
		return nil, errors.New("-streams must be at least 1")
	case o.ramp <= 0:
		return nil, errors.New("-ramp must be positive")
	case o.duration <= 0 || o.duration > maxDuration:
		return nil, fmt.Errorf("-duration must be in (0, %v]", maxDuration)
	case o.gaps < 0:
		return nil, errors.New("-gaps must not be negative")
	case o.bodyPrefix != 0 && o.bodyPrefix < 128:
		return nil, errors.New("-body-prefix must be 0 (whole frames) or at least 128 (a frame's start with its send-time stamp)")
	case o.hlsReload != player.ReloadRFC && o.hlsReload != player.ReloadHalf:
		return nil, fmt.Errorf("-hls-reload must be %s or %s", player.ReloadRFC, player.ReloadHalf)
	case o.stall <= 0 || o.reqTimeout <= 0:
		return nil, errors.New("-stall and -request-timeout must be positive")
	}
	return o, nil
}

// streamURL returns the URL of client i.
func (o *options) streamURL(i int) string {
	if !strings.Contains(o.url, "%d") {
		return o.url
	}
	if o.publishers > 0 {
		return strings.ReplaceAll(o.url, "%d", strconv.Itoa(i))
	}
	return strings.ReplaceAll(o.url, "%d", strconv.Itoa(i%o.streams))
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := run(ctx, o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	if err := writeSummary(o.jsonOut, sum); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	if sum.ErrorsTotal > 0 {
		os.Exit(1)
	}
}

// run starts the clients at the ramp rate, reports every second to lines
// and returns the summary when the duration is over or ctx ends. It fails
// only on setup errors (an unreadable -flv or -pids).
func run(ctx context.Context, o *options, lines io.Writer) (stats.Summary, error) {
	mode, proto, n, lateAfter := "play", "", o.players, 3*time.Second
	var stream *publisher.Stream
	if o.publishers > 0 {
		mode, proto, n, lateAfter = "publish", player.RTMP, o.publishers, time.Second
		var err error
		if stream, err = publisher.Load(o.flv); err != nil {
			return stats.Summary{}, err
		}
	} else {
		var err error
		if proto, err = player.Protocol(o.streamURL(0)); err != nil {
			return stats.Summary{}, err
		}
	}
	st, err := stats.New(mode, lateAfter, o.pids)
	if err != nil {
		return stats.Summary{}, err
	}
	st.RecordGaps(o.gaps)
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()

	reportDone := make(chan struct{})
	stopReport := make(chan struct{})
	if o.quiet {
		lines = io.Discard
	}
	go func() {
		defer close(reportDone)
		st.Report(lines, stopReport)
	}()

	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / o.ramp)
	t := time.NewTicker(max(interval, time.Microsecond))
launch:
	for i := 0; i < n; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				break launch
			case <-t.C:
			}
		}
		st.Launched()
		u := o.streamURL(i)
		wg.Go(func() {
			if stream != nil {
				_ = publisher.Publish(ctx, u, stream, publisher.Config{Stamp: o.stamp, Stall: o.stall}, st)
			} else {
				_ = player.Play(ctx, proto, u, player.Config{Stall: o.stall, RequestTimeout: o.reqTimeout, HLSReload: o.hlsReload, BodyPrefix: o.bodyPrefix}, st)
			}
		})
	}
	t.Stop()
	st.LaunchDone()
	waited := make(chan struct{})
	go func() {
		wg.Wait()
		close(waited)
	}()
	// The run ends at the deadline, on a signal, or when every client has
	// ended by itself (failed, or an HLS stream reached its end).
	select {
	case <-ctx.Done():
	case <-waited:
	}
	// The last line is taken before the clients hang up, so it shows them.
	close(stopReport)
	<-reportDone
	cancel()
	// Every client watches ctx; give them a moment to count their last bytes,
	// but never wait on a stuck one: the run is bounded.
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		fmt.Fprintln(lines, "loadgen: some clients did not stop within 5 s; summarizing without them")
	}
	return st.Summary(o.url, proto, n), nil
}

func writeSummary(path string, s stats.Summary) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode summary: %w", err)
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}
