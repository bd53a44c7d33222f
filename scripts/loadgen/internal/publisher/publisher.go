// Package publisher publishes a recorded FLV file's tags over RTMP at
// real-time pace, looping with monotonic timestamps: many light publishers
// where ffmpeg is too heavy to run hundreds of.
package publisher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/flvtag"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stamp"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stats"
)

// Stream is a recorded stream ready to publish.
type Stream struct {
	Headers []flvtag.Tag  // metadata and sequence headers, sent once
	Media   []flvtag.Tag  // audio/video tags, timestamps from 0
	Span    time.Duration // one loop: the last timestamp plus one frame
	NALLen  int           // H.264 NAL length size of the video (0: no H.264)
}

// Load reads an FLV file. It fails when the file is not FLV or carries no
// audio or video.
func Load(path string) (*Stream, error) {
	tags, err := flvtag.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := &Stream{}
	var seenVideoHdr, seenAudioHdr bool
	for _, t := range tags {
		switch {
		case t.Type == flvtag.Script:
			if len(s.Media) == 0 {
				s.Headers = append(s.Headers, t)
			}
		case t.SeqHeader():
			// A recording has one encoder's headers; later copies would be
			// the same, so only the first of each is sent.
			if t.Type == flvtag.Video && !seenVideoHdr {
				seenVideoHdr = true
				s.NALLen = t.NALLengthSize()
				s.Headers = append(s.Headers, t)
			}
			if t.Type == flvtag.Audio && !seenAudioHdr {
				seenAudioHdr = true
				s.Headers = append(s.Headers, t)
			}
		case t.Type == flvtag.Video && len(t.Body) >= 2 && t.Body[0]&0x0f == 7 && t.Body[1] == 2:
			// AVC end of sequence (ffmpeg ends a file with one): looping
			// must not tell players the stream ended.
		case t.Type == flvtag.Audio || t.Type == flvtag.Video:
			s.Media = append(s.Media, t)
		}
	}
	if len(s.Media) == 0 {
		return nil, fmt.Errorf("%s: no audio or video tags", path)
	}
	base, last := s.Media[0].TS, s.Media[0].TS
	for _, t := range s.Media {
		base, last = min(base, t.TS), max(last, t.TS)
	}
	var firstV, lastV uint32
	nv := 0
	for i := range s.Media {
		s.Media[i].TS -= base
		if s.Media[i].Type == flvtag.Video {
			if nv == 0 {
				firstV = s.Media[i].TS
			}
			lastV = s.Media[i].TS
			nv++
		}
	}
	frame := 40 * time.Millisecond
	if nv > 1 && lastV > firstV {
		frame = time.Duration(lastV-firstV) * time.Millisecond / time.Duration(nv-1)
	}
	s.Span = time.Duration(last-base)*time.Millisecond + frame
	return s, nil
}

// Config tunes a publisher.
type Config struct {
	// Stamp embeds the send time in every H.264 frame (package stamp).
	Stamp bool
	// Stall bounds the handshake and each write (10 s).
	Stall time.Duration
}

// Kinds of publisher errors in the summary.
const (
	KindConnect = "connect" // dial, handshake, connect
	KindRefused = "refused" // the server refused the publish
	KindWrite   = "write"   // a write failed or stalled
)

// Error is a publisher failure of a Kind.
type Error struct {
	Kind string
	Err  error
}

func (e *Error) Error() string { return e.Kind + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// maxBatch bounds the tags sent in one write when a publisher catches up.
const maxBatch = 64

// Publish publishes s to rawURL (rtmp://host/app/name) at real-time pace,
// looping, until ctx ends (nil) or a failure (an *Error). It registers with
// run as one client whose media clock is what it has sent.
func Publish(ctx context.Context, rawURL string, s *Stream, cfg Config, run *stats.Run) error {
	if cfg.Stall <= 0 {
		cfg.Stall = 10 * time.Second
	}
	c := run.NewClient()
	err := publish(ctx, rawURL, s, cfg, run, c)
	if ctx.Err() != nil {
		err = nil
	}
	kind := ""
	var pe *Error
	if errors.As(err, &pe) {
		kind = pe.Kind
	} else if err != nil {
		kind = KindWrite
	}
	c.Done("rtmp", kind, err)
	return err
}

func publish(ctx context.Context, rawURL string, s *Stream, cfg Config, run *stats.Run, c *stats.Client) error {
	// A server owes a publisher nothing once publishing started, so reads
	// are bounded by the run (ctx), not by Stall.
	conn, err := rtmp.Dial(ctx, rawURL, rtmp.Config{HandshakeTimeout: cfg.Stall, ReadTimeout: 24 * time.Hour, WriteTimeout: cfg.Stall})
	if err != nil {
		return &Error{KindConnect, err}
	}
	defer conn.Close()
	var counted int64
	count := func() {
		n := conn.BytesWritten()
		run.Bytes.Add(n - counted)
		counted = n
	}
	defer count()
	if err := conn.Publish(); err != nil {
		var se *rtmp.StatusError
		if errors.As(err, &se) {
			return &Error{KindRefused, err}
		}
		return &Error{KindConnect, err}
	}
	c.Connected()
	hdr := make([][]byte, 0, len(s.Headers))
	for _, t := range s.Headers {
		hdr = append(hdr, flvtag.Encode(t.Type, 0, t.Body))
	}
	if err := conn.WriteTags(hdr); err != nil {
		return &Error{KindWrite, fmt.Errorf("send headers: %w", err)}
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	start := time.Now()
	batch := make([][]byte, 0, maxBatch)
	for off := time.Duration(0); ; off += s.Span {
		for i := 0; i < len(s.Media); {
			due := start.Add(off + time.Duration(s.Media[i].TS)*time.Millisecond)
			if wait := time.Until(due); wait > 0 {
				timer.Reset(wait)
				select {
				case <-ctx.Done():
					return nil
				case <-timer.C:
				}
			}
			now := time.Now()
			batch = batch[:0]
			var lastTS time.Duration
			for ; i < len(s.Media) && len(batch) < maxBatch; i++ {
				t := s.Media[i]
				ts := off + time.Duration(t.TS)*time.Millisecond
				if len(batch) > 0 && start.Add(ts).After(now) {
					break
				}
				batch = append(batch, encode(t, uint32(ts.Milliseconds()), s.NALLen, cfg.Stamp, now))
				lastTS = ts
			}
			if err := conn.WriteTags(batch); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return &Error{KindWrite, err}
			}
			count()
			c.Media(lastTS, false)
		}
	}
}

// encode serializes t at timestamp ts, with a send-time stamp in H.264
// frames when stamping.
func encode(t flvtag.Tag, ts uint32, nalLen int, stamping bool, now time.Time) []byte {
	if stamping && nalLen > 0 {
		if nalus := t.AVCNALUs(); nalus != nil {
			body := make([]byte, 0, len(t.Body)+64)
			body = append(body, t.Body[:5]...)
			body = append(body, stamp.Insert(nalus, nalLen, stamp.Stamp{Sent: now, MediaMS: ts})...)
			return flvtag.Encode(t.Type, ts, body)
		}
	}
	return flvtag.Encode(t.Type, ts, t.Body)
}
