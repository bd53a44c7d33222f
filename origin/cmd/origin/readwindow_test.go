package main

import (
	"os"
	"testing"
	"time"
)

// readsPerSecond publishes the test stream (ffmpeg, real time) as name and
// returns the origin's read system calls per second over 4 s of it.
func readsPerSecond(t *testing.T, ocm *ocmProc, o *originProc, name string) float64 {
	t.Helper()
	ff := publish(t, o.url(name))
	waitOwner(t, ocm, name, o.id, 15*time.Second)
	time.Sleep(time.Second) // past the publish's setup and the GOP burst
	r0, t0 := o.ReadSyscalls(), time.Now()
	time.Sleep(4 * time.Second)
	r1, t1 := o.ReadSyscalls(), time.Now()
	if ff.Exited() {
		t.Fatalf("ffmpeg stopped publishing %s:\n%s", name, ff.Output())
	}
	ff.Stop(5 * time.Second)
	waitOwner(t, ocm, name, "", 10*time.Second)
	return float64(r1-r0) / t1.Sub(t0).Seconds()
}

// rtmp.publishReadWindow is applied to a real publisher, and 0s turns it
// off on reload: ffmpeg sends its ~73 tags a second (30 fps video, 44.1 kHz
// AAC) one write each; with the 50 ms default the origin reads them about
// 20 times a second, with the window off it reads each as it comes, and
// again to find the socket empty. The counts are the whole process's, so
// the comparison is a ratio with margin, not an exact figure; an origin
// that ignored the key, or read it only at start, reads alike both times.
func TestPublishReadWindowKey(t *testing.T) {
	slow(t)
	ocm := startOCM(t)
	o := startOrigin(t, "origin-rw", ocm.addr, "", true)

	on := readsPerSecond(t, ocm, o, "rw-default")

	cfg, err := os.ReadFile(o.cfg)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, o.cfg, string(cfg)+"rtmp:\n  publishReadWindow: 0s\n")
	o.WaitOutput(`"changed":["rtmp.publishReadWindow"]`, 10*time.Second)

	off := readsPerSecond(t, ocm, o, "rw-off")
	t.Logf("origin read system calls per second while publishing: window 50ms (default) %.0f, window 0s (reloaded) %.0f", on, off)
	if off < 2*on {
		t.Errorf("reads per second: %.0f with the window off, %.0f with the 50ms default; want the window to at least halve them", off, on)
	}
	o.noErrors(t)
}
