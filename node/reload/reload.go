// Package reload triggers configuration reloads: on changes in the config
// file's directory and on SIGHUP.
//
// The directory, not the file, is watched because Kubernetes never writes a
// mounted ConfigMap file: config.yaml is a symlink to ..data/config.yaml,
// and an update writes a new timestamped directory, points a ..data_tmp
// symlink at it and renames ..data_tmp onto ..data. Editors that save by
// rename behave alike. Events are debounced; after the quiet period the
// file's content is compared with the last content seen and only a real
// change triggers a reload. SIGHUP always reloads.
//
// Signals are owned by package lifecycle; the watcher receives SIGHUP as
// values on Options.Trigger (lifecycle.Lifecycle.Reloads).
//
// The reload itself (re-load through the config loader so env and flags
// still apply, validate, merge live keys, apply) is Options.Reload. When it
// fails the running configuration stays, an error-level log line carries
// the error (which names the key), and
// livecluster_config_reload_total{result="failure"} grows; on success
// {result="success"} grows and
// livecluster_config_last_reload_success_timestamp_seconds is set.
package reload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultDebounce is the quiet period after the last file event.
const DefaultDebounce = 200 * time.Millisecond

// Options configure a Watcher.
type Options struct {
	// Path is the config file; empty disables the directory watch (SIGHUP
	// still works).
	Path string
	// Trigger delivers one value per SIGHUP.
	Trigger <-chan struct{}
	// Reload loads, validates and applies the configuration. An error means
	// the running configuration was kept.
	Reload func(ctx context.Context) error
	Logger *slog.Logger
	// Registerer receives the reload metrics; nil skips them.
	Registerer prometheus.Registerer
	// Debounce is the quiet period after file events; 0 means
	// DefaultDebounce.
	Debounce time.Duration
}

// Watcher runs reloads; it is started with Run.
type Watcher struct {
	opts     Options
	log      *slog.Logger
	total    *prometheus.CounterVec
	lastOK   prometheus.Gauge
	lastSeen []byte
}

// New registers the metrics and remembers the current file content (the
// one the process started with).
func New(opts Options) (*Watcher, error) {
	if opts.Reload == nil {
		return nil, errors.New("reload: Options.Reload is nil")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	w := &Watcher{
		opts: opts,
		log:  opts.Logger.With("component", "reload"),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livecluster_config_reload_total",
			Help: "Configuration reloads by result (success: applied; failure: refused, running configuration kept).",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livecluster_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load (start-up counts).",
		}),
	}
	w.total.WithLabelValues("success")
	w.total.WithLabelValues("failure")
	w.lastOK.SetToCurrentTime()
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(w.total); err != nil {
			return nil, fmt.Errorf("register reload metrics: %w", err)
		}
		if err := opts.Registerer.Register(w.lastOK); err != nil {
			return nil, fmt.Errorf("register reload metrics: %w", err)
		}
	}
	if opts.Path != "" {
		w.lastSeen, _ = os.ReadFile(opts.Path)
	}
	return w, nil
}

// Run watches until ctx ends. It returns an error only if the directory
// cannot be watched at all.
func (w *Watcher) Run(ctx context.Context) error {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w.opts.Path != "" {
		fw, err := fsnotify.NewWatcher()
		if err != nil {
			return fmt.Errorf("watch config: %w", err)
		}
		defer fw.Close()
		dir := filepath.Dir(w.opts.Path)
		if err := fw.Add(dir); err != nil {
			return fmt.Errorf("watch config directory %s: %w", dir, err)
		}
		events, errs = fw.Events, fw.Errors
		w.log.Info("watching config directory", "dir", dir, "file", filepath.Base(w.opts.Path))
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.opts.Trigger:
			w.log.Info("reload requested", "by", "SIGHUP")
			w.remember()
			_ = w.ReloadNow(ctx, "SIGHUP")
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			w.log.Debug("config directory event", "name", ev.Name, "op", ev.Op.String())
			debounce.Reset(w.opts.Debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			w.log.Warn("config watch error", "err", err.Error())
		case <-debounce.C:
			data, err := os.ReadFile(w.opts.Path)
			if err != nil {
				// Mid-swap, or the file was removed: wait for the next event
				// rather than failing a reload of a file that is coming back.
				w.log.Warn("config file unreadable after change; waiting for the next change", "err", err.Error())
				continue
			}
			if bytes.Equal(data, w.lastSeen) {
				continue
			}
			w.lastSeen = data
			_ = w.ReloadNow(ctx, "file change")
		}
	}
}

func (w *Watcher) remember() {
	if w.opts.Path == "" {
		return
	}
	if data, err := os.ReadFile(w.opts.Path); err == nil {
		w.lastSeen = data
	}
}

// ReloadNow reloads at once and records the result.
func (w *Watcher) ReloadNow(ctx context.Context, reason string) error {
	if err := w.opts.Reload(ctx); err != nil {
		// Log before counting: whoever sees the counter move (a test, an
		// operator's alert) then finds the line that says why.
		w.log.Error("config reload refused; keeping the running configuration",
			"reason", reason, "file", w.opts.Path, "err", err.Error())
		w.total.WithLabelValues("failure").Inc()
		return err
	}
	w.total.WithLabelValues("success").Inc()
	w.lastOK.SetToCurrentTime()
	return nil
}
