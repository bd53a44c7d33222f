package rtmp_test

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nareix/joy4/av"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/media/rtmp"
)

// ingestHandler is the origin's ingest path without the cluster: RTMP read
// -> hub (GOP cache) -> HLS writer (own goroutine, files on disk).
type ingestHandler struct {
	hls     *hls.Manager
	n       atomic.Int64
	dropped atomic.Int64
	queue   int
	done    chan struct{} // closed when the publish ended and HLS is written
}

func (h *ingestHandler) ServePublish(ctx context.Context, c *rtmp.Conn) error {
	streams, err := c.Streams()
	if err != nil {
		return err
	}
	hb := hub.New("live/b", hub.Config{})
	defer hb.Close()
	src, err := hb.Publish(streams, c.Metadata())
	if err != nil {
		return err
	}
	defer src.Close()
	seg, err := h.hls.Open("live", "b", streams)
	if err != nil {
		return err
	}
	// A queue for the whole run: the publisher is not paced, and a
	// dropped packet would be HLS work not measured.
	a := hls.NewAsync(seg, h.queue)
	defer close(h.done)
	for {
		pkt, err := c.ReadPacket()
		if err != nil {
			a.Close()
			h.dropped.Store(a.Dropped())
			return err
		}
		if err := src.WritePacket(pkt); err != nil {
			return err
		}
		a.WritePacket(pkt)
		h.n.Add(1)
	}
}

func (h *ingestHandler) ServePlay(ctx context.Context, c *rtmp.Conn) error {
	return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound"}
}

// BenchmarkIngest is the CPU of one publisher's packet through the
// origin's ingest path in process: the publisher's RTMP write over TCP
// loopback (one flush per packet, as a real-time publisher sends them),
// the server's chunk reader and FLV parsing, the hub, and the HLS writer
// muxing to MPEG-TS files (1 s fragments). The publisher runs in the same
// process, so ns/op includes its writes; compare revisions with each
// other, not with bench-ingest.sh's per-stream figures.
func BenchmarkIngest(b *testing.B) {
	streams, pkts := mediatest.ReadFLV(b, mediatest.TestFLVSized(b, "854x480"))
	m, err := hls.New(hls.Config{Dir: b.TempDir(), Fragment: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	h := &ingestHandler{hls: m, done: make(chan struct{}), queue: b.N + 64}
	// No read pacing (PublishReadWindow): the publisher is not paced
	// either, and a paced read would measure sleeps, not CPU.
	srv := &rtmp.Server{Handler: h, Logger: slog.New(slog.DiscardHandler), Config: rtmp.Config{PublishReadWindow: -1}}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()

	c, err := rtmp.Dial(ctx, "rtmp://"+ln.Addr().String()+"/live/b", rtmp.Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Publish(); err != nil {
		b.Fatal(err)
	}
	if err := c.WriteHeader(streams, nil); err != nil {
		b.Fatal(err)
	}
	span := pkts[len(pkts)-1].Time + 40*time.Millisecond
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var p av.Packet = pkts[i%len(pkts)]
		p.Time += time.Duration(i/len(pkts)) * span
		if err := c.WritePacket(p); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	select {
	case <-h.done:
	case <-time.After(time.Minute):
		b.Fatalf("publish not ended a minute after the last packet")
	}
	b.StopTimer()
	if h.n.Load() != int64(b.N) || h.dropped.Load() != 0 {
		b.Fatalf("server read %d of %d packets, HLS dropped %d", h.n.Load(), b.N, h.dropped.Load())
	}
}
