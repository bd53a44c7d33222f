package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/config"
)

// rtmp.publishReadWindow: 50 ms by default, 0s (off) accepted and kept as
// 0 (not turned back into the default), set by the file and by its
// environment variable, refused below 0 and above 1 s with an error naming
// the key, and live.
func TestPublishReadWindowKey(t *testing.T) {
	l := Loader()
	c, err := l.Load(config.Source{})
	if err != nil {
		t.Fatal(err)
	}
	if c.RTMP.PublishReadWindow.D() != 50*time.Millisecond {
		t.Errorf("default rtmp.publishReadWindow %s, want 50ms", c.RTMP.PublishReadWindow)
	}
	c, err = l.Load(config.Source{Env: []string{"LIVECLUSTER_RTMP_PUBLISH_READ_WINDOW=0s"}})
	if err != nil || c.RTMP.PublishReadWindow != 0 {
		t.Fatalf("0s (off) from the environment: %v, %v", err, c)
	}
	file := filepath.Join(t.TempDir(), "origin.yaml")
	if err := os.WriteFile(file, []byte("rtmp:\n  publishReadWindow: 20ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = l.Load(config.Source{File: file})
	if err != nil || c.RTMP.PublishReadWindow.D() != 20*time.Millisecond {
		t.Fatalf("20ms from the file: %v, %v", err, c)
	}
	for _, bad := range []string{"-1ms", "1001ms", "1m"} {
		_, err := l.Load(config.Source{Env: []string{"LIVECLUSTER_RTMP_PUBLISH_READ_WINDOW=" + bad}})
		if err == nil || !strings.Contains(err.Error(), "rtmp.publishReadWindow: must be in [0s (off), 1s], got") {
			t.Errorf("rtmp.publishReadWindow=%s: %v", bad, err)
		}
	}
	if _, err := l.Load(config.Source{Env: []string{"LIVECLUSTER_RTMP_PUBLISH_READ_WINDOW=1s"}}); err != nil {
		t.Errorf("1s (the maximum) refused: %v", err)
	}
	if !l.IsLive("rtmp.publishReadWindow") || l.IsLive("rtmp.listen") {
		t.Error("rtmp.publishReadWindow should be live and rtmp.listen not")
	}
}
