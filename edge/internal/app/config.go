package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/cli"
	"github.com/livecluster/livecluster/node/config"

	"github.com/livecluster/livecluster/edge/internal/relay"
)

// Config is the edge's configuration file (docs/configuration.md, "edge").
type Config struct {
	config.Common `yaml:",inline"`
	OCM           struct {
		// Address is the OCM's "host:port" (a Kubernetes Service name).
		Address string `yaml:"address"`
		// OCMSecurity: ocm.tls (client certificate, mTLS) and ocm.token.
		config.OCMSecurity `yaml:",inline"`
	} `yaml:"ocm"`
	RTMP struct {
		Listen string `yaml:"listen"`
		// PublishReadWindow paces the reads of each publisher (the edge's
		// forwarded publishes): once a read took all the socket held, the
		// next waits until this long after it, so an encoder's tags are
		// read a window at a time for up to this much more latency. 0s:
		// off. Read when each publish starts.
		PublishReadWindow config.Duration `yaml:"publishReadWindow"`
	} `yaml:"rtmp"`
	HTTP struct {
		Listen string `yaml:"listen"`
	} `yaml:"http"`
	// HTTPS serves HTTP-FLV and HLS over TLS, on its own port.
	HTTPS     config.HTTPS `yaml:"https"`
	Advertise struct {
		// Host other nodes dial (the pod's DNS name or IP); the ports are
		// those of the listeners. Empty: the node id.
		Host string `yaml:"host"`
	} `yaml:"advertise"`
	// Zone is the failure zone, sent to AssignOrigin for placement.
	Zone string `yaml:"zone"`
	Edge Edge   `yaml:"edge"`
	// Limits bounds what clients may hold (docs/security.md).
	Limits config.Limits `yaml:"limits"`
	// Auth is publish and play authorization (node/authz): the edge
	// checks its clients before it pulls or forwards, and signs its legs
	// to origins with auth.internal.keys.
	Auth config.Auth `yaml:"auth"`
}

// Edge holds the edge's own keys.
type Edge struct {
	// IdleTimeout closes an upstream this long after its last player left.
	IdleTimeout config.Duration `yaml:"idleTimeout"`
	// WaitTimeout is how long a player waits for a stream not playing here
	// yet to be published before 404 / NetStream.Play.StreamNotFound; it
	// also bounds finding an origin for a publish.
	WaitTimeout config.Duration `yaml:"waitTimeout"`
	// OwnerLossHold is how long the players of a stream that was playing
	// stay connected (silent) after its upstream ended with no owner in
	// sight, so that the owner can come back anywhere (a crashed owner's
	// lease TTL plus the publisher's retry); then the splice follows as for
	// an owner change, or the players are closed when the hold runs out.
	OwnerLossHold config.Duration `yaml:"ownerLossHold"`
	// MergeWindow is how long the edge holds a stream's packets before it
	// writes them to its players, one write per player per window: the
	// fan-out's CPU goes with the number of writes. 0: no merging. The
	// edge's pull from the origin is not held by the origin's window, so
	// this is the only window between publisher and player.
	MergeWindow config.Duration `yaml:"mergeWindow"`
	Upstream    struct {
		// Protocol of the pull from the owner: rtmp or flv.
		Protocol string `yaml:"protocol"`
		// DialTimeout bounds opening an upstream until its codecs arrive.
		DialTimeout config.Duration `yaml:"dialTimeout"`
		// StallTimeout drops an upstream that delivered no media for this
		// long and pulls again from the owner the OCM names (the players
		// are held meanwhile, as for an owner loss). 0s: never.
		StallTimeout config.Duration `yaml:"stallTimeout"`
	} `yaml:"upstream"`
	Forward struct {
		// PollInterval is how often the origins' states are polled
		// (ListNodes) while publishes are forwarded: a safety net only, as
		// the stream watch reports an origin's drain as it happens.
		PollInterval config.Duration `yaml:"pollInterval"`
		// RetryTimeout keeps a publisher whose origin vanished while
		// another origin is sought.
		RetryTimeout config.Duration `yaml:"retryTimeout"`
		// DialTimeout bounds connecting to an origin until it accepted the
		// forwarded publish.
		DialTimeout config.Duration `yaml:"dialTimeout"`
	} `yaml:"forward"`
	HLS struct {
		// CacheBytes bounds the segment cache.
		CacheBytes int64 `yaml:"cacheBytes"`
		// MaxObjectBytes bounds one playlist or segment.
		MaxObjectBytes int64 `yaml:"maxObjectBytes"`
		// SegmentTTL drops cached segments after this long.
		SegmentTTL config.Duration `yaml:"segmentTTL"`
		// MaxPlaylistTTL caps how long a playlist is cached (it is at most
		// half the target duration anyway).
		MaxPlaylistTTL config.Duration `yaml:"maxPlaylistTTL"`
		// UpstreamTimeout bounds one request to an origin.
		UpstreamTimeout config.Duration `yaml:"upstreamTimeout"`
		// Hold is how long the last good playlist of a stream is served
		// while it has no owner or the owner no playlist yet; after that
		// the stream answers 404.
		Hold config.Duration `yaml:"hold"`
		// EndHold is how long an origin's EXT-X-ENDLIST is held back
		// waiting for a new owner (less than Hold).
		EndHold config.Duration `yaml:"endHold"`
		// Window is the least number of segments in an edge playlist.
		Window int `yaml:"window"`
		// MaxStreams bounds the streams whose playlists the edge keeps.
		MaxStreams int `yaml:"maxStreams"`
		// Prefetch fetches each new segment when it appears, so it stays
		// playable if its origin dies.
		Prefetch bool `yaml:"prefetch"`
	} `yaml:"hls"`
}

// MaxPublishReadWindow bounds rtmp.publishReadWindow: more is latency no
// ingest saving pays for, and a window near the RTMP idle timeout would
// look like a dead publisher.
const MaxPublishReadWindow = time.Second

// Defaults returns the edge's defaults.
func Defaults() Config {
	c := Config{Common: config.DefaultCommon()}
	c.OCM.Address = "ocm:7000"
	c.RTMP.Listen = ":1935"
	c.RTMP.PublishReadWindow = config.Duration(rtmp.DefaultPublishReadWindow)
	c.HTTP.Listen = ":8080"
	e := &c.Edge
	e.IdleTimeout = config.Duration(10 * time.Second)
	e.WaitTimeout = config.Duration(5 * time.Second)
	e.OwnerLossHold = config.Duration(relay.DefaultOwnerLossHold)
	e.MergeWindow = config.Duration(hub.DefaultMergeWindow)
	e.Upstream.Protocol = relay.ProtocolRTMP
	e.Upstream.DialTimeout = config.Duration(10 * time.Second)
	e.Upstream.StallTimeout = config.Duration(relay.DefaultStallTimeout)
	e.Forward.PollInterval = config.Duration(10 * time.Second)
	e.Forward.RetryTimeout = config.Duration(30 * time.Second)
	e.Forward.DialTimeout = config.Duration(5 * time.Second)
	e.HLS.CacheBytes = 256 << 20
	e.HLS.MaxObjectBytes = 32 << 20
	e.HLS.SegmentTTL = config.Duration(2 * time.Minute)
	e.HLS.MaxPlaylistTTL = config.Duration(time.Second)
	e.HLS.UpstreamTimeout = config.Duration(10 * time.Second)
	e.HLS.Hold = config.Duration(20 * time.Second)
	e.HLS.EndHold = config.Duration(10 * time.Second)
	e.HLS.Window = 6
	e.HLS.MaxStreams = 10000
	e.HLS.Prefetch = true
	c.Limits = config.DefaultLimits()
	c.Limits.Timeouts.HTTPIdle = config.Duration(2 * time.Minute)
	c.Auth = config.DefaultAuth()
	return c
}

// Validate checks the edge's keys; each error names its key.
func Validate(c *Config) error {
	var errs []error
	if c.OCM.Address == "" {
		errs = append(errs, errors.New("ocm.address: must not be empty"))
	}
	if err := config.ValidListen(c.RTMP.Listen); err != nil {
		errs = append(errs, fmt.Errorf("rtmp.listen: %w", err))
	}
	if w := c.RTMP.PublishReadWindow; w < 0 || w.D() > MaxPublishReadWindow {
		errs = append(errs, fmt.Errorf("rtmp.publishReadWindow: must be in [0s (off), %s], got %s", MaxPublishReadWindow, w))
	}
	if err := config.ValidListen(c.HTTP.Listen); err != nil {
		errs = append(errs, fmt.Errorf("http.listen: %w", err))
	}
	if err := c.HTTPS.Validate("https"); err != nil {
		errs = append(errs, err)
	}
	if err := c.OCM.OCMSecurity.Validate("ocm"); err != nil {
		errs = append(errs, err)
	}
	e := &c.Edge
	for _, d := range []struct {
		key string
		v   config.Duration
	}{
		{"edge.idleTimeout", e.IdleTimeout},
		{"edge.waitTimeout", e.WaitTimeout},
		{"edge.ownerLossHold", e.OwnerLossHold},
		{"edge.upstream.dialTimeout", e.Upstream.DialTimeout},
		{"edge.forward.pollInterval", e.Forward.PollInterval},
		{"edge.forward.retryTimeout", e.Forward.RetryTimeout},
		{"edge.forward.dialTimeout", e.Forward.DialTimeout},
		{"edge.hls.segmentTTL", e.HLS.SegmentTTL},
		{"edge.hls.maxPlaylistTTL", e.HLS.MaxPlaylistTTL},
		{"edge.hls.upstreamTimeout", e.HLS.UpstreamTimeout},
		{"edge.hls.hold", e.HLS.Hold},
		{"edge.hls.endHold", e.HLS.EndHold},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be > 0, got %s", d.key, d.v))
		}
	}
	if e.Upstream.StallTimeout < 0 {
		errs = append(errs, fmt.Errorf("edge.upstream.stallTimeout: must be >= 0 (0s: never), got %s", e.Upstream.StallTimeout))
	}
	if e.MergeWindow < 0 || e.MergeWindow.D() > time.Second {
		errs = append(errs, fmt.Errorf("edge.mergeWindow: must be in [0s, 1s], got %s", e.MergeWindow))
	}
	switch e.Upstream.Protocol {
	case relay.ProtocolRTMP, relay.ProtocolFLV:
	default:
		errs = append(errs, fmt.Errorf("edge.upstream.protocol: must be %q or %q, got %q",
			relay.ProtocolRTMP, relay.ProtocolFLV, e.Upstream.Protocol))
	}
	if e.HLS.CacheBytes <= 0 {
		errs = append(errs, fmt.Errorf("edge.hls.cacheBytes: must be > 0, got %d", e.HLS.CacheBytes))
	}
	if e.HLS.MaxObjectBytes <= 0 {
		errs = append(errs, fmt.Errorf("edge.hls.maxObjectBytes: must be > 0, got %d", e.HLS.MaxObjectBytes))
	}
	if e.HLS.EndHold >= e.HLS.Hold {
		errs = append(errs, fmt.Errorf("edge.hls.endHold: must be less than edge.hls.hold (%s), got %s", e.HLS.Hold, e.HLS.EndHold))
	}
	if e.HLS.Window <= 0 {
		errs = append(errs, fmt.Errorf("edge.hls.window: must be > 0, got %d", e.HLS.Window))
	}
	if e.HLS.MaxStreams <= 0 {
		errs = append(errs, fmt.Errorf("edge.hls.maxStreams: must be > 0, got %d", e.HLS.MaxStreams))
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Auth.Validate())
	return errors.Join(errs...)
}

// Loader is the edge's configuration loader. Live keys are read for every
// new player, upstream and forward.
func Loader() config.Loader[Config] {
	return config.Loader[Config]{
		Defaults: Defaults,
		Validate: Validate,
		Live: append([]string{
			"rtmp.publishReadWindow",
			"edge.idleTimeout", "edge.waitTimeout", "edge.ownerLossHold", "edge.mergeWindow", "edge.upstream.*", "edge.forward.*",
			config.AuthLive,
		}, config.LimitsLive...),
	}
}

// Flags are the edge's own flags.
var Flags = []cli.Flag{
	{Name: "ocm", Key: "ocm.address", Usage: "OCM address (host:port)"},
	{Name: "rtmp-listen", Key: "rtmp.listen", Usage: "RTMP address (players and publishers)"},
	{Name: "http-listen", Key: "http.listen", Usage: "HTTP address (HTTP-FLV, HLS)"},
	{Name: "advertise-host", Key: "advertise.host", Usage: "host other nodes dial (default: the node id)"},
}

// Binary describes the edge for cli.Main.
func Binary(version string) cli.Binary[Config] {
	return cli.Binary[Config]{
		Name: "edge", Version: version, Config: Loader(), Flags: Flags, Run: Run,
		Auth: func(c *Config) *config.Auth { return &c.Auth },
	}
}
