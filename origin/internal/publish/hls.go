package publish

import (
	"log/slog"

	"github.com/nareix/joy4/av"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/streamkey"
)

// hlsOut is a publish's HLS writer. It lives on the publish goroutine and
// never blocks it: the writer runs behind hls.Async's bounded queue, a codec
// change is queued to it, and closing (which waits for a stalled volume)
// happens in the background.
type hlsOut struct {
	s   *Sessions
	log *slog.Logger
	a   *hls.Async // nil: no HLS for this publish
}

// open starts the writer for the default vhost's streams when HLS is on.
func (o *hlsOut) open(key streamkey.Key, streams []av.CodecData) {
	s := o.s
	if s.opts.HLS == nil || !s.opts.HLSEnabled() {
		return
	}
	if key.Vhost != streamkey.DefaultVhost {
		// The HLS layout (<dir>/<app>/<name>) has no vhost level.
		o.log.Info("no HLS for a stream outside the default vhost")
		return
	}
	seg, err := s.opts.HLS.Open(key.App, key.Name, streams)
	if err != nil {
		o.log.Warn("no HLS for this publish", "err", err.Error())
		return
	}
	o.a = hls.NewAsync(seg, s.opts.HLSQueue)
}

func (o *hlsOut) write(pkt av.Packet) {
	if o.a != nil && !o.a.WritePacket(pkt) {
		o.log.Warn("hls write failed; HLS stopped for this publish")
		o.closeAsync()
	}
}

// restart moves the writer to new codecs (queued: never blocks).
func (o *hlsOut) restart(streams []av.CodecData) {
	if o.a != nil {
		o.a.Restart(streams)
	}
}

// closeAsync finishes the writer in the background (last segment,
// ENDLIST) and counts what it dropped.
func (o *hlsOut) closeAsync() {
	a := o.a
	if a == nil {
		return
	}
	o.a = nil
	s := o.s
	s.hlsClosing.Add(1)
	go func() {
		defer s.hlsClosing.Done()
		if err := a.Close(); err != nil {
			o.log.Warn("hls close", "err", err.Error())
		}
		if n := a.Dropped(); n > 0 {
			o.log.Warn("hls writer fell behind the publisher; packets dropped", "dropped", n)
			if m := s.opts.Metrics; m != nil {
				m.HLSDropped.Add(float64(n))
			}
		}
	}()
}
