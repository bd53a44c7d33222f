package player

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/livecluster/livecluster/scripts/loadgen/internal/flvtag"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/rtmpplay"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stamp"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stats"
)

// playRTMP plays with the load generator's own RTMP client (package
// rtmpplay): handshake, connect, createStream, play, then media until ctx
// ends.
func playRTMP(ctx context.Context, rawURL string, cfg Config, run *stats.Run, c *stats.Client) error {
	wrap := func(nc net.Conn) net.Conn { return &countingConn{Conn: nc, n: &run.Bytes} }
	conn, err := rtmpplay.Dial(ctx, rawURL, cfg.Stall, wrap)
	if err != nil {
		var se *rtmpplay.StatusError
		if errors.As(err, &se) {
			return fail("refused", err)
		}
		return fail("connect", err)
	}
	defer conn.Close()
	conn.SetBodyPrefix(cfg.BodyPrefix)
	c.Connected()
	m := media{lenSize: 4}
	err = conn.Tags(func(t flvtag.Tag) error { m.tag(t, c); return nil })
	var se *rtmpplay.StatusError
	switch {
	case errors.As(err, &se):
		return fail("refused", err)
	case errors.Is(err, rtmpplay.ErrEnded):
		return fail("ended", err)
	}
	return fail("read", err)
}

// media follows one player's FLV tags: media progress, keyframes and the
// embedded send-time stamps.
type media struct {
	lenSize int // H.264 NAL length size from the sequence header
}

func (m *media) tag(t flvtag.Tag, c *stats.Client) {
	var stamped time.Time
	switch t.Type {
	case flvtag.Video:
		if n := t.NALLengthSize(); n > 0 {
			m.lenSize = n
			return
		}
		if nalus := t.AVCNALUs(); nalus != nil {
			if s, ok := stamp.Find(nalus, m.lenSize); ok {
				stamped = s.Sent
			}
		}
	case flvtag.Audio:
		if t.SeqHeader() {
			return
		}
	default:
		return
	}
	c.Media(time.Duration(t.TS)*time.Millisecond, t.Keyframe())
	if !stamped.IsZero() {
		c.Stamped(stamped)
	}
}
