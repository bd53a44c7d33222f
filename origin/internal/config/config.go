// Package config is the origin's configuration: the common keys of
// node/config plus the origin's own (OCM address, listeners, HLS, hub
// buffers). docs/configuration.md, section "origin", lists every key.
package config

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/config"
)

// Config is the origin's configuration file.
type Config struct {
	config.Common `yaml:",inline"`
	OCM           OCM  `yaml:"ocm"`
	RTMP          RTMP `yaml:"rtmp"`
	HTTP          HTTP `yaml:"http"`
	// HTTPS serves what the HTTP port serves over TLS, on its own port.
	HTTPS     config.HTTPS `yaml:"https"`
	Advertise Advertise    `yaml:"advertise"`
	// Zone is the failure zone reported to the OCM (placement affinity).
	Zone string `yaml:"zone"`
	// Capacity is the most streams the OCM should place here; 0: no limit.
	Capacity uint32 `yaml:"capacity"`
	HLS      HLS    `yaml:"hls"`
	Hub      Hub    `yaml:"hub"`
	// Limits bounds what clients may hold (docs/security.md).
	Limits config.Limits `yaml:"limits"`
	// Auth is publish and play authorization (node/authz).
	Auth config.Auth `yaml:"auth"`
}

// OCM is how the origin reaches the Origin Cluster Master.
type OCM struct {
	// Address is "host:port" of the OCM (a Kubernetes Service name).
	Address string `yaml:"address"`
	// ClaimTimeout bounds each ownership call made while a publisher waits
	// (ClaimStream, LookupStream, TransferStream).
	ClaimTimeout config.Duration `yaml:"claimTimeout"`
	// OCMSecurity: ocm.tls (client certificate, mTLS) and ocm.token.
	config.OCMSecurity `yaml:",inline"`
}

// RTMP is the RTMP listener.
type RTMP struct {
	Listen string `yaml:"listen"`
	// PublishReadWindow paces the reads of each publisher: once a read
	// took all the socket held, the next waits until this long after it,
	// so an encoder's tags are read a window at a time (one wake-up and
	// read instead of two reads per tag) for up to this much more latency.
	// 0s: off. Read when each publish starts.
	PublishReadWindow config.Duration `yaml:"publishReadWindow"`
}

// MaxPublishReadWindow bounds rtmp.publishReadWindow: more is latency no
// ingest saving pays for (the reads per second are already few at 50 ms),
// and a window near the RTMP idle timeout would look like a dead publisher.
const MaxPublishReadWindow = time.Second

// HTTP is the HTTP listener: HTTP-FLV, HLS and the HTTP API.
type HTTP struct {
	Listen string `yaml:"listen"`
	// Root receives index.html and crossdomain.xml; empty: hls.dir.
	Root string `yaml:"root"`
	// WriteDefaults writes index.html and crossdomain.xml into Root at
	// start when they are missing (never overwrites).
	WriteDefaults bool `yaml:"writeDefaults"`
}

// Advertise is how other nodes reach this one.
type Advertise struct {
	// Host other nodes dial (pod DNS name or IP); the ports are those of
	// the listeners.
	Host string `yaml:"host"`
}

// HLS configures the segmenter.
type HLS struct {
	// Enabled writes HLS for new publishes (live: affects publishes that
	// start after a reload).
	Enabled  bool            `yaml:"enabled"`
	Dir      string          `yaml:"dir"`
	Fragment config.Duration `yaml:"fragment"`
	Window   int             `yaml:"window"`
	Dispose  config.Duration `yaml:"dispose"`
}

// Hub bounds the fan-out buffers (see media/hub.Config).
type Hub struct {
	MergeWindow  config.Duration `yaml:"mergeWindow"`
	QueuePackets int             `yaml:"queuePackets"`
	QueueBytes   int             `yaml:"queueBytes"`
	GOPPackets   int             `yaml:"gopPackets"`
	GOPBytes     int             `yaml:"gopBytes"`
	MaxOverflows int             `yaml:"maxOverflows"`
}

// Defaults returns the origin's defaults; the one place they live.
func Defaults() Config {
	c := Config{Common: config.DefaultCommon()}
	c.OCM.Address = "ocm:7000"
	c.OCM.ClaimTimeout = config.Duration(5 * time.Second)
	c.RTMP.Listen = ":1935"
	c.RTMP.PublishReadWindow = config.Duration(rtmp.DefaultPublishReadWindow)
	c.HTTP.Listen = ":8080"
	c.HTTP.WriteDefaults = true
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	c.Advertise.Host = host
	c.HLS.Enabled = true
	c.HLS.Dir = "hls"
	c.HLS.Fragment = config.Duration(2 * time.Second)
	c.HLS.Window = 6
	c.HLS.Dispose = config.Duration(30 * time.Second)
	c.Hub.MergeWindow = config.Duration(hub.DefaultMergeWindow)
	c.Hub.QueuePackets = 1024
	c.Hub.QueueBytes = 8 << 20
	c.Hub.GOPPackets = 2048
	c.Hub.GOPBytes = 16 << 20
	c.Hub.MaxOverflows = 3
	c.Limits = config.DefaultLimits()
	c.Auth = config.DefaultAuth()
	return c
}

// Live lists the origin's keys that reload without a restart (besides the
// common ones). Everything else is read once at start.
var Live = append([]string{"ocm.claimTimeout", "rtmp.publishReadWindow", "hls.enabled", "hub.mergeWindow", config.AuthLive}, config.LimitsLive...)

// Validate checks the origin's keys; each error names its key.
func Validate(c *Config) error {
	var errs []error
	add := func(key string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	if c.OCM.Address == "" {
		add("ocm.address", errors.New("must not be empty"))
	}
	if c.OCM.ClaimTimeout <= 0 {
		add("ocm.claimTimeout", fmt.Errorf("must be > 0, got %s", c.OCM.ClaimTimeout))
	}
	add("rtmp.listen", config.ValidListen(c.RTMP.Listen))
	if w := c.RTMP.PublishReadWindow; w < 0 || w.D() > MaxPublishReadWindow {
		add("rtmp.publishReadWindow", fmt.Errorf("must be in [0s (off), %s], got %s", MaxPublishReadWindow, w))
	}
	add("http.listen", config.ValidListen(c.HTTP.Listen))
	if err := c.HTTPS.Validate("https"); err != nil {
		errs = append(errs, err)
	}
	if err := c.OCM.OCMSecurity.Validate("ocm"); err != nil {
		errs = append(errs, err)
	}
	if c.Advertise.Host == "" {
		add("advertise.host", errors.New("must not be empty"))
	}
	if c.HLS.Dir == "" {
		add("hls.dir", errors.New("must not be empty"))
	}
	if c.HLS.Fragment.D() < 100*time.Millisecond {
		add("hls.fragment", fmt.Errorf("must be >= 100ms, got %s", c.HLS.Fragment))
	}
	if c.HLS.Window < 1 {
		add("hls.window", fmt.Errorf("must be >= 1, got %d", c.HLS.Window))
	}
	if c.HLS.Dispose <= 0 {
		add("hls.dispose", fmt.Errorf("must be > 0, got %s", c.HLS.Dispose))
	}
	if c.Hub.MergeWindow < 0 || c.Hub.MergeWindow.D() > time.Second {
		add("hub.mergeWindow", fmt.Errorf("must be in [0s, 1s], got %s", c.Hub.MergeWindow))
	}
	for _, v := range []struct {
		key string
		n   int
	}{
		{"hub.queuePackets", c.Hub.QueuePackets}, {"hub.queueBytes", c.Hub.QueueBytes},
		{"hub.gopPackets", c.Hub.GOPPackets}, {"hub.gopBytes", c.Hub.GOPBytes},
		{"hub.maxOverflows", c.Hub.MaxOverflows},
	} {
		if v.n < 1 {
			add(v.key, fmt.Errorf("must be >= 1, got %d", v.n))
		}
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Auth.Validate())
	return errors.Join(errs...)
}

// HTTPRoot returns http.root, or hls.dir when it is empty.
func (c *Config) HTTPRoot() string {
	if c.HTTP.Root != "" {
		return c.HTTP.Root
	}
	return c.HLS.Dir
}

// Loader returns the loader of the origin's configuration.
func Loader() config.Loader[Config] {
	return config.Loader[Config]{Defaults: Defaults, Validate: Validate, Live: Live}
}
