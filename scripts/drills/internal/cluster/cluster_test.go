package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseMetrics(t *testing.T) {
	m := ParseMetrics([]byte(`# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
process_open_fds 17 1700000000000
livecluster_x{kind="a b"} 3.5
garbage
`))
	if m["go_goroutines"] != 42 || m["process_open_fds"] != 17 || m[`livecluster_x{kind="a b"}`] != 3.5 || len(m) != 3 {
		t.Fatalf("parsed %v", m)
	}
}

// imageTag returns the tag to test with ($LC_DRILL_TAG, else $VERSION) or
// skips when Docker or the image is not there.
func imageTag(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts containers")
	}
	tag := os.Getenv("LC_DRILL_TAG")
	if tag == "" {
		tag = os.Getenv("VERSION")
	}
	if tag == "" {
		t.Skip("set LC_DRILL_TAG (or VERSION) to the tag scripts/images.sh built")
	}
	if err := exec.Command("docker", "image", "inspect", "livecluster/ocm:"+tag).Run(); err != nil {
		t.Skipf("no image livecluster/ocm:%s (docker: %v)", tag, err)
	}
	return tag
}

// A real OCM container: ready, metrics readable, SIGKILL ends PID 1 with
// 137, and Close leaves no container or network of the run.
func TestClusterKillAndClose(t *testing.T) {
	tag := imageTag(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := New(ctx, Options{Prefix: "lc-cltest", Tag: tag, LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ocm, err := c.OCM(ctx, "ocm", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, ocm); err != nil {
		t.Fatal(err)
	}
	m, err := ocm.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m["go_goroutines"] <= 0 || m["process_open_fds"] <= 0 {
		t.Fatalf("no go_goroutines / process_open_fds in the OCM's metrics: %d samples", len(m))
	}
	extra, err := c.AddNetwork(ctx, "ctl")
	if err != nil {
		t.Fatal(err)
	}
	if err := ocm.Connect(ctx, extra); err != nil {
		t.Fatal(err)
	}
	if _, err := ocm.IPOn(ctx, extra); err != nil {
		t.Fatal(err)
	}
	if err := ocm.Disconnect(ctx, extra); err != nil {
		t.Fatal(err)
	}
	if _, err := ocm.IPOn(ctx, extra); err == nil {
		t.Fatal("still on the extra network after Disconnect")
	}
	if err := ocm.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if code, err := ocm.Wait(ctx); err != nil || code != 137 {
		t.Fatalf("exit code after SIGKILL: %d, %v; want 137", code, err)
	}
	run := c.o.RunLabel
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, what := range [][]string{{"ps", "-aq"}, {"network", "ls", "-q"}} {
		out, err := exec.Command("docker", append(what, "--filter", "label="+Label+"="+run)...).Output()
		if err != nil {
			t.Fatal(err)
		}
		if s := strings.TrimSpace(string(out)); s != "" {
			t.Fatalf("docker %s: left behind after Close: %s", what[0], s)
		}
	}
}

// Binds and Aliases: an origin writes its OCM history into a bound host
// directory (the root is read-only, /data a tmpfs), and answers on the
// extra network under its alias; a malformed bind is refused before
// anything starts.
func TestClusterBindsAndAliases(t *testing.T) {
	tag := imageTag(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := New(ctx, Options{Prefix: "lc-cltest", Tag: tag, LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Run(ctx, Spec{Name: "bad", Image: "ocm", Binds: []string{"relative:/x"}}); err == nil {
		t.Fatal("Run accepted a bind with a relative host path")
	}
	dir := filepath.Join(t.TempDir(), "hist")
	if err := BindDir(dir); err != nil {
		t.Fatal(err)
	}
	extra, err := c.AddNetwork(ctx, "pub")
	if err != nil {
		t.Fatal(err)
	}
	o := c.OriginSpec("origin", "ocm", map[string]string{"LIVECLUSTER_OCM_HISTORY": "/history/origin.jsonl"})
	o.Binds, o.Networks, o.Aliases = []string{dir + ":/history"}, []string{extra}, []string{"origin-pub"}
	ks, err := c.RunAll(ctx, c.OCMSpec("ocm", nil), o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "origin.jsonl"))
	if err != nil || !strings.Contains(string(b), `"op":"register"`) || !strings.Contains(string(b), `"result":"ok"`) {
		t.Fatalf("history in the bound directory: %v, %q", err, b)
	}
	out, err := c.docker(ctx, "inspect", "-f", `{{with index .NetworkSettings.Networks "`+extra+`"}}{{.Aliases}}{{end}}`, ks[1].Name)
	if err != nil || !strings.Contains(out, "origin-pub") {
		t.Fatalf("aliases on %s: %q, %v", extra, out, err)
	}
	out, err = c.docker(ctx, "inspect", "-f", `{{with index .NetworkSettings.Networks "`+c.Network()+`"}}{{.Aliases}}{{end}}`, ks[1].Name)
	if err != nil || strings.Contains(out, "origin-pub") {
		t.Fatalf("alias leaked onto the default network: %q, %v", out, err)
	}
}
