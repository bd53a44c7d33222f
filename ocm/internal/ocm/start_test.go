package ocm_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/ocm/internal/etcdtest"
	"github.com/livecluster/livecluster/ocm/internal/ocm"
)

// A Start that fails returns its error (no panic) and releases what it had
// opened: here the embedded etcd is up when the gRPC listen fails, and a
// second Start on the same data dir and etcd ports must get them.
func TestStartFailureReleasesEmbeddedEtcd(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	client, err := etcdtest.FreeURL()
	if err != nil {
		t.Fatal(err)
	}
	peer, err := etcdtest.FreeURL()
	if err != nil {
		t.Fatal(err)
	}
	cfg := ocm.Config{
		GRPCListen: busy.Addr().String(), DataDir: filepath.Join(t.TempDir(), "etcd"),
		EmbeddedClientURL: client, EmbeddedPeerURL: peer, ShutdownTimeout: 5 * time.Second,
	}
	o, err := ocm.Start(ctxT(t, 60*time.Second), cfg)
	if err == nil || o != nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Start on a busy gRPC port: %v, %v; want a listen error and no OCM", o, err)
	}

	cfg.GRPCListen = "127.0.0.1:0"
	o, err = ocm.Start(ctxT(t, 60*time.Second), cfg)
	if err != nil {
		t.Fatalf("second Start on the same data dir and etcd ports: %v", err)
	}
	defer o.Stop()
	if err := o.WaitReady(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// An embedded etcd that cannot start (its data dir cannot be made) is an
// error, not a panic.
func TestStartFailsOnUnusableDataDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := ocm.Start(ctxT(t, 30*time.Second), ocm.Config{GRPCListen: "127.0.0.1:0", DataDir: filepath.Join(file, "etcd")})
	if err == nil || o != nil || !strings.Contains(err.Error(), "embedded etcd") {
		t.Fatalf("Start with a data dir under a file: %v, %v; want an embedded etcd error", o, err)
	}
}
