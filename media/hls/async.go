package hls

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nareix/joy4/av"
)

// Async runs a Stream on its own goroutine behind a bounded packet queue, so
// a slow HLS volume (a shared NFS mount that stalls for seconds) never
// slows the publisher feeding the hub: when the queue is full, packets are
// dropped up to the next video keyframe and counted, the way the hub treats
// a slow reader. A codec change (Restart) is queued too: the old session is
// closed and the new one opened on the writer goroutine, so a stalled
// volume stalls neither.
//
// Packets cross to the writer in batches of up to batchMax packets or
// batchSpan of stream time, not one by one: a wake-up of the writer
// goroutine per packet was, with thousands of packets a second, a visible
// part of the origin's ingest CPU. HLS output lags the publisher by at
// most batchSpan more.
type Async struct {
	pkts    chan item
	free    chan []av.Packet // batches the writer is done with, for reuse
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
	pending  []av.Packet    // the batch being gathered

	dropped atomic.Int64
	failed  atomic.Bool
}

// item is a batch of packets, after a codec change when restart is set.
type item struct {
	pkts    []av.Packet
	restart []av.CodecData
}

const (
	batchMax  = 8
	batchSpan = 100 * time.Millisecond
)

// NewAsync starts the writer goroutine of s; queue is about the number of
// packets it may hold (at 30 fps plus audio, 512 is several seconds).
// Close stops it.
func NewAsync(s *Stream, queue int) *Async {
	if queue <= 0 {
		queue = 512
	}
	batches := max((queue+batchMax-1)/batchMax, 2)
	a := &Async{s: s, pkts: make(chan item, batches), free: make(chan []av.Packet, batches+1),
		done: make(chan struct{}), videoIdx: s.videoIdx, hasVideo: s.hasVideo}
	go a.run()
	return a
}

func (a *Async) run() {
	defer close(a.done)
	for it := range a.pkts {
		a.write(it)
		clear(it.pkts) // let go of the packets' data
		select {
		case a.free <- it.pkts[:0]:
		default:
		}
	}
	if err := a.s.Close(); a.err == nil {
		a.err = err
	}
}

func (a *Async) write(it item) {
	if a.err != nil {
		return // drain the queue; the stream already failed
	}
	if it.restart != nil {
		if err := a.reopen(it.restart); err != nil {
			a.err = err
			a.failed.Store(true)
			return
		}
	}
	for _, pkt := range it.pkts {
		if err := a.s.WritePacket(pkt); err != nil {
			a.err = err
			a.failed.Store(true)
			return
		}
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
	// After a codec change, until the new codecs' first keyframe is in the
	// batch.
	awaitKey := a.restart != nil && len(a.pending) == 0
	if !isKey && (a.skipping || awaitKey) {
		if a.skipping {
			a.dropped.Add(1)
		}
		// After a codec change the new session starts at a keyframe: what
		// comes before it is of no use (and not a loss).
		return true
	}
	if a.skipping {
		a.skipping = false // a keyframe: what was dropped ends here
	}
	if a.pending == nil {
		select {
		case a.pending = <-a.free:
		default:
			a.pending = make([]av.Packet, 0, batchMax)
		}
	}
	a.pending = append(a.pending, pkt)
	if len(a.pending) >= batchMax || pkt.Time-a.pending[0].Time >= batchSpan || pkt.Time < a.pending[0].Time {
		a.flush(false)
	}
	return true
}

// flush hands the pending batch to the writer, dropping it (and what
// follows up to the next keyframe) when the queue is full, unless wait.
func (a *Async) flush(wait bool) {
	if len(a.pending) == 0 {
		return
	}
	it := item{pkts: a.pending, restart: a.restart}
	if wait {
		a.pkts <- it
	} else {
		select {
		case a.pkts <- it:
		default:
			a.skipping = true
			a.dropped.Add(int64(len(a.pending)))
			a.pending = a.pending[:0]
			return
		}
	}
	a.pending, a.restart = nil, nil
}

// Restart switches to new codecs without blocking: the writer closes the
// current session and opens a new one (after a discontinuity) with streams,
// starting at the next keyframe written. Packets of the old codecs still
// queued are written first. Not concurrent with WritePacket.
func (a *Async) Restart(streams []av.CodecData) {
	a.flush(false) // the old codecs' packets go first
	a.restart = streams
	a.hasVideo, a.videoIdx = false, 0
	for i, c := range streams {
		if c.Type().IsVideo() {
			a.hasVideo, a.videoIdx = true, i
		}
	}
}

// Queued is the number of batches waiting for the writer (0: it has
// everything handed over to it).
func (a *Async) Queued() int { return len(a.pkts) }

// Dropped is the number of packets dropped because the writer fell behind.
func (a *Async) Dropped() int64 { return a.dropped.Load() }

// Close lets the writer finish what is queued, close the stream (last
// segment, ENDLIST) and returns its first error. It blocks while the volume
// is stalled: run it off the publishing goroutine. Not concurrent with
// WritePacket.
func (a *Async) Close() error {
	a.closeMu.Do(func() {
		if !a.failed.Load() {
			a.flush(true)
		}
		close(a.pkts)
	})
	<-a.done
	return a.err
}
