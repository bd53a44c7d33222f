package config

import (
	"errors"
	"fmt"
	"time"
)

// Limits bounds what clients may hold on a data-plane node (origin and
// edge alike; the `limits` section of both). A zero cap means no cap. See
// docs/security.md for what each one guards against.
type Limits struct {
	// MaxConns caps the open connections on each data-plane listener (RTMP
	// and HTTP each). A refused HTTP client gets 503, an RTMP client
	// NetConnection.Connect.Rejected.
	MaxConns int `yaml:"maxConns"`
	// MaxConnsPerIP caps the open connections from one client address on
	// each listener (HTTP: 429). Behind a load balancer that hides client
	// addresses every client has the balancer's address: leave it 0 there.
	MaxConnsPerIP int `yaml:"maxConnsPerIP"`
	// MaxStreams caps the publishes the node accepts at once (an origin's
	// streams, an edge's forwarded publishes): NetStream.Publish.Rejected.
	MaxStreams int `yaml:"maxStreams"`
	// MaxPlayersPerStream caps the RTMP and HTTP-FLV players of one stream
	// on the node (RTMP NetStream.Play.Rejected, HTTP 503). HLS requests
	// are stateless and not counted.
	MaxPlayersPerStream int `yaml:"maxPlayersPerStream"`
	// MaxPublishBitrate is the publish bitrate ceiling in bits per second,
	// measured over PublishBitrateWindow on the wire (RTMP); a publisher
	// above it is closed with NetStream.Publish.Rejected.
	MaxPublishBitrate int64 `yaml:"maxPublishBitrate"`
	// PublishBitrateWindow is the window the bitrate is averaged over.
	PublishBitrateWindow Duration `yaml:"publishBitrateWindow"`
	// Timeouts are the deadlines of each protocol (restart-only).
	Timeouts Timeouts `yaml:"timeouts"`
}

// Timeouts are the handshake, idle and write deadlines of the data-plane
// protocols.
type Timeouts struct {
	// RTMPHandshake bounds the RTMP handshake and the commands up to
	// publish or play (a trickled handshake is cut there).
	RTMPHandshake Duration `yaml:"rtmpHandshake"`
	// RTMPIdle closes an RTMP connection that sent nothing this long, and
	// bounds reading one whole message (trickled chunks); a publisher that
	// sent no audio or video this long is closed too.
	RTMPIdle Duration `yaml:"rtmpIdle"`
	// RTMPWrite bounds each write to an RTMP client.
	RTMPWrite Duration `yaml:"rtmpWrite"`
	// HTTPReadHeader bounds reading a request's header (slowloris).
	HTTPReadHeader Duration `yaml:"httpReadHeader"`
	// HTTPIdle closes a kept-alive HTTP connection idle this long.
	HTTPIdle Duration `yaml:"httpIdle"`
	// HTTPWrite bounds each write to an HTTP-FLV player.
	HTTPWrite Duration `yaml:"httpWrite"`
}

// DefaultLimits returns the defaults of the limits section: connection
// caps high enough for one node's real load, no per-IP, stream, player or
// bitrate cap, and deadlines that let ffmpeg, OBS and players through.
func DefaultLimits() Limits {
	return Limits{
		MaxConns:             20000,
		PublishBitrateWindow: Duration(5 * time.Second),
		Timeouts: Timeouts{
			RTMPHandshake:  Duration(10 * time.Second),
			RTMPIdle:       Duration(30 * time.Second),
			RTMPWrite:      Duration(30 * time.Second),
			HTTPReadHeader: Duration(10 * time.Second),
			HTTPIdle:       Duration(60 * time.Second),
			HTTPWrite:      Duration(30 * time.Second),
		},
	}
}

// LimitsLive are the keys of the limits section that reload without a
// restart: the caps apply to the next connection, player or publish.
var LimitsLive = []string{
	"limits.maxConns", "limits.maxConnsPerIP", "limits.maxStreams", "limits.maxPlayersPerStream",
	"limits.maxPublishBitrate", "limits.publishBitrateWindow",
}

// Validate checks the limits section; each error names its key.
func (l *Limits) Validate() error {
	var errs []error
	for _, v := range []struct {
		key string
		n   int64
	}{
		{"limits.maxConns", int64(l.MaxConns)}, {"limits.maxConnsPerIP", int64(l.MaxConnsPerIP)},
		{"limits.maxStreams", int64(l.MaxStreams)}, {"limits.maxPlayersPerStream", int64(l.MaxPlayersPerStream)},
		{"limits.maxPublishBitrate", l.MaxPublishBitrate},
	} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("%s: must be >= 0 (0: no limit), got %d", v.key, v.n))
		}
	}
	if l.PublishBitrateWindow.D() < time.Second {
		errs = append(errs, fmt.Errorf("limits.publishBitrateWindow: must be >= 1s, got %s", l.PublishBitrateWindow))
	}
	t := &l.Timeouts
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"limits.timeouts.rtmpHandshake", t.RTMPHandshake}, {"limits.timeouts.rtmpIdle", t.RTMPIdle},
		{"limits.timeouts.rtmpWrite", t.RTMPWrite}, {"limits.timeouts.httpReadHeader", t.HTTPReadHeader},
		{"limits.timeouts.httpIdle", t.HTTPIdle}, {"limits.timeouts.httpWrite", t.HTTPWrite},
	} {
		if d.v.D() < 100*time.Millisecond {
			errs = append(errs, fmt.Errorf("%s: must be >= 100ms, got %s", d.key, d.v))
		}
	}
	return errors.Join(errs...)
}
