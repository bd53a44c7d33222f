package app

import (
	"strings"
	"testing"

	"github.com/livecluster/livecluster/node/config"
)

func TestDefaultsValid(t *testing.T) {
	l := Loader()
	c, err := l.Load(config.Source{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Edge.IdleTimeout.D().String() != "10s" || c.Edge.Upstream.Protocol != "rtmp" || c.RTMP.Listen != ":1935" {
		t.Fatalf("defaults: %+v", c.Edge)
	}
	for _, f := range Flags {
		if !l.HasKey(f.Key) {
			t.Errorf("flag --%s maps to unknown key %s", f.Name, f.Key)
		}
	}
}

func TestValidateNamesKeys(t *testing.T) {
	l := Loader()
	_, err := l.Load(config.Source{Env: []string{
		"LIVECLUSTER_EDGE_UPSTREAM_PROTOCOL=hls", "LIVECLUSTER_EDGE_IDLE_TIMEOUT=0s", "LIVECLUSTER_EDGE_HLS_CACHE_BYTES=-1",
	}})
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, k := range []string{"edge.upstream.protocol", "edge.idleTimeout", "edge.hls.cacheBytes"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error does not name %s: %v", k, err)
		}
	}
	if !l.IsLive("edge.waitTimeout") || l.IsLive("edge.hls.cacheBytes") {
		t.Error("live keys")
	}
}

// The limits section loads from the environment, is validated key by key,
// and its caps reload live while its timeouts need a restart.
func TestLimitsKeys(t *testing.T) {
	l := Loader()
	c, err := l.Load(config.Source{Env: []string{
		"LIVECLUSTER_LIMITS_MAX_CONNS_PER_IP=7", "LIVECLUSTER_LIMITS_MAX_PUBLISH_BITRATE=8000000",
		"LIVECLUSTER_LIMITS_TIMEOUTS_RTMP_HANDSHAKE=3s",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.MaxConnsPerIP != 7 || c.Limits.MaxPublishBitrate != 8000000 || c.Limits.Timeouts.RTMPHandshake.D().String() != "3s" ||
		c.Limits.MaxConns != 20000 || c.Limits.Timeouts.HTTPIdle.D().String() != "2m0s" {
		t.Fatalf("limits: %+v", c.Limits)
	}
	_, err = l.Load(config.Source{Env: []string{
		"LIVECLUSTER_LIMITS_MAX_CONNS=-1", "LIVECLUSTER_LIMITS_TIMEOUTS_HTTP_READ_HEADER=0s", "LIVECLUSTER_LIMITS_PUBLISH_BITRATE_WINDOW=10ms",
	}})
	for _, k := range []string{"limits.maxConns", "limits.timeouts.httpReadHeader", "limits.publishBitrateWindow"} {
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("error does not name %s: %v", k, err)
		}
	}
	if !l.IsLive("limits.maxPlayersPerStream") || !l.IsLive("limits.maxConns") || l.IsLive("limits.timeouts.rtmpIdle") {
		t.Error("limits live keys")
	}
}

func TestMergeWindowKey(t *testing.T) {
	l := Loader()
	c, err := l.Load(config.Source{Env: []string{"LIVECLUSTER_EDGE_MERGE_WINDOW=0s"}})
	if err != nil || c.Edge.MergeWindow != 0 {
		t.Fatalf("0s (no merging) refused: %v", err)
	}
	for _, bad := range []string{"-1ms", "2s"} {
		_, err := l.Load(config.Source{Env: []string{"LIVECLUSTER_EDGE_MERGE_WINDOW=" + bad}})
		if err == nil || !strings.Contains(err.Error(), "edge.mergeWindow") {
			t.Errorf("edge.mergeWindow=%s: %v", bad, err)
		}
	}
	if !l.IsLive("edge.mergeWindow") {
		t.Error("edge.mergeWindow is not live")
	}
}

// rtmp.publishReadWindow: 50 ms by default, 0s (off) kept as 0, refused
// below 0 and above 1 s naming the key, and live.
func TestPublishReadWindowKey(t *testing.T) {
	l := Loader()
	c, err := l.Load(config.Source{})
	if err != nil || c.RTMP.PublishReadWindow.D().String() != "50ms" {
		t.Fatalf("default: %v, %v", err, c.RTMP.PublishReadWindow)
	}
	c, err = l.Load(config.Source{Env: []string{"LIVECLUSTER_RTMP_PUBLISH_READ_WINDOW=0s"}})
	if err != nil || c.RTMP.PublishReadWindow != 0 {
		t.Fatalf("0s (off) refused or changed: %v, %v", err, c.RTMP.PublishReadWindow)
	}
	for _, bad := range []string{"-1ms", "2s"} {
		_, err := l.Load(config.Source{Env: []string{"LIVECLUSTER_RTMP_PUBLISH_READ_WINDOW=" + bad}})
		if err == nil || !strings.Contains(err.Error(), "rtmp.publishReadWindow: must be in [0s (off), 1s], got") {
			t.Errorf("rtmp.publishReadWindow=%s: %v", bad, err)
		}
	}
	if !l.IsLive("rtmp.publishReadWindow") || l.IsLive("rtmp.listen") {
		t.Error("rtmp.publishReadWindow should be live and rtmp.listen not")
	}
}
