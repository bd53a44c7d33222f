// Package drill holds what the failure drills share: the environment a
// drill runs in (image tag, name prefix, tools, short or full form), the
// figures it prints, and the real clients it drives: an ffmpeg publisher
// that reconnects as an encoder does, load-generator players, and the
// OCM's JSON API.
package drill

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/livecluster/livecluster/scripts/drills/internal/cluster"
)

// Env is what a drill runs with.
type Env struct {
	Tag      string // image tag (livecluster/<image>:<Tag>)
	Prefix   string // Docker name prefix, e.g. "lc-dmedia"
	RunLabel string // lc.drill.run label value ("" = per cluster)
	Short    bool   // the short form (the test command's): fewer players, shorter phases
	Dir      string // scratch directory of the run (logs, media file, summaries)
	Loadgen  string // the loadgen binary (scripts/loadgen)
	FFmpeg   string // ffmpeg binary
	Log      io.Writer
}

// Logf writes a progress line to the log (stderr), stamped with the time.
func (e *Env) Logf(format string, args ...any) {
	fmt.Fprintf(e.Log, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// NewCluster creates a cluster for drill name; its logs go to
// Dir/<name>-logs on failure. Close it (deferred) in every case.
func (e *Env) NewCluster(ctx context.Context, name string) (*cluster.Cluster, error) {
	return cluster.New(ctx, cluster.Options{
		Prefix: e.Prefix, Tag: e.Tag, RunLabel: e.RunLabel,
		LogDir: filepath.Join(e.Dir, name+"-logs"), Log: e.Log,
	})
}

// Drill is one drill: Run returns its figures (one JSON object) and
// whether every target was met. An error means the drill could not run
// (setup failed), which also fails it.
type Drill struct {
	Name string
	Doc  string // one line: what it does
	Run  func(ctx context.Context, e *Env) (Result, error)
}

// Result is a drill's outcome.
type Result struct {
	Figures map[string]any
	// Failed lists the targets that were missed, in words.
	Failed []string
}

// Check records a target: when ok is false the result fails with why.
func (r *Result) Check(ok bool, why string, args ...any) {
	if !ok {
		r.Failed = append(r.Failed, fmt.Sprintf(why, args...))
	}
}

// Line is the JSON line a drill prints: drill, pass, short, the figures,
// the missed targets and the duration.
func Line(name string, short bool, r Result, err error, took time.Duration) []byte {
	m := map[string]any{"drill": name, "short": short, "seconds": round1(took.Seconds())}
	for k, v := range r.Figures {
		m[k] = v
	}
	pass := err == nil && len(r.Failed) == 0
	m["pass"] = pass
	if err != nil {
		m["error"] = err.Error()
	}
	if len(r.Failed) > 0 {
		m["failed"] = r.Failed
	}
	b, err2 := json.Marshal(m)
	if err2 != nil {
		b, _ = json.Marshal(map[string]any{"drill": name, "pass": false, "error": "encode figures: " + err2.Error()})
	}
	return b
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// Sleep waits d or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// MkdirRun makes the scratch directory.
func (e *Env) MkdirRun() error {
	if err := os.MkdirAll(e.Dir, 0o755); err != nil {
		return fmt.Errorf("scratch directory: %w", err)
	}
	return nil
}
