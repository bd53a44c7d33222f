package config

import (
	"os"
	"path/filepath"
	"testing"
)

type fuzzConfig struct {
	Common `yaml:",inline"`
	Limits Limits           `yaml:"limits"`
	Names  []string         `yaml:"names"`
	Sizes  map[string]int64 `yaml:"sizes"`
	Nested struct {
		D Duration `yaml:"d"`
	} `yaml:"nested"`
}

// FuzzLoad: a configuration file of any bytes, with any environment
// variable, loads or is refused with an error; never a panic (a YAML
// alias bomb, a key of the wrong kind, a duration out of range).
func FuzzLoad(f *testing.F) {
	f.Add([]byte("nodeId: n-1\nlog:\n  level: debug\nlimits:\n  maxConns: 5\n  timeouts:\n    rtmpIdle: 3s\n"), "LIVECLUSTER_LIMITS_MAX_CONNS_PER_IP=3")
	f.Add([]byte("a: &a [*a, *a]\nb: *a\n"), "")
	f.Add([]byte("limits: [1, 2]\n"), "LIVECLUSTER_NESTED_D=9999999999999h")
	f.Add([]byte("nested: {d: 30}\nsizes: {x: 1e99}\n"), "LIVECLUSTER_SIZES=x")
	f.Add([]byte("shutdown:\n  startWait: -1s\n\t"), "LIVECLUSTER_=1")
	l := Loader[fuzzConfig]{
		Defaults: func() fuzzConfig { return fuzzConfig{Common: DefaultCommon(), Limits: DefaultLimits()} },
		Validate: func(c *fuzzConfig) error { return c.Limits.Validate() },
		Live:     LimitsLive,
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, file []byte, env string) {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, file, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := l.Load(Source{File: p, Env: []string{env}})
		if err != nil {
			return
		}
		if c.Limits.MaxConns < 0 || c.Limits.PublishBitrateWindow.D() <= 0 {
			t.Fatalf("an invalid configuration loaded: %+v", c.Limits)
		}
		running := *c
		l.Merge(&running, c)
	})
}
