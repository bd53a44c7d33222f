package reload

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/livecluster/livecluster/node/config"
)

type cfg struct {
	config.Common `yaml:",inline"`
	Limit         int `yaml:"limit"`
}

var loader = config.Loader[cfg]{
	Defaults: func() cfg {
		c := cfg{Common: config.DefaultCommon()}
		c.NodeID = "n1"
		return c
	},
	Live: []string{"limit"},
}

// syncBuffer is a log sink the watcher goroutine writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// configMapDir lays out a directory the way the kubelet mounts a ConfigMap.
type configMapDir struct {
	t   *testing.T
	dir string
	gen int
	cur string
}

func newConfigMapDir(t *testing.T, body string) *configMapDir {
	d := &configMapDir{t: t, dir: t.TempDir()}
	d.cur = d.writeGen(body)
	must(t, os.Symlink(d.cur, filepath.Join(d.dir, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "config.yaml"), filepath.Join(d.dir, "config.yaml")))
	return d
}

func (d *configMapDir) writeGen(body string) string {
	d.gen++
	name := "..2026_11_25_10_00_0" + string(rune('0'+d.gen)) + ".12345678" + string(rune('0'+d.gen))
	must(d.t, os.Mkdir(filepath.Join(d.dir, name), 0o755))
	must(d.t, os.WriteFile(filepath.Join(d.dir, name, "config.yaml"), []byte(body), 0o644))
	return name
}

// update is the kubelet's atomic swap: new dir, ..data_tmp symlink,
// rename onto ..data, remove the old dir.
func (d *configMapDir) update(body string) {
	next := d.writeGen(body)
	tmp := filepath.Join(d.dir, "..data_tmp")
	must(d.t, os.Symlink(next, tmp))
	must(d.t, os.Rename(tmp, filepath.Join(d.dir, "..data")))
	must(d.t, os.RemoveAll(filepath.Join(d.dir, d.cur)))
	d.cur = next
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestConfigMapSwapAndRefusal(t *testing.T) {
	cm := newConfigMapDir(t, "limit: 1\nlog:\n  level: info\n")
	path := filepath.Join(cm.dir, "config.yaml")
	src := config.Source{File: path, Env: []string{"LIVECLUSTER_SHUTDOWN_FINAL_WAIT=7s"}}
	first, err := loader.Load(src)
	must(t, err)
	var current atomic.Pointer[cfg]
	current.Store(first)
	var applied atomic.Int32

	var logs syncBuffer
	reg := prometheus.NewRegistry()
	trigger := make(chan struct{})
	w, err := New(Options{
		Path: path, Trigger: trigger, Registerer: reg, Debounce: 50 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Reload: func(ctx context.Context) error {
			next, err := loader.Load(src)
			if err != nil {
				return err
			}
			merged, _, _ := loader.Merge(current.Load(), next)
			current.Store(merged)
			applied.Add(1)
			return nil
		},
	})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, "watching", func() bool { return hasMsg(logs.lines(), "watching config directory") })

	success := w.total.WithLabelValues("success")
	failure := w.total.WithLabelValues("failure")
	before := testutil.ToFloat64(w.lastOK)

	cm.update("limit: 2\nlog:\n  level: debug\n")
	waitFor(t, "new value applied", func() bool { return current.Load().Limit == 2 })
	if c := current.Load(); c.Log.Level != "debug" || c.Shutdown.FinalWait.D() != 7*time.Second {
		t.Errorf("after swap: level %q finalWait %s (env must still apply)", c.Log.Level, c.Shutdown.FinalWait)
	}
	if got := testutil.ToFloat64(success); got != 1 {
		t.Errorf("success counter %v, want 1", got)
	}
	if testutil.ToFloat64(w.lastOK) < before {
		t.Error("last success timestamp did not move")
	}

	for i, bad := range []struct{ body, want string }{
		{"limit: 3\nshutdown:\n  startWiat: 1s\n", "unknown key shutdown.startWiat"},
		{"limit: 3\nshutdown:\n  startWait: -1s\n", "shutdown.startWait: must be >= 0"},
	} {
		cm.update(bad.body)
		waitFor(t, "refusal counted", func() bool { return testutil.ToFloat64(failure) == float64(i+1) })
		if c := current.Load(); c.Limit != 2 {
			t.Errorf("refused config applied: limit %d", c.Limit)
		}
		var found bool
		for _, l := range logs.lines() {
			if l["msg"] == "config reload refused; keeping the running configuration" && l["level"] == "ERROR" &&
				strings.Contains(l["err"].(string), bad.want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no error-level refusal log naming %q", bad.want)
		}
	}
	if n := applied.Load(); n != 1 {
		t.Errorf("applied %d times, want 1", n)
	}

	// SIGHUP (as delivered by the lifecycle) reloads even without a change.
	cm.update("limit: 4\n")
	waitFor(t, "fixed file applied", func() bool { return current.Load().Limit == 4 })
	trigger <- struct{}{}
	waitFor(t, "SIGHUP reload", func() bool { return applied.Load() == 3 })
	if got := testutil.ToFloat64(success); got != 3 {
		t.Errorf("success counter %v, want 3", got)
	}
	// A touch with identical content is not a reload.
	must(t, os.Chtimes(filepath.Join(cm.dir, cm.cur, "config.yaml"), time.Now(), time.Now()))
	cm.update("limit: 4\n")
	time.Sleep(300 * time.Millisecond) // nothing to poll for: asserting that nothing happens
	if n := applied.Load(); n != 3 {
		t.Errorf("identical content reloaded: applied %d", n)
	}
}

func hasMsg(lines []map[string]any, msg string) bool {
	for _, l := range lines {
		if l["msg"] == msg {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
