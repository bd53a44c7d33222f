package config

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	Common `yaml:",inline"`
	GRPC   struct {
		Listen string `yaml:"listen"`
	} `yaml:"grpc"`
	Etcd struct {
		Endpoints []string `yaml:"endpoints"`
	} `yaml:"etcd"`
	LeaseTTL Duration `yaml:"leaseTTL"`
	Limit    int      `yaml:"limit"`
}

func testLoader() *Loader[testConfig] {
	return &Loader[testConfig]{
		Defaults: func() testConfig {
			c := testConfig{Common: DefaultCommon()}
			c.NodeID = "n1"
			c.GRPC.Listen = ":7000"
			c.LeaseTTL = Duration(10 * time.Second)
			return c
		},
		Live: []string{"limit"},
	}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c, err := testLoader().Load(Source{})
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminListen != ":1985" || c.Log.Level != "info" || c.Shutdown.StartWait.D() != 2300*time.Millisecond ||
		c.Shutdown.FinalWait.D() != 3200*time.Millisecond || c.Shutdown.Sigterm != "graceful" || c.Pprof {
		t.Fatalf("bad defaults: %+v", c.Common)
	}
	host, _ := os.Hostname()
	if DefaultCommon().NodeID != host {
		t.Fatalf("nodeId default %q, hostname %q", DefaultCommon().NodeID, host)
	}
}

func TestLayers(t *testing.T) {
	f := writeFile(t, `
nodeId: from-file
log:
  level: debug
shutdown:
  startWait: 1.5s
  finalWait: 4s
grpc:
  listen: ":7001"
etcd:
  endpoints: [a:2379]
`)
	c, err := testLoader().Load(Source{
		File: f,
		Env: []string{"LIVECLUSTER_SHUTDOWN_START_WAIT=700ms", "LIVECLUSTER_GRPC_LISTEN=:7002",
			"LIVECLUSTER_ETCD_ENDPOINTS=x:1, y:2", "LIVECLUSTER_LEASE_TTL=5s", "LIVECLUSTER_FFMPEG=/usr/bin/ffmpeg", "OTHER=1"},
		Flags: map[string]string{"grpc.listen": ":7003", "log.level": "warn"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "from-file" || c.Shutdown.FinalWait.D() != 4*time.Second {
		t.Errorf("file not applied: %+v", c.Common)
	}
	if c.Shutdown.StartWait.D() != 700*time.Millisecond || c.LeaseTTL.D() != 5*time.Second {
		t.Errorf("env not applied: %v %v", c.Shutdown.StartWait, c.LeaseTTL)
	}
	if strings.Join(c.Etcd.Endpoints, "|") != "x:1|y:2" {
		t.Errorf("env list: %q", c.Etcd.Endpoints)
	}
	if c.GRPC.Listen != ":7003" || c.Log.Level != "warn" {
		t.Errorf("flags not applied: %q %q", c.GRPC.Listen, c.Log.Level)
	}
	if c.Shutdown.DrainTimeout.D() != 30*time.Second {
		t.Errorf("default lost under partial file: %v", c.Shutdown.DrainTimeout)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name, file string
		env        []string
		flags      map[string]string
		want       string
	}{
		{"unknown nested key", "shutdown:\n  startWiat: 1s\n", nil, nil, "unknown key shutdown.startWiat"},
		{"unknown top key", "bogus: 1\n", nil, nil, "line 1: unknown key bogus"},
		{"bad duration", "shutdown:\n  startWait: 30\n", nil, nil, `invalid duration "30"`},
		{"negative", "shutdown:\n  startWait: -1s\n", nil, nil, "shutdown.startWait: must be >= 0"},
		{"bad sigterm", "shutdown:\n  sigterm: slow\n", nil, nil, "shutdown.sigterm: must be"},
		{"bad level", "log:\n  level: loud\n", nil, nil, "log.level: must be debug"},
		{"bad listen", "adminListen: nope\n", nil, nil, "adminListen: must be host:port"},
		{"unknown env", "", []string{"LIVECLUSTER_SHUTDOWN_STARTWAIT=1s"}, nil, "unknown environment variable LIVECLUSTER_SHUTDOWN_STARTWAIT"},
		{"bad env", "", []string{"LIVECLUSTER_LIMIT=x"}, nil, "limit (env LIVECLUSTER_LIMIT)"},
		{"bad flag", "", nil, map[string]string{"shutdown.finalWait": "soon"}, "shutdown.finalWait (flag)"},
		{"bad node id", "nodeId: -x\n", nil, nil, `nodeId: invalid node id "-x": must start with`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := Source{Env: tc.env, Flags: tc.flags}
			if tc.file != "" {
				src.File = writeFile(t, tc.file)
			}
			_, err := testLoader().Load(src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"shutdown.startWait": "LIVECLUSTER_SHUTDOWN_START_WAIT",
		"nodeId":             "LIVECLUSTER_NODE_ID",
		"adminListen":        "LIVECLUSTER_ADMIN_LISTEN",
		"leaseTTL":           "LIVECLUSTER_LEASE_TTL",
		"http.writeDefaults": "LIVECLUSTER_HTTP_WRITE_DEFAULTS",
		"grpc.listen":        "LIVECLUSTER_GRPC_LISTEN",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMerge(t *testing.T) {
	l := testLoader()
	old, _ := l.Load(Source{})
	next := *old
	next.Log.Level = "debug"
	next.Shutdown.StartWait = Duration(time.Second)
	next.Limit = 7
	next.GRPC.Listen = ":9999"
	next.NodeID = "other"
	merged, changed, restart := l.Merge(old, &next)
	if merged.Log.Level != "debug" || merged.Shutdown.StartWait.D() != time.Second || merged.Limit != 7 {
		t.Errorf("live keys not applied: %+v", merged)
	}
	if merged.GRPC.Listen != ":7000" || merged.NodeID != "n1" {
		t.Errorf("restart-only keys applied: %q %q", merged.GRPC.Listen, merged.NodeID)
	}
	if strings.Join(restart, ",") != "nodeId,grpc.listen" {
		t.Errorf("restartOnly = %v", restart)
	}
	if strings.Join(changed, ",") != "log.level,shutdown.startWait,limit" {
		t.Errorf("changed = %v", changed)
	}
	if old.Log.Level != "info" {
		t.Error("Merge mutated running config")
	}
}

// The test scripts export tool paths as LIVECLUSTER_ variables, and every
// binary a test starts inherits them: each must be reserved, or every
// binary refuses to start ("unknown environment variable"). An unreserved
// LIVECLUSTER_HELM once failed every multi-process edge test this way.
func TestScriptExportsAreReserved(t *testing.T) {
	scripts, err := filepath.Glob("../../scripts/*.sh")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scripts found: %v", err)
	}
	export := regexp.MustCompile(`export (LIVECLUSTER_[A-Z0-9_]+)=`)
	var env []string
	for _, p := range scripts {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range export.FindAllSubmatch(b, -1) {
			name := string(m[1])
			if !slices.Contains(ReservedEnv, name) {
				t.Errorf("%s exports %s, which is not in ReservedEnv", filepath.Base(p), name)
			}
			env = append(env, name+"=/x")
		}
	}
	if len(env) == 0 {
		t.Fatal("no LIVECLUSTER_ export found in scripts/*.sh; the pattern is stale")
	}
	for _, r := range ReservedEnv {
		env = append(env, r+"=/x")
	}
	if _, err := testLoader().Load(Source{Env: env}); err != nil {
		t.Fatalf("reserved variables refused: %v", err)
	}
}
