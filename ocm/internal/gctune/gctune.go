// Package gctune applies the OCM's garbage-collector settings (the gcPercent
// and memoryLimit configuration keys) unless the user chose them with the Go
// runtime's own GOGC and GOMEMLIMIT environment variables, which always win.
//
// Why the OCM sets them at all: a lookup-bound replica spends about a fifth
// of its CPU in the garbage collector at Go's default GOGC=100, nearly all of
// it marking the long-lived cache and etcd index (tens of MB at 100k streams)
// once per cycle, while each RPC leaves only a few KiB of garbage. A higher
// GOGC makes cycles rarer; the memory limit bounds what that costs in RSS.
package gctune

import (
	"fmt"
	"math"
	"runtime/debug"
	"strconv"
	"strings"
)

// Settings are the requested values. GCPercent <= 0 and MemoryLimit <= 0
// leave the runtime's values alone.
type Settings struct {
	GCPercent   int
	MemoryLimit Size
}

// Applied says what Apply did, for the start-up log.
type Applied struct {
	GCPercent   string // e.g. "400", "GOGC=200" (from the environment), "default"
	MemoryLimit string // e.g. "192MiB", "GOMEMLIMIT=1GiB", "none"
}

// Apply sets the GC percent and memory limit from s, except for a knob whose
// environment variable is set in env (as os.Environ: "KEY=value").
func Apply(s Settings, env []string) Applied {
	a := Applied{GCPercent: "default", MemoryLimit: "none"}
	lookup := func(name string) (string, bool) {
		for _, kv := range env {
			if k, v, ok := strings.Cut(kv, "="); ok && k == name && v != "" {
				return v, true
			}
		}
		return "", false
	}
	if v, ok := lookup("GOGC"); ok {
		a.GCPercent = "GOGC=" + v
	} else if s.GCPercent > 0 {
		debug.SetGCPercent(s.GCPercent)
		a.GCPercent = strconv.Itoa(s.GCPercent)
	}
	if v, ok := lookup("GOMEMLIMIT"); ok {
		a.MemoryLimit = "GOMEMLIMIT=" + v
	} else if s.MemoryLimit > 0 {
		debug.SetMemoryLimit(int64(s.MemoryLimit))
		a.MemoryLimit = s.MemoryLimit.String()
	}
	return a
}

// Size is a byte count in configuration: a plain number of bytes, or a
// number with one of the suffixes B, KiB, MiB, GiB (powers of 1024) or kB,
// MB, GB (powers of 1000), as GOMEMLIMIT accepts.
type Size int64

// UnmarshalText parses a size (YAML strings, environment variables and
// flags; a plain YAML integer is read as bytes).
func (z *Size) UnmarshalText(b []byte) error {
	n, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*z = Size(n)
	return nil
}

// MarshalText writes the size as ParseSize reads it.
func (z Size) MarshalText() ([]byte, error) { return []byte(z.String()), nil }

// String formats the size in the largest binary unit that divides it.
func (z Size) String() string { return FormatSize(int64(z)) }

// ParseSize reads a byte count: a plain number of bytes, or a number with
// one of the suffixes B, KiB, MiB, GiB (powers of 1024) or kB, MB, GB
// (powers of 1000), as GOMEMLIMIT accepts.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	num := s
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q (want e.g. \"192MiB\", \"1GiB\", or 0 for none)", s)
	}
	return n * mult, nil
}

// FormatSize writes n the way ParseSize reads it, in the largest binary unit
// that divides it.
func FormatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
