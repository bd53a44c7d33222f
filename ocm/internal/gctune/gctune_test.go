package gctune

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"1234", 1234}, {"512B", 512}, {"64KiB", 64 << 10}, {"192MiB", 192 << 20},
		{"2GiB", 2 << 30}, {"300MB", 300e6}, {"1GB", 1e9}, {"10kB", 10e3}, {" 8 MiB ", 8 << 20},
	} {
		got, err := ParseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "1.5GiB", "12 parsecs", "9999999999GiB"} {
		if n, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", bad, n)
		}
	}
}

func TestSizeRoundTrip(t *testing.T) {
	for _, n := range []int64{0, 1, 1000, 4 << 10, 192 << 20, 3 << 30, 192<<20 + 1} {
		z := Size(n)
		b, _ := z.MarshalText()
		var back Size
		if err := back.UnmarshalText(b); err != nil || back != z {
			t.Errorf("%d: %q read back as %d, %v", n, b, back, err)
		}
	}
	if s := Size(192 << 20).String(); s != "192MiB" {
		t.Errorf("String = %q, want 192MiB", s)
	}
}

// restore puts the process's GC settings back after a test changed them.
func restore(t *testing.T) {
	pct := debug.SetGCPercent(100)
	debug.SetGCPercent(pct)
	lim := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(pct)
		debug.SetMemoryLimit(lim)
	})
}

func TestApplySetsRuntime(t *testing.T) {
	restore(t)
	debug.SetMemoryLimit(math.MaxInt64)
	a := Apply(Settings{GCPercent: 350, MemoryLimit: 100 << 20}, []string{"HOME=/root", "GOGC="})
	if a.GCPercent != "350" || a.MemoryLimit != "100MiB" {
		t.Errorf("Applied = %+v", a)
	}
	if got := debug.SetGCPercent(350); got != 350 {
		t.Errorf("GC percent is %d, want 350", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 100<<20 {
		t.Errorf("memory limit is %d, want %d", got, 100<<20)
	}
}

func TestApplyLeavesEnvironmentChoices(t *testing.T) {
	restore(t)
	debug.SetGCPercent(123)
	debug.SetMemoryLimit(77 << 20)
	a := Apply(Settings{GCPercent: 400, MemoryLimit: 192 << 20}, []string{"GOGC=123", "GOMEMLIMIT=77MiB"})
	if a.GCPercent != "GOGC=123" || a.MemoryLimit != "GOMEMLIMIT=77MiB" {
		t.Errorf("Applied = %+v", a)
	}
	if got := debug.SetGCPercent(123); got != 123 {
		t.Errorf("GC percent is %d, want the environment's 123", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 77<<20 {
		t.Errorf("memory limit is %d, want the environment's %d", got, 77<<20)
	}
}

func TestApplyZeroKeepsDefaults(t *testing.T) {
	restore(t)
	debug.SetGCPercent(100)
	debug.SetMemoryLimit(math.MaxInt64)
	a := Apply(Settings{}, nil)
	if a.GCPercent != "default" || a.MemoryLimit != "none" {
		t.Errorf("Applied = %+v", a)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GC percent is %d, want 100", got)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit is %d, want none", got)
	}
}
