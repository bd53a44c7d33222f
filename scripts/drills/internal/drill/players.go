package drill

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

// Players is one scripts/loadgen process playing N clients of one URL
// (the protocol follows from it: rtmp://, http://...flv, http://...m3u8).
type Players struct {
	Name string // label in figures and file names, e.g. "rtmp"
	N    int
	URL  string
	// For how long the process runs; it writes its summary at the end.
	Duration time.Duration
	// Gaps: media gaps of at least this long are listed (loadgen -gaps).
	Gaps time.Duration

	// Summary and Err are Wait's results, for a caller that keeps them
	// with the players.
	Summary *Summary
	Err     error

	cmd     *exec.Cmd
	summary string
	done    chan error
}

// Summary is the part of loadgen's JSON summary the drills read.
type Summary struct {
	Requested    int                         `json:"requested"`
	Connected    int64                       `json:"connected"`
	ConnectedEnd int64                       `json:"connected_end"`
	Errors       map[string]map[string]int64 `json:"errors"`
	ErrorsTotal  int64                       `json:"errors_total"`
	FirstErrors  map[string]string           `json:"first_errors"`
	LateClients  int64                       `json:"late_clients"`
	Gaps         []Gap                       `json:"gaps"`
}

// Gap is a pause in one player's media (loadgen's summary).
type Gap struct {
	Client int   `json:"client"`
	FromMS int64 `json:"from_unix_ms"`
	ToMS   int64 `json:"to_unix_ms"`
	MS     int64 `json:"ms"`
}

// Start starts the load generator (all players at once); its per-second
// lines go to Dir/<tag>-<Name>.log.
func (p *Players) Start(ctx context.Context, e *Env, tag string) error {
	p.summary = filepath.Join(e.Dir, tag+"-"+p.Name+".json")
	logf, err := os.Create(filepath.Join(e.Dir, tag+"-"+p.Name+".log"))
	if err != nil {
		return fmt.Errorf("players %s: %w", p.Name, err)
	}
	args := []string{"-url", p.URL, "-players", strconv.Itoa(p.N), "-ramp", "1000",
		"-duration", p.Duration.String(), "-json", p.summary, "-stall", "30s", "-request-timeout", "10s"}
	if p.Gaps > 0 {
		args = append(args, "-gaps", p.Gaps.String())
	}
	p.cmd = exec.CommandContext(ctx, e.Loadgen, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// On ctx's end: SIGINT, so the summary is still written.
	p.cmd.Cancel = func() error { return p.cmd.Process.Signal(os.Interrupt) }
	p.cmd.WaitDelay = 10 * time.Second
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("players %s: start loadgen: %w", p.Name, err)
	}
	p.done = make(chan error, 1)
	go func() {
		err := p.cmd.Wait()
		logf.Close()
		p.done <- err
	}()
	return nil
}

// Wait waits for the load generator to end and reads its summary. Player
// errors (exit status 1) are in the summary, not an error here.
func (p *Players) Wait() (*Summary, error) {
	err := <-p.done
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
		err = nil
	}
	b, rerr := os.ReadFile(p.summary)
	if rerr != nil {
		if err == nil {
			err = rerr
		}
		return nil, fmt.Errorf("players %s: no summary: %w", p.Name, err)
	}
	var s Summary
	if jerr := json.Unmarshal(b, &s); jerr != nil {
		return nil, fmt.Errorf("players %s: summary: %w", p.Name, jerr)
	}
	return &s, nil
}

// Kept is how many players were still playing when the run ended: those
// that connected, minus those that ended with an error (an hls_behind is
// counted but does not end the player).
func (s *Summary) Kept() int64 {
	ended := s.ErrorsTotal
	for _, kinds := range s.Errors {
		ended -= kinds["hls_behind"]
	}
	return max(min(s.Connected, int64(s.Requested))-ended, 0)
}

// Resume returns, per player, how long after t its media came back: the
// end of its first media gap that ends after t and began before t+slack
// (a failure takes a moment to stop the media), worst first. A player
// without such a gap (it never paused as long as the gap threshold) is
// not listed.
func (s *Summary) Resume(t time.Time, slack time.Duration) []time.Duration {
	at, late := t.UnixMilli(), t.Add(slack).UnixMilli()
	first := map[int]int64{}
	for _, g := range s.Gaps {
		if g.ToMS < at || g.FromMS > late {
			continue
		}
		if cur, ok := first[g.Client]; !ok || g.ToMS-at < cur {
			first[g.Client] = g.ToMS - at
		}
	}
	var out []time.Duration
	for _, ms := range first {
		out = append(out, time.Duration(ms)*time.Millisecond)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] > out[j] })
	return out
}

// MaxGap is the longest gap of any player (0 without gaps).
func (s *Summary) MaxGap() time.Duration {
	var m int64
	for _, g := range s.Gaps {
		m = max(m, g.MS)
	}
	return time.Duration(m) * time.Millisecond
}
