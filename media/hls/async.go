package hls

import (
	"sync"
	"sync/atomic"

	"github.com/nareix/joy4/av"
)

// Async runs a Stream on its own goroutine behind a bounded packet queue, so
// a slow HLS volume (a shared NFS mount that stalls for seconds) never
// slows the publisher feeding the hub: when the queue is full, packets are
// dropped up to the next video keyframe and counted, the way the hub treats
// a slow reader.
type Async struct {
	s       *Stream
	pkts    chan av.Packet
	done    chan struct{}
	err     error // set by the writer before done closes
	closeMu sync.Once

	videoIdx int
	hasVideo bool
	skipping bool // publisher side only
	dropped  atomic.Int64
	failed   atomic.Bool
}

// NewAsync starts the writer goroutine of s; queue is the number of packets
// it may hold (at 30 fps plus audio, 512 is several seconds). Close stops it.
func NewAsync(s *Stream, queue int) *Async {
	if queue <= 0 {
		queue = 512
	}
	a := &Async{s: s, pkts: make(chan av.Packet, queue), done: make(chan struct{}),
		videoIdx: s.videoIdx, hasVideo: s.hasVideo}
	go a.run()
	return a
}

func (a *Async) run() {
	defer close(a.done)
	for pkt := range a.pkts {
		if a.err != nil {
			continue // drain the queue; the stream already failed
		}
		if err := a.s.WritePacket(pkt); err != nil {
			a.err = err
			a.failed.Store(true)
		}
	}
	if err := a.s.Close(); a.err == nil {
		a.err = err
	}
}

// WritePacket queues pkt without blocking. It returns false once the writer
// has failed (the caller may log it and stop feeding HLS).
func (a *Async) WritePacket(pkt av.Packet) bool {
	if a.failed.Load() {
		return false
	}
	isKey := !a.hasVideo || (int(pkt.Idx) == a.videoIdx && pkt.IsKeyFrame)
	if a.skipping && !isKey {
		a.dropped.Add(1)
		return true
	}
	select {
	case a.pkts <- pkt:
		a.skipping = false
	default:
		a.skipping = true
		a.dropped.Add(1)
	}
	return true
}

// Dropped is the number of packets dropped because the writer fell behind.
func (a *Async) Dropped() int64 { return a.dropped.Load() }

// Close lets the writer finish what is queued, close the stream (last
// segment, ENDLIST) and returns its first error. Not concurrent with
// WritePacket.
func (a *Async) Close() error {
	a.closeMu.Do(func() { close(a.pkts) })
	<-a.done
	return a.err
}
