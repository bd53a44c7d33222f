package stream_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"
	"unsafe"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/codec/h264parser"

	"github.com/livecluster/livecluster/media/httpflv"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/media/stream"
)

func TestMain(m *testing.M) { mediatest.Main(m) }

// upTo returns the packets before d.
func upTo(pkts []av.Packet, d time.Duration) []av.Packet {
	for i, p := range pkts {
		if p.Time >= d {
			return pkts[:i]
		}
	}
	return pkts
}

func width(t *testing.T, streams []av.CodecData) int {
	t.Helper()
	for _, c := range streams {
		if v, ok := c.(h264parser.CodecData); ok {
			return v.Width()
		}
	}
	t.Fatalf("no video in %v", streams)
	return 0
}

// twoSizes is 3 s of the 320x240 test stream followed by 3 s at 640x360: a
// publisher that changed its encoder settings mid-stream.
func twoSizes(t *testing.T) (a, b mediatest.Part) {
	sa, pa := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	sb, pb := mediatest.ReadFLV(t, mediatest.TestFLVSized(t, "640x360"))
	return mediatest.Part{Streams: sa, Pkts: upTo(pa, 3*time.Second)},
		mediatest.Part{Streams: sb, Pkts: upTo(pb, 3*time.Second)}
}

type frameLog struct {
	headers []int // video width of each header
	pkts    int
	// firstAfterHeader: the first video packet after each header was a keyframe
	keyAfterHeader []bool
	backwards      int
}

// drain reads rd until the hub closed.
func drain(t *testing.T, rd *hub.Reader) frameLog {
	t.Helper()
	var l frameLog
	var streams []av.CodecData
	wantKey := false
	last := map[int8]time.Duration{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		frames, err := rd.NextFrames(ctx)
		if errors.Is(err, io.EOF) {
			return l
		}
		if err != nil {
			t.Fatalf("reader: %v", err)
		}
		for _, f := range frames {
			if f.Streams != nil {
				streams = f.Streams
				l.headers = append(l.headers, width(t, streams))
				wantKey = true
			}
			if !f.IsPacket {
				continue
			}
			l.pkts++
			if lt, ok := last[f.Packet.Idx]; ok && f.Packet.Time < lt {
				l.backwards++
			}
			last[f.Packet.Idx] = f.Packet.Time
			if wantKey && streams[f.Packet.Idx].Type().IsVideo() {
				l.keyAfterHeader = append(l.keyAfterHeader, f.Packet.IsKeyFrame)
				wantKey = false
			}
		}
	}
}

// A publisher changing codecs mid-stream: the pump moves the hub to the new
// codecs, readers get the new headers before a keyframe, timestamps stay
// monotonic and no packet is lost.
func TestPumpCodecChange(t *testing.T) {
	a, b := twoSizes(t)
	src, err := httpflv.NewReader(io.NopCloser(bytes.NewReader(mediatest.FLVBytes(t, a, b))))
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New("k", hub.Config{MergeWindow: -1, QueuePackets: 4096, QueueBytes: 64 << 20})
	rd, _ := h.NewReader()
	var changes [][]av.CodecData
	packets := 0
	p, err := stream.Start(h, src, stream.Options{
		OnCodecs: func(s []av.CodecData) { changes = append(changes, s) },
		OnPacket: func(av.Packet) { packets++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	if w := width(t, p.Streams()); w != 320 {
		t.Fatalf("start codecs: width %d, want 320", w)
	}
	if err := p.Run(context.Background()); err != nil {
		t.Fatalf("Run at the end of the source: %v, want nil", err)
	}
	if len(changes) != 1 || width(t, changes[0]) != 640 || width(t, p.Streams()) != 640 {
		t.Fatalf("OnCodecs calls %d (want 1 with width 640); Streams now width %d", len(changes), width(t, p.Streams()))
	}
	if h.Publishing() {
		t.Fatal("hub still has an active source after Run returned")
	}
	h.Close()
	l := drain(t, rd)
	want := len(a.Pkts) + len(b.Pkts)
	if packets != want || l.pkts != want {
		t.Fatalf("OnPacket saw %d, reader %d packets; want %d", packets, l.pkts, want)
	}
	if len(l.headers) != 2 || l.headers[0] != 320 || l.headers[1] != 640 {
		t.Fatalf("reader saw headers for widths %v, want [320 640]", l.headers)
	}
	for i, k := range l.keyAfterHeader {
		if !k {
			t.Fatalf("first video packet after header %d is not a keyframe", i)
		}
	}
	if l.backwards > 0 {
		t.Fatalf("timestamps went backwards %d times", l.backwards)
	}
}

// pipeSource is an FLV source fed while the test runs.
func pipeSource(t *testing.T, part mediatest.Part) (*httpflv.Conn, *io.PipeWriter) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write(mediatest.FLVBytes(t, part)) }()
	src, err := httpflv.NewReader(pr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pw.Close() })
	return src, pw
}

// Ending the context ends a pump blocked in a read, with the cause.
func TestPumpStopsOnContext(t *testing.T) {
	a, _ := twoSizes(t)
	src, _ := pipeSource(t, mediatest.Part{Streams: a.Streams, Pkts: a.Pkts[:60]})
	h := hub.New("k", hub.Config{})
	p, err := stream.Start(h, src, stream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	mediatest.Eventually(t, 5*time.Second, "packets in the hub", func() bool { return h.Stats().PacketsIn == 60 })
	kicked := errors.New("kicked")
	cancel(kicked)
	select {
	case err := <-done:
		if !errors.Is(err, kicked) {
			t.Fatalf("Run: %v, want the cancel cause", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run blocked in a read after its context ended")
	}
}

// A pump whose hub source was replaced (an edge spliced a new upstream)
// ends with hub.ErrSourceReplaced at its next packet; Start without Splice
// is refused while another source runs.
func TestPumpReplacedAndBusy(t *testing.T) {
	a, _ := twoSizes(t)
	src1, pw1 := pipeSource(t, mediatest.Part{Streams: a.Streams, Pkts: a.Pkts[:30]})
	h := hub.New("k", hub.Config{})
	p1, err := stream.Start(h, src1, stream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p1.Run(context.Background()) }()
	mediatest.Eventually(t, 5*time.Second, "first source's packets", func() bool { return h.Stats().PacketsIn == 30 })

	src2, _ := pipeSource(t, mediatest.Part{Streams: a.Streams, Pkts: a.Pkts[:30]})
	if _, err := stream.Start(h, src2, stream.Options{}); !errors.Is(err, hub.ErrBusy) {
		t.Fatalf("Start without Splice on a busy hub: %v, want hub.ErrBusy", err)
	}
	if _, err := stream.Start(h, src2, stream.Options{Splice: true}); err != nil {
		t.Fatal(err)
	}
	// One more packet for the old source: the hub refuses it.
	go func() {
		b := mediatest.FLVBytes(t, mediatest.Part{Streams: a.Streams, Pkts: a.Pkts[30:40]})
		_, _ = pw1.Write(b[13:]) // without the file header
	}()
	select {
	case err := <-done:
		if !errors.Is(err, hub.ErrSourceReplaced) {
			t.Fatalf("replaced pump: %v, want hub.ErrSourceReplaced", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("replaced pump did not end")
	}
	if !h.Publishing() {
		t.Fatal("the old pump's end stopped the new source")
	}
}

type recSink struct {
	headers [][]av.CodecData
	pkts    []av.Packet
}

func (s *recSink) WriteHeader(streams []av.CodecData) error {
	s.headers = append(s.headers, streams)
	return nil
}

func (s *recSink) WritePacket(pkt av.Packet) error {
	s.pkts = append(s.pkts, pkt)
	return nil
}

// A packet sink gets the very packets the source wrote (the same Data,
// nothing parsed again), a header first and again after a source change.
func TestPlayPackets(t *testing.T) {
	a, b := twoSizes(t)
	h := hub.New("k", hub.Config{MergeWindow: -1, QueuePackets: 4096, QueueBytes: 64 << 20})
	rd, _ := h.NewReader()
	sink := &recSink{}
	done := make(chan error, 1)
	go func() { done <- stream.PlayPackets(context.Background(), rd, sink) }()
	src, _ := h.Publish(a.Streams, nil)
	for _, p := range a.Pkts {
		if err := src.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	src2, _ := h.Splice(b.Streams, nil)
	for _, p := range b.Pkts {
		if err := src2.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	h.Close()
	if err := <-done; err != nil {
		t.Fatalf("PlayPackets after the hub closed: %v", err)
	}
	if len(sink.headers) != 2 || width(t, sink.headers[0]) != 320 || width(t, sink.headers[1]) != 640 {
		t.Fatalf("headers %d, want 2 (320 then 640)", len(sink.headers))
	}
	all := append(append([]av.Packet(nil), a.Pkts...), b.Pkts...)
	if len(sink.pkts) != len(all) {
		t.Fatalf("sink got %d packets, want %d", len(sink.pkts), len(all))
	}
	for i, p := range sink.pkts {
		if unsafe.SliceData(p.Data) != unsafe.SliceData(all[i].Data) {
			t.Fatalf("packet %d: data is a copy, not the packet the source wrote", i)
		}
	}
}
