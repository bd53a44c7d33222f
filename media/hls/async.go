package hls

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nareix/joy4/av"
)

// Async runs a Stream on its own goroutine behind a bounded packet queue, so
// a slow HLS volume (a shared NFS mount that stalls for seconds) never
// slows the publisher feeding the hub: when the queue is full, packets are
// dropped up to the next video keyframe and counted, the way the hub treats
// a slow reader. A codec change (Restart) is queued too: the old session is
// closed and the new one opened on the writer goroutine, so a stalled
// volume stalls neither.
type Async struct {
	pkts    chan item
	done    chan struct{}
	err     error // set by the writer before done closes
	closeMu sync.Once

	// writer side
	s *Stream

	// publisher side
	videoIdx int
	hasVideo bool
	skipping bool
	restart  []av.CodecData // a codec change not queued yet

	dropped atomic.Int64
	failed  atomic.Bool
}

// item is a packet, or a codec change followed by the packet of the new
// codecs that carried it into the queue.
type item struct {
	pkt     av.Packet
	restart []av.CodecData
}

// NewAsync starts the writer goroutine of s; queue is the number of packets
// it may hold (at 30 fps plus audio, 512 is several seconds). Close stops it.
func NewAsync(s *Stream, queue int) *Async {
	if queue <= 0 {
		queue = 512
	}
	a := &Async{s: s, pkts: make(chan item, queue), done: make(chan struct{}),
		videoIdx: s.videoIdx, hasVideo: s.hasVideo}
	go a.run()
	return a
}

func (a *Async) run() {
	defer close(a.done)
	for it := range a.pkts {
		if a.err != nil {
			continue // drain the queue; the stream already failed
		}
		if it.restart != nil {
			if err := a.reopen(it.restart); err != nil {
				a.err = err
				a.failed.Store(true)
				continue
			}
		}
		if err := a.s.WritePacket(it.pkt); err != nil {
			a.err = err
			a.failed.Store(true)
		}
	}
	if err := a.s.Close(); a.err == nil {
		a.err = err
	}
}

// reopen ends the current session (last segment, ENDLIST) and opens the
// stream again with new codecs: the playlist goes on after a discontinuity.
func (a *Async) reopen(streams []av.CodecData) error {
	old := a.s
	cerr := old.Close()
	s, err := old.m.Open(old.app, old.name, streams)
	if err != nil {
		return fmt.Errorf("hls %s: reopen after a codec change: %w", old.key, err)
	}
	a.s = s
	if cerr != nil {
		old.m.log.Warn("hls: closing the session before a codec change", "stream", old.key, "err", cerr)
	}
	return nil
}

// WritePacket queues pkt without blocking. It returns false once the writer
// has failed (the caller may log it and stop feeding HLS).
func (a *Async) WritePacket(pkt av.Packet) bool {
	if a.failed.Load() {
		return false
	}
	isKey := !a.hasVideo || (int(pkt.Idx) == a.videoIdx && pkt.IsKeyFrame)
	if !isKey && (a.skipping || a.restart != nil) {
		if a.skipping {
			a.dropped.Add(1)
		}
		// After a codec change the new session starts at a keyframe: what
		// comes before it is of no use (and not a loss).
		return true
	}
	select {
	case a.pkts <- item{pkt: pkt, restart: a.restart}:
		a.skipping, a.restart = false, nil
	default:
		a.skipping = true
		a.dropped.Add(1)
	}
	return true
}

// Restart switches to new codecs without blocking: the writer closes the
// current session and opens a new one (after a discontinuity) with streams,
// starting at the next keyframe written. Packets of the old codecs still
// queued are written first. Not concurrent with WritePacket.
func (a *Async) Restart(streams []av.CodecData) {
	a.restart = streams
	a.hasVideo, a.videoIdx = false, 0
	for i, c := range streams {
		if c.Type().IsVideo() {
			a.hasVideo, a.videoIdx = true, i
		}
	}
}

// Queued is the number of packets waiting for the writer.
func (a *Async) Queued() int { return len(a.pkts) }

// Dropped is the number of packets dropped because the writer fell behind.
func (a *Async) Dropped() int64 { return a.dropped.Load() }

// Close lets the writer finish what is queued, close the stream (last
// segment, ENDLIST) and returns its first error. It blocks while the volume
// is stalled: run it off the publishing goroutine. Not concurrent with
// WritePacket.
func (a *Async) Close() error {
	a.closeMu.Do(func() { close(a.pkts) })
	<-a.done
	return a.err
}
