// Package stream is the seam between protocols and the hub. Every ingest
// protocol (RTMP publish, an edge's HTTP-FLV or RTMP pull, a future SRT
// listener) is a Source, and one Pump feeds any Source into a hub, owning
// the codec-change handling. Every playback protocol is a sink fed by a
// hub.Reader: a protocol whose wire is FLV tags (RTMP play, HTTP-FLV) copies
// the hub's serialized tags with Reader.CopyTo; a protocol that needs
// packets (an MPEG-TS or WebRTC muxer) implements PacketSink and is fed by
// PlayPackets, which hands it the packets the tags were made from, so
// nothing is parsed again per player.
//
//	ingest adapter ──Source──▶ Pump ──▶ hub ──Reader──▶ CopyTo / PlayPackets ──▶ play adapter
package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/internal/flvx"
)

// ErrCodecChanged is what a Source's ReadPacket returns when new codec
// headers arrived: Streams then returns the new codecs. rtmp.ErrCodecChanged
// and httpflv.ErrCodecChanged are this error.
var ErrCodecChanged = flvx.ErrCodecChanged

// Source is one incoming stream: a publisher's connection or an upstream
// pull. *rtmp.Conn and *httpflv.Conn are Sources.
type Source interface {
	// Streams blocks until the codecs are known and returns them (for an
	// RTMP publish the first call also accepts the publisher).
	Streams() ([]av.CodecData, error)
	// Metadata returns the last onMetaData received (may be nil).
	Metadata() flvio.AMFMap
	// ReadPacket returns the next packet; io.EOF when the sender ended the
	// stream, ErrCodecChanged when the codecs changed.
	ReadPacket() (av.Packet, error)
	// Close ends the source; a blocked Streams or ReadPacket returns.
	Close() error
}

// Options of a Pump. The callbacks run on the goroutine of Run and must not
// block: a slow callback stalls ingest.
type Options struct {
	// Splice starts the source under a running one (an edge switching its
	// upstream under attached players) instead of failing with hub.ErrBusy.
	Splice bool
	// OnCodecs is called after the codecs changed and the hub took them
	// (not at the start: Start returns the first codecs).
	OnCodecs func(streams []av.CodecData)
	// OnPacket is called with every packet the hub accepted.
	OnPacket func(pkt av.Packet)
}

// Pump feeds one Source into one hub.
type Pump struct {
	h    *hub.Hub
	src  Source
	opts Options

	mu      sync.Mutex
	hs      *hub.Source
	streams []av.CodecData
}

// Start reads the source's codecs and starts it on h (Publish, or Splice
// with Options.Splice). On failure the hub is left as it was and src is not
// closed: the caller owns it.
func Start(h *hub.Hub, src Source, opts Options) (*Pump, error) {
	streams, err := src.Streams()
	if err != nil {
		return nil, fmt.Errorf("read codecs: %w", err)
	}
	start := h.Publish
	if opts.Splice {
		start = h.Splice
	}
	hs, err := start(streams, src.Metadata())
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", h.Key(), err)
	}
	return &Pump{h: h, src: src, opts: opts, hs: hs, streams: streams}, nil
}

// Streams returns the codecs the pump is feeding now; safe from any goroutine.
func (p *Pump) Streams() []av.CodecData {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.streams
}

// Run copies packets from the source into the hub until:
//   - the source ends (io.EOF): nil;
//   - ctx ends: the source is closed (CloseWithCause), and Run returns
//     ctx's cause;
//   - the hub replaced or closed this source: hub.ErrSourceReplaced or
//     hub.ErrClosed;
//   - a read fails or the new codecs of a codec change are refused: that
//     error.
//
// On return the pump's hub source is stopped (a no-op once replaced);
// readers stay attached to the hub. Run does not close the source on its
// own ending: the caller owns it.
func (p *Pump) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { CloseWithCause(p.src, context.Cause(ctx)) })
	defer stop()
	defer func() {
		p.mu.Lock()
		hs := p.hs
		p.mu.Unlock()
		hs.Close()
	}()
	err := p.copy()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func (p *Pump) copy() error {
	hs := p.hs
	for {
		pkt, err := p.src.ReadPacket()
		if errors.Is(err, ErrCodecChanged) {
			if hs, err = p.restart(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := hs.WritePacket(pkt); err != nil {
			return err
		}
		if p.opts.OnPacket != nil {
			p.opts.OnPacket(pkt)
		}
	}
}

// restart moves the hub to the source's new codecs: readers get the new
// headers before the next keyframe, and timestamps stay monotonic.
func (p *Pump) restart() (*hub.Source, error) {
	streams, err := p.src.Streams()
	if err != nil {
		return nil, fmt.Errorf("read new codecs: %w", err)
	}
	hs, err := p.h.Splice(streams, p.src.Metadata())
	if err != nil {
		return nil, fmt.Errorf("codec change on %s: %w", p.h.Key(), err)
	}
	p.mu.Lock()
	p.hs, p.streams = hs, streams
	p.mu.Unlock()
	if p.opts.OnCodecs != nil {
		p.opts.OnCodecs(streams)
	}
	return hs, nil
}

// CloseWithCause closes src; when cause is an error of ours (not a plain
// cancel) and the protocol can tell its peer why (CloseWithError, as
// *rtmp.Conn does with an onStatus error), it does.
func CloseWithCause(src Source, cause error) {
	if c, ok := src.(interface{ CloseWithError(error) error }); ok && cause != nil && !errors.Is(cause, context.Canceled) {
		_ = c.CloseWithError(cause)
		return
	}
	_ = src.Close()
}

// PacketSink is a play adapter for a protocol that needs packets rather
// than FLV tags.
type PacketSink interface {
	// WriteHeader announces the codecs of the packets that follow: at the
	// start and after every source change or codec change.
	WriteHeader(streams []av.CodecData) error
	WritePacket(pkt av.Packet) error
}

// PlayPackets feeds rd to sink until the hub closes (nil), or until the
// sink, the reader (hub.ErrTooSlow) or ctx fails, which returns that error.
// The first call the sink sees is WriteHeader, and its first video packet
// is a keyframe (the hub starts readers there).
func PlayPackets(ctx context.Context, rd *hub.Reader, sink PacketSink) error {
	for {
		frames, err := rd.NextFrames(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, f := range frames {
			if f.Streams != nil {
				if err := sink.WriteHeader(f.Streams); err != nil {
					return err
				}
			}
			if f.IsPacket {
				if err := sink.WritePacket(f.Packet); err != nil {
					return err
				}
			}
		}
	}
}
