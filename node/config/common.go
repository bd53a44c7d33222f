// Package config loads the YAML configuration shared by the livecluster
// binaries (ocm, origin, edge).
//
// Each binary has its own Config struct that embeds Common inline:
//
//	type Config struct {
//		config.Common `yaml:",inline"`
//		GRPC struct {
//			Listen string `yaml:"listen"`
//		} `yaml:"grpc"`
//	}
//
// A Loader builds a Config in four layers, each overriding the previous one:
//
//  1. defaults, from one function per binary (Loader.Defaults), so every
//     default lives in one place;
//  2. the YAML file (--config), strict: an unknown key is an error that names
//     the key path and line;
//  3. environment variables: LIVECLUSTER_ + the key path in upper snake case
//     (shutdown.startWait → LIVECLUSTER_SHUTDOWN_START_WAIT); an unknown
//     LIVECLUSTER_ variable is an error naming the variable, except the
//     reserved ones listed in ReservedEnv;
//  4. flags that were actually set on the command line (a map key path →
//     string value).
//
// The result is then validated; every validation error names its key
// (`shutdown.startWait: must be >= 0`).
//
// # Live and restart-only keys
//
// A Loader states which keys reload live (Loader.Live plus CommonLive:
// log.level and shutdown.*). On a reload, Loader.Merge copies only those
// keys from the new configuration into the running one; a changed key that
// needs a restart is reported back, logged as a warning by the caller and
// NOT applied, so the running process never runs with a half-applied
// configuration. docs/configuration.md lists every common key.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/livecluster/livecluster/streamkey/nodeid"
)

// Duration is a time.Duration that reads and writes as a Go duration string
// ("2.3s", "500ms") in YAML and environment variables.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes d as a duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a duration string. A bare number is refused: "30" is
// ambiguous (seconds? nanoseconds?) and a unit is cheap to write.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: expected a duration such as \"2.3s\"", n.Line)
	}
	return d.UnmarshalText([]byte(n.Value))
}

// UnmarshalText parses a Go duration string (used for env vars and flags).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. \"2.3s\", \"500ms\")", string(b))
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes d as a duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// SIGTERM handling modes for shutdown.sigterm.
const (
	SigtermGraceful = "graceful"
	SigtermFast     = "fast"
)

// Common holds the keys every binary has. Embed it inline in a binary's
// Config struct.
type Common struct {
	// NodeID names the node in the cluster (in Kubernetes: the pod name).
	NodeID string `yaml:"nodeId"`
	// AdminListen is the admin HTTP address: /healthz, /readyz, /metrics,
	// the JSON API and /api/v1/drain.
	AdminListen string `yaml:"adminListen"`
	// Admin secures the admin port: HTTPS and a token for changes.
	Admin    Admin    `yaml:"admin"`
	Log      Log      `yaml:"log"`
	Pprof    bool     `yaml:"pprof"`
	Shutdown Shutdown `yaml:"shutdown"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
}

// Shutdown configures the graceful drain (see package lifecycle).
type Shutdown struct {
	// StartWait is how long the node keeps accepting connections after
	// readiness fails, while the load balancer removes it.
	StartWait Duration `yaml:"startWait"`
	// DrainTimeout bounds the drain hooks (stream hand-off, clients leaving).
	DrainTimeout Duration `yaml:"drainTimeout"`
	// FinalWait is the pause after deregistering, before exit.
	FinalWait Duration `yaml:"finalWait"`
	// Sigterm is "graceful" (SIGTERM drains) or "fast" (SIGTERM quits at
	// once; SIGQUIT still drains).
	Sigterm string `yaml:"sigterm"`
}

// CommonConfig returns c itself; through embedding it gives the loader and
// the runtime access to the common keys of any binary's Config.
func (c *Common) CommonConfig() *Common { return c }

// HasCommon is implemented by a pointer to any struct that embeds Common.
type HasCommon interface{ CommonConfig() *Common }

// DefaultCommon returns the defaults of the common keys. nodeId defaults to
// the host name (the pod name in Kubernetes).
func DefaultCommon() Common {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return Common{
		NodeID:      host,
		AdminListen: ":1985",
		Log:         Log{Level: "info"},
		Pprof:       false,
		Shutdown: Shutdown{
			StartWait:    Duration(2300 * time.Millisecond),
			DrainTimeout: Duration(30 * time.Second),
			FinalWait:    Duration(3200 * time.Millisecond),
			Sigterm:      SigtermGraceful,
		},
	}
}

// CommonLive are the common keys that reload without a restart.
var CommonLive = []string{"log.level", "shutdown.*"}

// Validate checks the common keys; each error names its key.
func (c *Common) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("nodeId: must not be empty"))
	} else if err := nodeid.Validate(c.NodeID); err != nil {
		errs = append(errs, fmt.Errorf("nodeId: %w", err))
	}
	if err := ValidListen(c.AdminListen); err != nil {
		errs = append(errs, fmt.Errorf("adminListen: %w", err))
	}
	if err := c.Admin.TLS.Validate("admin.tls"); err != nil {
		errs = append(errs, err)
	}
	if err := c.Admin.Token.Validate("admin"); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		errs = append(errs, fmt.Errorf("log.level: %w", err))
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"shutdown.startWait", c.Shutdown.StartWait},
		{"shutdown.drainTimeout", c.Shutdown.DrainTimeout},
		{"shutdown.finalWait", c.Shutdown.FinalWait},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must be >= 0, got %s", d.key, d.v))
		}
	}
	if c.Shutdown.Sigterm != SigtermGraceful && c.Shutdown.Sigterm != SigtermFast {
		errs = append(errs, fmt.Errorf("shutdown.sigterm: must be %q or %q, got %q",
			SigtermGraceful, SigtermFast, c.Shutdown.Sigterm))
	}
	return errors.Join(errs...)
}

// ParseLevel parses a log level: debug, info, warn or error (any case).
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch s {
	case "debug", "DEBUG", "info", "INFO", "warn", "WARN", "error", "ERROR":
		if err := l.UnmarshalText([]byte(s)); err != nil {
			return 0, err
		}
		return l, nil
	}
	return 0, fmt.Errorf("must be debug, info, warn or error, got %q", s)
}
