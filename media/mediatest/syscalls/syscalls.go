// Package syscalls counts the system calls a test's own thread makes, so a
// test can assert how many writes one call costs (one writev, not one write
// per buffer) without timing anything.
package syscalls

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// ThreadWrites returns the write system calls (write and writev alike) the
// calling thread has made, from /proc/thread-self/io. The caller locks its
// goroutine to its thread (runtime.LockOSThread) around the calls it
// counts. Where the kernel keeps no per-thread I/O accounting the test is
// skipped; a file without a syscw line fails it.
func ThreadWrites(tb testing.TB) int {
	tb.Helper()
	b, err := os.ReadFile("/proc/thread-self/io")
	if err != nil {
		tb.Skipf("no per-thread I/O accounting: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "syscw: "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				tb.Fatalf("reading syscw in /proc/thread-self/io: %v", err)
			}
			return n
		}
	}
	tb.Fatal("no syscw in /proc/thread-self/io")
	return 0
}
