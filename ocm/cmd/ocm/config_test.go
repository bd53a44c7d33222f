package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
