package hls_test

import (
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/mediatest"
)

// BenchmarkStreamWritePacket is the HLS writer's cost per packet: mux to
// MPEG-TS, segment files cut every second, playlist rewritten per segment.
func BenchmarkStreamWritePacket(b *testing.B) {
	dir := b.TempDir()
	m, err := hls.New(hls.Config{Dir: dir, Fragment: time.Second, Window: 6})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	streams, pkts := mediatest.ReadFLV(b, mediatest.TestFLVSized(b, "854x480"))
	s, err := m.Open("live", "s", streams)
	if err != nil {
		b.Fatal(err)
	}
	span := pkts[len(pkts)-1].Time + 40*time.Millisecond
	var bytes int64
	for _, p := range pkts {
		bytes += int64(len(p.Data))
	}
	b.SetBytes(bytes / int64(len(pkts)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := pkts[i%len(pkts)]
		p.Time += time.Duration(i/len(pkts)) * span
		if err := s.WritePacket(p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	s.Close()
}
