// Package procstat samples a process's CPU time and resident memory from
// Linux /proc.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ticksPerSecond is USER_HZ, the unit of utime/stime in /proc/PID/stat;
// Linux exports it as 100 on every architecture, whatever the kernel's HZ.
const ticksPerSecond = 100

// Sample is one reading of a process.
type Sample struct {
	CPU time.Duration // utime + stime since the process started
	RSS int64         // resident set size, bytes (VmRSS)
}

// Read samples process pid ("self" for the caller). It fails when the
// process is gone or /proc is not Linux's.
func Read(pid string) (Sample, error) {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return Sample{}, fmt.Errorf("sample process %s: %w", pid, err)
	}
	cpu, err := parseStat(stat)
	if err != nil {
		return Sample{}, fmt.Errorf("sample process %s: %w", pid, err)
	}
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return Sample{}, fmt.Errorf("sample process %s: %w", pid, err)
	}
	rss, err := parseStatus(status)
	if err != nil {
		return Sample{}, fmt.Errorf("sample process %s: %w", pid, err)
	}
	return Sample{CPU: cpu, RSS: rss}, nil
}

// parseStat returns utime+stime of a /proc/PID/stat line. The command name
// (field 2) may hold spaces and parentheses, so fields are counted after
// its last ')'.
func parseStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat: %d fields", len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc stat utime/stime %q %q", f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / ticksPerSecond, nil
}

// parseStatus returns VmRSS of /proc/PID/status in bytes (0 for a zombie,
// which has no VmRSS line).
func parseStatus(b []byte) (int64, error) {
	for _, l := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(l, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed VmRSS line %q", l)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed VmRSS line %q", l)
		}
		return kb << 10, nil
	}
	return 0, nil
}
