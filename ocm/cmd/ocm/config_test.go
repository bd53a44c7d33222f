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
	l := loader()
	c, err := l.Load(config.Source{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Runtime.GCPercent != 400 || c.Runtime.MemoryLimit != 512<<20 {
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
	l := loader()
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

// TestAuthKeys: tokens from the YAML list, each checked (identity, one
// source), and the TLS pair; a bad one is an error naming its key.
func TestAuthKeys(t *testing.T) {
	l := loader()
	dir := t.TempDir()
	load := func(yaml string) (*Config, error) {
		f := filepath.Join(dir, "ocm.yaml")
		if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		return l.Load(config.Source{File: f})
	}
	c, err := load("auth:\n  tokens:\n    - identity: \"origin:*\"\n      tokenFile: /t/origin\n    - identity: admin\n      token: x\n  openReads: true\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Auth.Tokens) != 2 || c.Auth.Tokens[0].Identity != "origin:*" || c.Auth.Tokens[0].TokenFile != "/t/origin" || !c.Auth.OpenReads {
		t.Errorf("auth %+v", c.Auth)
	}
	for yaml, key := range map[string]string{
		"auth:\n  tokens:\n    - identity: root\n      token: x\n":                       "auth.tokens[0].identity",
		"auth:\n  tokens:\n    - identity: edge:*\n":                                     "auth.tokens[0]: token or tokenFile",
		"auth:\n  tokens:\n    - identity: edge:*\n      token: x\n      tokenFile: y\n": "auth.tokens[0].token",
		"auth:\n  tokens:\n    - identity: edge:*\n      tokn: x\n":                      "tokn",
		"grpc:\n  tls:\n    certFile: a\n":                                               "grpc.tls.certFile",
		"grpc:\n  tls:\n    clientCAFile: a\n":                                           "grpc.tls.clientCAFile",
		"admin:\n  token: a\n  tokenFile: b\n":                                           "admin.token",
	} {
		if _, err := load(yaml); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: error %v, want one naming %s", yaml, err, key)
		}
	}
}
