package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readSyscalls returns the read system calls pid has made (syscr of
// /proc/<pid>/io: every read(2), those that found nothing included).
func readSyscalls(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Skipf("cannot count read system calls: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "syscr: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/io has no syscr line", pid)
	return 0
}

// The edge's rtmp.publishReadWindow applies to the publishers it forwards,
// and 0s turns it off on reload: the edge's read system calls per second
// during a real ffmpeg publish forwarded to an origin, with the 50 ms
// default and then after a reload to 0s (a new publish, as the key applies
// to the next one). An edge that ignored the key, or read it only at
// start, reads alike both times.
func TestEdgePublishReadWindowKey(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.startOrigin("origin-0")
	e := c.startEdge("edge-rw")
	readsPerSecond := func(name string) float64 {
		t.Helper()
		pub := c.publish("ffmpeg-"+name, "rtmp://"+e.rtmp+"/live/"+name)
		c.waitOwner(name, "origin-0", 15*time.Second)
		time.Sleep(time.Second) // past the publish's setup
		pid := e.Cmd.Process.Pid
		r0, t0 := readSyscalls(t, pid), time.Now()
		time.Sleep(4 * time.Second)
		r1, t1 := readSyscalls(t, pid), time.Now()
		if pub.Exited() {
			t.Fatalf("ffmpeg stopped publishing %s:\n%s", name, pub.Output())
		}
		pub.Stop(5 * time.Second)
		return float64(r1-r0) / t1.Sub(t0).Seconds()
	}
	on := readsPerSecond("rw-default")
	writeFile(t, filepath.Join(c.dir, e.id+".yaml"), edgeConfig+"rtmp:\n  publishReadWindow: 0s\n")
	e.WaitOutput(`"changed":["rtmp.publishReadWindow"]`, 10*time.Second)
	off := readsPerSecond("rw-off")
	t.Logf("edge read system calls per second while forwarding a publish: window 50ms (default) %.0f, window 0s (reloaded) %.0f", on, off)
	if off < 2*on {
		t.Errorf("reads per second: %.0f with the window off, %.0f with the 50ms default; want the window to at least halve them", off, on)
	}
}
