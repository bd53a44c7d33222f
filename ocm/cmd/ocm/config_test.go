package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/config"
)

func TestRuntimeKeys(t *testing.T) {
	l := config.Loader[Config]{Defaults: defaults, Validate: validate}
	c, err := l.Load(config.Source{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Runtime.GCPercent != 400 || c.Runtime.MemoryLimit != 192<<20 {
		t.Errorf("defaults: gcPercent %d, memoryLimit %s", c.Runtime.GCPercent, c.Runtime.MemoryLimit)
	}

	f := filepath.Join(t.TempDir(), "ocm.yaml")
	if err := os.WriteFile(f, []byte("runtime:\n  gcPercent: 200\n  memoryLimit: 1GiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = l.Load(config.Source{File: f})
	if err != nil {
		t.Fatal(err)
	}
	if c.Runtime.GCPercent != 200 || c.Runtime.MemoryLimit != 1<<30 {
		t.Errorf("file: gcPercent %d, memoryLimit %s", c.Runtime.GCPercent, c.Runtime.MemoryLimit)
	}

	c, err = l.Load(config.Source{File: f, Env: []string{"LIVECLUSTER_RUNTIME_MEMORY_LIMIT=0", "LIVECLUSTER_RUNTIME_GC_PERCENT=0"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Runtime.GCPercent != 0 || c.Runtime.MemoryLimit != 0 {
		t.Errorf("env: gcPercent %d, memoryLimit %s", c.Runtime.GCPercent, c.Runtime.MemoryLimit)
	}

	for env, key := range map[string]string{
		"LIVECLUSTER_RUNTIME_MEMORY_LIMIT=lots": "runtime.memoryLimit",
		"LIVECLUSTER_RUNTIME_GC_PERCENT=-5":     "runtime.gcPercent",
	} {
		if _, err := l.Load(config.Source{Env: []string{env}}); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: error %v, want one naming %s", env, err, key)
		}
	}
}

func TestSessionGraceKey(t *testing.T) {
	l := config.Loader[Config]{Defaults: defaults, Validate: validate}
	c, err := l.Load(config.Source{})
	if err != nil {
		t.Fatal(err)
	}
	if c.SessionGrace.D() != 1500*time.Millisecond {
		t.Errorf("default sessionGrace %s, want 1.5s", c.SessionGrace)
	}
	c, err = l.Load(config.Source{Env: []string{"LIVECLUSTER_SESSION_GRACE=2s"}})
	if err != nil || c.SessionGrace.D() != 2*time.Second {
		t.Errorf("env: sessionGrace %s, %v; want 2s", c.SessionGrace, err)
	}
	// Too short for a node to reconnect, or not below the lease TTL.
	for _, env := range [][]string{
		{"LIVECLUSTER_SESSION_GRACE=100ms"},
		{"LIVECLUSTER_SESSION_GRACE=10s"},
		{"LIVECLUSTER_SESSION_GRACE=3s", "LIVECLUSTER_LEASE_TTL=2s"},
	} {
		if _, err := l.Load(config.Source{Env: env}); err == nil || !strings.Contains(err.Error(), "sessionGrace") {
			t.Errorf("%v: error %v, want one naming sessionGrace", env, err)
		}
	}
}
