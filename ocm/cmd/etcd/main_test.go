package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	etcdversion "go.etcd.io/etcd/api/v3/version"

	"github.com/livecluster/livecluster/node/proctest"
	"github.com/livecluster/livecluster/ocm/internal/etcdtest"
)

// The healthcheck subcommand against a real embedded member: healthy, a
// port nobody listens on, an endpoint that is not /health, a bad command
// line.
func TestHealthcheck(t *testing.T) {
	m, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	base := m.Endpoints()[0]

	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := healthcheck(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, errs := run("--url", base+"/health"); code != 0 || !strings.Contains(out, "healthy") {
		t.Fatalf("healthy member: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	closed, err := etcdtest.FreeURL()
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errs := run("--url", closed+"/health", "--timeout", "2s"); code != 1 || !strings.Contains(errs, "GET "+closed) {
		t.Fatalf("nobody listening: exit %d, stderr %q; want 1 and the failed GET", code, errs)
	}
	// /version answers 200 with JSON that is not a health report.
	if code, _, errs := run("--url", base+"/version"); code != 1 || !strings.Contains(errs, `health ""`) {
		t.Fatalf("not a health endpoint: exit %d, stderr %q; want 1", code, errs)
	}
	if code, _, errs := run("extra"); code != 2 || !strings.Contains(errs, "unexpected arguments") {
		t.Fatalf("bad command line: exit %d, stderr %q; want 2", code, errs)
	}
}

// The built binary: etcd's own flags start a member, the healthcheck
// subcommand sees it healthy, version names both versions, SIGTERM stops it.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the etcd binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := proctest.Build(ctx, t.TempDir(), "github.com/livecluster/livecluster/ocm/cmd/etcd")
	if err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "etcd "+etcdversion.Version+" livecluster dev ") {
		t.Fatalf("version: %v: %q; want etcd %s livecluster dev ...", err, out, etcdversion.Version)
	}

	client, peer := "http://"+proctest.FreeAddr(t), "http://"+proctest.FreeAddr(t)
	p := proctest.Start(t, "etcd", bin, "--name", "m0", "--data-dir", t.TempDir(),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "m0="+peer, "--log-level", "warn")
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := exec.Command(bin, "healthcheck", "--url", client+"/health", "--timeout", "1s").CombinedOutput()
		if err == nil {
			break
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("etcd never healthy: %v: %s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Not PID 1 here, so etcd re-raises SIGTERM after closing the member:
	// the process ends by the signal (as PID 1 in a container it exits 0).
	p.Stop(30 * time.Second)
	if strings.Contains(p.Output(), "panic") {
		t.Fatalf("etcd panicked on SIGTERM:\n%s", p.Output())
	}
}
