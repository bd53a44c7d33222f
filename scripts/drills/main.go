// Command drills runs livecluster's failure drills against the container
// images (scripts/images.sh) on private Docker networks, and prints one
// JSON line of figures per drill on stdout (progress on stderr). It exits
// 1 when a drill missed a target or could not run, 2 on bad usage.
//
//	drills -tag wip-x [-short] [-prefix lc-drill] [-dir /tmp/lc-drill] [drill...]
//
// Normally started by scripts/drills/run.sh, which builds the binaries and
// picks the tag. Ctrl-C (or SIGTERM) ends the running drill, which removes
// its containers and networks before the process exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/livecluster/livecluster/scripts/drills/internal/drill"
	"github.com/livecluster/livecluster/scripts/drills/internal/etcdquorum"
	"github.com/livecluster/livecluster/scripts/drills/internal/hlscontinuity"
	"github.com/livecluster/livecluster/scripts/drills/internal/lbchecks"
	"github.com/livecluster/livecluster/scripts/drills/internal/ocmfailover"
	"github.com/livecluster/livecluster/scripts/drills/internal/origincrash"
	"github.com/livecluster/livecluster/scripts/drills/internal/partition"
)

// all drills, in the order they run by default.
var all = []drill.Drill{origincrash.Drill, partition.Drill, hlscontinuity.Drill, lbchecks.Drill, etcdquorum.Drill, ocmfailover.Drill}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("drills", flag.ContinueOnError)
	fs.SetOutput(stderr)
	e := &drill.Env{Log: stderr}
	var timeout time.Duration
	fs.StringVar(&e.Tag, "tag", "", "image tag: livecluster/<image>:<tag> (required)")
	fs.StringVar(&e.Prefix, "prefix", "lc-drill", "name prefix of every container and network")
	fs.StringVar(&e.RunLabel, "run-label", "", "value of the lc.drill.run label on everything created (default: per cluster)")
	fs.BoolVar(&e.Short, "short", false, "the short form of each drill (the test command's)")
	fs.StringVar(&e.Dir, "dir", "", "scratch directory: media file, player summaries, logs of failed drills (required)")
	fs.StringVar(&e.Loadgen, "loadgen", "loadgen", "the scripts/loadgen binary")
	fs.StringVar(&e.FFmpeg, "ffmpeg", "ffmpeg", "the ffmpeg binary")
	fs.DurationVar(&timeout, "timeout", 5*time.Minute, "bound of each drill")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: drills -tag TAG -dir DIR [-short] [drill...]\n\ndrills:")
		for _, d := range all {
			fmt.Fprintf(stderr, "  %-16s %s\n", d.Name, d.Doc)
		}
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if e.Tag == "" || e.Dir == "" {
		fmt.Fprintln(stderr, "drills: -tag and -dir are required")
		fs.Usage()
		return 2
	}
	todo := all
	if fs.NArg() > 0 {
		todo = nil
		for _, name := range fs.Args() {
			i := slices.IndexFunc(all, func(d drill.Drill) bool { return d.Name == name })
			if i < 0 {
				fmt.Fprintf(stderr, "drills: unknown drill %q\n", name)
				fs.Usage()
				return 2
			}
			todo = append(todo, all[i])
		}
	}
	if err := e.MkdirRun(); err != nil {
		fmt.Fprintln(stderr, "drills:", err)
		return 2
	}
	code := 0
	for _, d := range todo {
		if ctx.Err() != nil {
			return 1
		}
		e.Logf("=== drill %s (short: %v)", d.Name, e.Short)
		dctx, cancel := context.WithTimeout(ctx, timeout)
		t0 := time.Now()
		res, err := d.Run(dctx, e)
		cancel()
		line := drill.Line(d.Name, e.Short, res, err, time.Since(t0))
		fmt.Fprintln(stdout, string(line))
		if err != nil || len(res.Failed) > 0 {
			e.Logf("=== drill %s FAILED: %v %v", d.Name, err, res.Failed)
			code = 1
		} else {
			e.Logf("=== drill %s passed in %v", d.Name, time.Since(t0).Round(100*time.Millisecond))
		}
	}
	return code
}
