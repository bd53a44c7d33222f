package e2e

import (
	"path/filepath"
	"testing"
	"time"
)

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
		r0, t0 := e.ReadSyscalls(), time.Now()
		time.Sleep(4 * time.Second)
		r1, t1 := e.ReadSyscalls(), time.Now()
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
