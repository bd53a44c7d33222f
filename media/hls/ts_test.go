package hls

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/ts"

	"github.com/livecluster/livecluster/media/mediatest"
)

func TestCRC32MPEG(t *testing.T) {
	if got := crc32MPEG([]byte("123456789")); got != 0x0376e6e7 {
		t.Fatalf("crc32MPEG(123456789) = %#x, want 0x0376e6e7", got)
	}
}

// writeAll writes the test FLV as HLS with 1 s fragments and returns the
// segments in order, concatenated, and the packets written.
func writeAll(t *testing.T) ([]byte, []av.Packet) {
	t.Helper()
	dir := t.TempDir()
	m, err := New(Config{Dir: dir, Fragment: time.Second, Window: 100, Keep: -1, Clock: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	s, err := m.Open("live", "s", streams)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		if err := s.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var cat []byte
	for seq := 0; ; seq++ {
		b, err := os.ReadFile(filepath.Join(dir, "live", fmt.Sprintf("s-%d.ts", seq)))
		if os.IsNotExist(err) {
			if seq < 3 {
				t.Fatalf("only %d segments", seq)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		cat = append(cat, b...)
	}
	return cat, pkts
}

// The transport stream is well formed across segment joins: 188-byte
// packets, continuity counters without a gap on every PID, a PCR on the
// video PID at every frame, and ffprobe finds every frame with the
// publisher's timestamps.
func TestTSStructureAndTimestamps(t *testing.T) {
	if testing.Short() {
		t.Skip("ffprobe test")
	}
	ts, pkts := writeAll(t)
	if len(ts)%tsPacketSize != 0 {
		t.Fatalf("%d bytes: not whole TS packets", len(ts))
	}
	cc := map[uint16]int{}
	pcrs := 0
	for off := 0; off < len(ts); off += tsPacketSize {
		p := ts[off : off+tsPacketSize]
		if p[0] != 0x47 {
			t.Fatalf("packet at %d: sync byte %#x", off, p[0])
		}
		pid := uint16(p[1]&0x1f)<<8 | uint16(p[2])
		if p[3]&0x10 != 0 { // has payload
			c := int(p[3] & 0x0f)
			if last, ok := cc[pid]; ok && c != (last+1)&0x0f {
				t.Fatalf("packet at %d, PID %#x: continuity counter %d after %d", off, pid, c, last)
			}
			cc[pid] = c
		}
		if p[3]&0x20 != 0 && p[4] > 0 && p[5]&0x10 != 0 {
			if pid != tsFirstPID {
				t.Fatalf("PCR on PID %#x", pid)
			}
			pcrs++
		}
		if p[3]&0x20 != 0 && 5+int(p[4]) > tsPacketSize {
			t.Fatalf("packet at %d: adaptation field of %d bytes", off, p[4])
		}
	}
	for _, pid := range []uint16{0, tsPMTPID, tsFirstPID, tsFirstPID + 1} {
		if _, ok := cc[pid]; !ok {
			t.Fatalf("no packets on PID %#x", pid)
		}
	}

	// The frames as the publisher sent them, from the first keyframe on.
	var want []string
	started, audio := false, 0
	for _, p := range pkts {
		if p.Idx == 0 && p.IsKeyFrame {
			started = true
		}
		if started && p.Idx == 1 {
			audio++
		}
		if started && p.Idx == 0 {
			want = append(want, fmt.Sprintf("%d,%d", to90k(p.Time+p.CompositionTime), to90k(p.Time)))
		}
	}
	if pcrs != len(want) {
		t.Errorf("%d PCRs for %d video frames", pcrs, len(want))
	}
	path := filepath.Join(t.TempDir(), "cat.ts")
	if err := os.WriteFile(path, ts, 0o644); err != nil {
		t.Fatal(err)
	}
	ffprobe := mediatest.Tool(t, "ffprobe")
	out, err := exec.Command(ffprobe, "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts,dts",
		"-of", "csv=p=0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	got := strings.Fields(string(out))
	for i := range got {
		got[i] = strings.TrimRight(got[i], ",") // empty side data columns
	}
	if len(got) != len(want) {
		t.Fatalf("ffprobe found %d video frames, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("frame %d: pts,dts %s, want %s", i, got[i], want[i])
		}
	}
	out, err = exec.Command(ffprobe, "-v", "error", "-select_streams", "a", "-count_packets",
		"-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", path).CombinedOutput()
	f := strings.Fields(string(out)) // a value per program and per stream
	if err != nil || len(f) == 0 {
		t.Fatalf("ffprobe audio packets: %q %v", out, err)
	}
	if n, _ := strconv.Atoi(f[0]); n != audio {
		t.Fatalf("ffprobe found %d audio frames, want %d", n, audio)
	}
}

// FuzzTSMuxer: any access unit a publisher sends (AVCC or not, lengths
// past the end, any NALU lengths prefix size) and any timestamps mux into
// whole 188-byte TS packets, never a panic.
func FuzzTSMuxer(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 1, 0x09}, true, int64(0), int64(40), uint8(3))
	f.Add([]byte{0, 0, 1, 0x65, 0x88}, false, int64(-5), int64(0), uint8(0))
	f.Add(make([]byte, 400), true, int64(1<<40), int64(-1<<40), uint8(1))
	streams, _ := mediatest.ReadFLV(f, mediatest.TestFLV(f))
	f.Fuzz(func(t *testing.T, data []byte, key bool, ts, ct int64, lenSize uint8) {
		var m tsMuxer
		if err := m.setStreams(streams); err != nil {
			t.Fatal(err)
		}
		m.streams[0].nalLen = int(lenSize&3) + 1
		out := m.appendPATPMT(nil)
		for idx := range streams {
			var err error
			out, err = m.appendPacket(out, av.Packet{Idx: int8(idx), IsKeyFrame: key, Data: data,
				Time: time.Duration(ts), CompositionTime: time.Duration(ct)})
			if err != nil {
				t.Fatal(err)
			}
		}
		if len(out)%tsPacketSize != 0 {
			t.Fatalf("%d bytes: not whole TS packets", len(out))
		}
		for off := 0; off < len(out); off += tsPacketSize {
			if out[off] != 0x47 {
				t.Fatalf("no sync byte at %d", off)
			}
		}
	})
}

// Async hands packets over in batches; the batch still being gathered
// when the publish ends is written by Close, not lost.
func TestAsyncCloseWritesThePendingBatch(t *testing.T) {
	m, err := New(Config{Dir: t.TempDir(), Fragment: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	s, err := m.Open("live", "s", streams)
	if err != nil {
		t.Fatal(err)
	}
	a := NewAsync(s, 0)
	var last time.Duration
	for _, p := range pkts {
		if p.Time > 2*time.Second && len(a.pending) > 0 && len(a.pending) < batchMax-1 {
			break // a partial batch is pending
		}
		a.WritePacket(p)
		last = p.Time
	}
	if len(a.pending) == 0 {
		t.Fatal("no partial batch pending")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if s.last != last {
		t.Fatalf("the writer's last packet at %v, want %v (the pending batch's last)", s.last, last)
	}
}

// BenchmarkMux is MPEG-TS muxing alone, per packet of the 480p test
// stream, our muxer against joy4's ts.Muxer (what the HLS writer used
// before) writing through the same kind of 64 KiB buffer.
func BenchmarkMux(b *testing.B) {
	streams, pkts := mediatest.ReadFLV(b, mediatest.TestFLVSized(b, "854x480"))
	b.Run("own", func(b *testing.B) {
		var m tsMuxer
		if err := m.setStreams(streams); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 0, writeBlock+8<<10)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var err error
			if buf, err = m.appendPacket(buf, pkts[i%len(pkts)]); err != nil {
				b.Fatal(err)
			}
			if len(buf) >= writeBlock {
				buf = buf[:0]
			}
		}
	})
	b.Run("joy4", func(b *testing.B) {
		bw := bufio.NewWriterSize(io.Discard, writeBlock)
		m := ts.NewMuxer(bw)
		if err := m.WriteHeader(streams); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := m.WritePacket(pkts[i%len(pkts)]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
