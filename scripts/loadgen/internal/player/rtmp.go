package player

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/codec/h264parser"

	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stamp"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stats"
)

// playRTMP plays with media/rtmp's client: handshake, connect,
// createStream, play, then media until ctx ends.
func playRTMP(ctx context.Context, rawURL string, cfg Config, run *stats.Run, c *stats.Client) error {
	conn, err := rtmp.Dial(ctx, rawURL, rtmp.Config{HandshakeTimeout: cfg.Stall, ReadTimeout: cfg.Stall})
	if err != nil {
		return fail("connect", err)
	}
	defer conn.Close()
	var counted int64
	count := func() {
		n := conn.BytesRead()
		run.Bytes.Add(n - counted)
		counted = n
	}
	defer count()
	if err := conn.Play(); err != nil {
		var se *rtmp.StatusError
		if errors.As(err, &se) {
			return fail("refused", err)
		}
		return fail("connect", err)
	}
	c.Connected()
	streams, err := conn.Streams()
	if err != nil {
		return readErr(err)
	}
	for {
		pkt, err := conn.ReadPacket()
		if errors.Is(err, rtmp.ErrCodecChanged) {
			if streams, err = conn.Streams(); err != nil {
				return readErr(err)
			}
			continue
		}
		if err != nil {
			return readErr(err)
		}
		count()
		video, stamped := false, time.Time{}
		if int(pkt.Idx) < len(streams) && streams[pkt.Idx].Type() == av.H264 {
			video = true
			lenSize := 4
			if cd, ok := streams[pkt.Idx].(h264parser.CodecData); ok {
				lenSize = int(cd.RecordInfo.LengthSizeMinusOne) + 1
			}
			if s, ok := stamp.Find(pkt.Data, lenSize); ok {
				stamped = s.Sent
			}
		}
		c.Media(pkt.Time, video && pkt.IsKeyFrame)
		if !stamped.IsZero() {
			c.Stamped(stamped)
		}
	}
}

func readErr(err error) *Error {
	if errors.Is(err, io.EOF) {
		return fail("ended", err)
	}
	return fail("read", err)
}
