// Package player plays one live stream the way a real client does, over
// RTMP, HTTP-FLV or HLS, and reports what it receives into a stats.Run.
package player

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/livecluster/livecluster/scripts/loadgen/internal/stats"
)

// Protocols.
const (
	RTMP    = "rtmp"
	HTTPFLV = "httpflv"
	HLS     = "hls"
)

// Protocol names the protocol of a play URL: rtmp://..., http(s)://...flv
// or http(s)://...m3u8. It fails for anything else.
func Protocol(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("play URL: %w", err)
	}
	switch {
	case u.Scheme == "rtmp":
		return RTMP, nil
	case (u.Scheme == "http" || u.Scheme == "https") && strings.HasSuffix(u.Path, ".flv"):
		return HTTPFLV, nil
	case (u.Scheme == "http" || u.Scheme == "https") && strings.HasSuffix(u.Path, ".m3u8"):
		return HLS, nil
	}
	return "", fmt.Errorf("play URL %q: want rtmp://, http(s)://...flv or http(s)://...m3u8", rawURL)
}

// Config bounds a player.
type Config struct {
	// Stall is how long a player waits for the server to accept it, for its
	// first media and for any further read before it gives up (10 s).
	Stall time.Duration
	// RequestTimeout bounds each HLS playlist or segment request (10 s).
	RequestTimeout time.Duration
	// HLSReload is how an HLS player paces its playlist reloads:
	// ReloadRFC (the default) or ReloadHalf.
	HLSReload string
	// BodyPrefix, when positive, is how much of each RTMP or HTTP-FLV
	// audio and video frame a player keeps; the rest is read and counted
	// but not copied (rtmpplay.Conn.SetBodyPrefix, flvtag.Reader.Prefix).
	// What a player reports (bytes, media progress, keyframes, lateness,
	// the send times stamped at the start of video frames) is the same
	// with any prefix that holds the stamp.
	BodyPrefix int
}

// HLS playlist reload pacing (Config.HLSReload).
const (
	// ReloadRFC waits as RFC 8216 section 6.3.4 says and hls.js and
	// ffmpeg do: after a playlist with a new segment (or the first one),
	// the last segment's duration when shorter than the target duration,
	// else the target duration; after an unchanged playlist, half the
	// target duration; measured from the start of the previous load.
	ReloadRFC = "rfc"
	// ReloadHalf reloads every half target duration whatever the playlist
	// held: about twice the playlist requests of a real player (what the
	// load generator did before 27 Nov 2026, kept to compare with).
	ReloadHalf = "half"
)

func (c Config) withDefaults() Config {
	if c.Stall <= 0 {
		c.Stall = 10 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.HLSReload == "" {
		c.HLSReload = ReloadRFC
	}
	return c
}

// Error is a player failure of a kind counted in the summary: connect
// (dial, handshake), refused (the server said no: RTMP error status, HTTP
// 4xx/5xx other than 404), http_404, read (I/O error or stall), ended (the
// server ended the stream), parse (malformed media or playlist), hls_seq_back
// (media sequence went backwards), hls_behind (the next segment already left
// the playlist).
type Error struct {
	Kind string
	Err  error
}

func (e *Error) Error() string { return e.Kind + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func fail(kind string, err error) *Error { return &Error{Kind: kind, Err: err} }

// Play plays rawURL with protocol proto until ctx ends (nil) or a failure
// (an *Error). It registers with run as one client.
func Play(ctx context.Context, proto, rawURL string, cfg Config, run *stats.Run) error {
	cfg = cfg.withDefaults()
	c := run.NewClient()
	var err error
	switch proto {
	case RTMP:
		err = playRTMP(ctx, rawURL, cfg, run, c)
	case HTTPFLV:
		err = playFLV(ctx, rawURL, cfg, run, c)
	case HLS:
		err = playHLS(ctx, rawURL, cfg, run, c)
	default:
		err = fail("connect", fmt.Errorf("unknown protocol %q", proto))
	}
	if ctx.Err() != nil {
		err = nil // the run ended: not the player's failure
	}
	kind := ""
	var pe *Error
	if errors.As(err, &pe) {
		kind = pe.Kind
	} else if err != nil {
		kind = "read"
	}
	c.Done(proto, kind, err)
	return err
}

// httpClient returns a client of its own for one player (a real player has
// its own connection) whose connections count received bytes into n and
// fail a read that waits longer than stall.
func httpClient(n *atomic.Int64, stall, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: stall}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: c, n: n, stall: stall}, nil
		},
		ResponseHeaderTimeout: stall,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       30 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// countingConn counts bytes read and bounds each read's wait by stall
// (0: the caller sets deadlines): a read fails after 7/8 to all of stall
// without data (the deadline moves only when it is more than stall/8 old:
// setting it updates a timer, and a player reads many times a second).
type countingConn struct {
	net.Conn
	n        *atomic.Int64
	stall    time.Duration
	deadline time.Time
}

func (c *countingConn) Read(p []byte) (int, error) {
	if c.stall > 0 {
		if dl := time.Now().Add(c.stall); dl.Sub(c.deadline) > c.stall/8 {
			if err := c.SetReadDeadline(dl); err != nil {
				return 0, err
			}
			c.deadline = dl
		}
	}
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// httpError classifies a non-200 answer.
func httpError(resp *http.Response, what string) *Error {
	err := fmt.Errorf("%s: %s", what, resp.Status)
	if resp.StatusCode == http.StatusNotFound {
		return fail("http_404", err)
	}
	return fail("refused", err)
}
