package hub_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
)

func TestMain(m *testing.M) { mediatest.Main(m) }

type seen struct {
	typ uint8
	ts  uint32
	seq bool // sequence header
	key bool
}

func parse(t testing.TB, tags [][]byte) []seen {
	var out []seen
	for _, b := range tags {
		tag, ts, n, err := flvio.ParseTagHeader(b)
		if err != nil || len(b) != flvio.TagHeaderLength+n+4 {
			t.Fatalf("bad tag: %v", err)
		}
		body := b[flvio.TagHeaderLength : flvio.TagHeaderLength+n]
		s := seen{typ: tag.Type, ts: uint32(ts)}
		switch tag.Type {
		case flvio.TAG_VIDEO:
			s.seq = body[1] == 0
			s.key = body[0]>>4 == 1
		case flvio.TAG_AUDIO:
			s.seq = body[1] == 0
		}
		out = append(out, s)
	}
	return out
}

func readN(t *testing.T, r *hub.Reader, n int) []seen {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []seen
	for len(out) < n {
		tags, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("after %d tags: %v", len(out), err)
		}
		out = append(out, parse(t, tags)...)
	}
	return out
}

func TestGOPStartAndSplice(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	h := hub.New("k", hub.Config{MergeWindow: -1})
	src, err := h.Publish(streams, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Publish(streams, nil); !errors.Is(err, hub.ErrBusy) {
		t.Fatalf("second Publish: %v", err)
	}
	// 1.5 s of stream: the reader must start at the keyframe at 1 s.
	var n int
	for _, p := range pkts {
		if p.Time >= 1500*time.Millisecond {
			break
		}
		src.WritePacket(p)
		n++
	}
	r, err := h.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	got := readN(t, r, 4)
	if got[0].typ != flvio.TAG_SCRIPTDATA || !got[1].seq || !got[2].seq {
		t.Fatalf("reader start %+v: want metadata and sequence headers", got[:3])
	}
	if got[3].typ != flvio.TAG_VIDEO || !got[3].key || got[3].ts != 1000 {
		t.Fatalf("first media tag %+v: want the keyframe at 1000 ms", got[3])
	}
	// Drain, then splice a new source whose clock restarts at 0.
	var last uint32
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		tags, err := r.Next(ctx)
		cancel()
		if err != nil {
			break
		}
		for _, s := range parse(t, tags) {
			last = max(last, s.ts)
		}
	}
	src2, err := h.Splice(streams, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.WritePacket(pkts[0]); !errors.Is(err, hub.ErrSourceReplaced) {
		t.Fatalf("old source write after splice: %v", err)
	}
	// The new source starts mid-GOP, as an upstream joined at any moment
	// may: nothing of it may reach the reader before its first keyframe.
	mid := -1
	for i, p := range pkts {
		if i > 0 && streams[p.Idx].Type().IsVideo() && !p.IsKeyFrame {
			mid = i
			break
		}
	}
	if mid < 0 {
		t.Fatal("test stream has no non-key video frame")
	}
	for _, p := range pkts[mid : mid+400] {
		if err := src2.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	got = readN(t, r, 10)
	if got[0].typ != flvio.TAG_SCRIPTDATA || !got[1].seq || !got[2].seq {
		t.Fatalf("after splice %+v: want headers resent", got[:3])
	}
	var lastVideo uint32
	for i, s := range got[3:] {
		if s.ts < last {
			t.Fatalf("tag %d after splice at %d ms, before %d ms seen earlier", i, s.ts, last)
		}
		if s.typ == flvio.TAG_VIDEO {
			if lastVideo == 0 && !s.key {
				t.Fatalf("first video after splice is not a keyframe")
			}
			lastVideo = s.ts
		}
	}
	src2.Close()
	h.Close()
	if _, err := r.Next(context.Background()); !errors.Is(err, io.EOF) {
		t.Fatalf("after close: %v", err)
	}
}

func TestRegistryLifecycle(t *testing.T) {
	reg := hub.NewRegistry(hub.Config{})
	h, created, err := reg.GetOrCreate("a")
	if err != nil || !created {
		t.Fatal(created, err)
	}
	if h2, created, _ := reg.GetOrCreate("a"); h2 != h || created {
		t.Fatal("second GetOrCreate made a new hub")
	}
	h.Close()
	if reg.Get("a") != nil || reg.Len() != 0 {
		t.Fatal("closed hub still registered")
	}
	reg.GetOrCreate("b")
	reg.Close()
	if _, _, err := reg.GetOrCreate("c"); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("GetOrCreate after Close: %v", err)
	}
}

// A reader that never reads is moved to the next keyframe on each overflow
// and dropped after MaxOverflows, while a reader that keeps up gets every
// tag. The fast reader is drained after every packet on the publishing
// goroutine, so the outcome depends on nothing but the queue bounds.
func TestSlowReaderSkippedThenDropped(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	h := hub.New("k", hub.Config{QueuePackets: 100, MaxOverflows: 2, MergeWindow: -1})
	src, _ := h.Publish(streams, nil)
	slow, _ := h.NewReader()
	fast, _ := h.NewReader()
	ctx := context.Background()
	got := 0
	for _, p := range pkts {
		if err := src.WritePacket(p); err != nil {
			t.Fatal(err)
		}
		tags, err := fast.Next(ctx)
		if err != nil {
			t.Fatalf("fast reader: %v", err)
		}
		got += len(tags)
	}
	st := h.Stats()
	if st.Skipped != 2 || st.Dropped != 1 || slow.Skipped() != 2 || fast.Skipped() != 0 {
		t.Fatalf("stats %+v, slow skipped %d, fast skipped %d: want 2 skips then a drop of the slow reader only",
			st, slow.Skipped(), fast.Skipped())
	}
	if _, err := slow.Next(ctx); !errors.Is(err, hub.ErrTooSlow) {
		t.Fatalf("slow reader: %v", err)
	}
	if want := len(pkts) + 3; got != want {
		t.Fatalf("fast reader got %d tags, want %d", got, want)
	}
	if st.Readers != 1 {
		t.Fatalf("%d readers attached after the drop, want 1", st.Readers)
	}
}

// BenchmarkFanout measures serialize-once fan-out to 100 readers.
func BenchmarkFanout(b *testing.B) {
	streams, pkts := mediatest.ReadFLV(b, mediatest.TestFLV(b))
	for _, readers := range []int{1, 100} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			h := hub.New("k", hub.Config{MergeWindow: -1, QueuePackets: 1 << 16, QueueBytes: 1 << 30})
			src, _ := h.Publish(streams, nil)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var bytesPer int64
			for i := 0; i < readers; i++ {
				r, _ := h.NewReader()
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						if _, err := r.Next(ctx); err != nil {
							return
						}
					}
				}()
			}
			for _, p := range pkts {
				bytesPer += int64(len(p.Data))
			}
			b.ResetTimer()
			var base time.Duration
			for i := 0; i < b.N; i++ {
				p := pkts[i%len(pkts)]
				if i%len(pkts) == 0 && i > 0 {
					base += pkts[len(pkts)-1].Time
				}
				p.Time += base
				if err := src.WritePacket(p); err != nil {
					b.Fatal(err)
				}
			}
			st := h.Stats()
			b.StopTimer()
			cancel()
			wg.Wait()
			el := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/el, "pkts/s")
			b.ReportMetric(float64(st.BytesIn)/el/1e6*float64(readers), "MB/s-fanout")
			b.ReportMetric(float64(st.Dropped), "dropped")
			h.Close()
		})
	}
}

// countingEncoder is the unit test's edge: a wire form that is the tag with
// a marker byte, counting how often it is made.
type countingEncoder struct {
	key uint64
	mu  sync.Mutex
	n   int
}

func (e *countingEncoder) EncoderKey() uint64 { return e.key }
func (e *countingEncoder) Encode(dst, tag []byte) ([]byte, error) {
	e.mu.Lock()
	e.n++
	e.mu.Unlock()
	return append(append(dst, 0xee), tag...), nil
}

// Readers asking with the same encoder key get the same bytes, made once
// per tag; a reader with another key gets its own encoding.
func TestWireSharedOncePerTag(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	h := hub.New("k", hub.Config{MergeWindow: -1})
	src, _ := h.Publish(streams, nil)
	r1, _ := h.NewReader()
	r2, _ := h.NewReader()
	r3, _ := h.NewReader()
	for _, p := range pkts[:50] {
		if err := src.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	shared, other := &countingEncoder{key: 7}, &countingEncoder{key: 8}
	b1, err := r1.NextWire(ctx, shared, nil)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := r2.NextWire(ctx, shared, nil)
	b3, _ := r3.NextWire(ctx, other, nil)
	if len(b1) == 0 || len(b1) != len(b2) || len(b1) != len(b3) {
		t.Fatalf("batches of %d, %d, %d tags", len(b1), len(b2), len(b3))
	}
	for i := range b1 {
		if &b1[i][0] != &b2[i][0] {
			t.Fatalf("tag %d: readers with the same key got different copies", i)
		}
		if &b1[i][0] == &b3[i][0] {
			t.Fatalf("tag %d: a reader with another key got the shared copy", i)
		}
		if b1[i][0] != 0xee {
			t.Fatalf("tag %d is not the encoder's form", i)
		}
	}
	if shared.n != len(b1) {
		t.Fatalf("shared encoder ran %d times for %d tags, want once per tag", shared.n, len(b1))
	}
}

// One window per hub: readers are woken together when it ends, with every
// tag of the window, and not before; a NoMerge reader gets each tag at once.
func TestMergeWindow(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	const window = 300 * time.Millisecond
	h := hub.New("k", hub.Config{MergeWindow: window})
	src, _ := h.Publish(streams, nil)
	merged, _ := h.NewReader()
	relay, _ := h.NewReaderWith(hub.ReaderOptions{NoMerge: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Start at a keyframe so both readers take every tag.
	first := 0
	for !pkts[first].IsKeyFrame {
		first++
	}
	start := time.Now()
	if err := src.WritePacket(pkts[first]); err != nil {
		t.Fatal(err)
	}
	tags, err := relay.Next(ctx)
	if err != nil || len(tags) == 0 {
		t.Fatalf("NoMerge reader: %d tags, %v", len(tags), err)
	}
	if d := time.Since(start); d > window/2 {
		t.Fatalf("NoMerge reader waited %v", d)
	}
	for _, p := range pkts[first+1 : first+6] {
		if err := src.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	tags, err = merged.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < window-10*time.Millisecond {
		t.Fatalf("merged reader woke after %v, before the %v window ended", d, window)
	}
	want := len(parse(t, tags))
	if got := len(tags); got < 6 {
		t.Fatalf("merged reader got %d tags (%d parsed) in its window, want the headers and all 6 packets", got, want)
	}
}

// The hot path allocates per packet, never per reader: allocations per
// packet published and taken by every reader are the same for 1 and 100
// readers.
func TestAllocsDoNotGrowWithReaders(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	enc := &countingEncoder{key: 1}
	per := func(n int) float64 {
		h := hub.New("k", hub.Config{MergeWindow: -1, QueuePackets: 1 << 16, QueueBytes: 1 << 30})
		defer h.Close()
		src, _ := h.Publish(streams, nil)
		rds := make([]*hub.Reader, n)
		bufs := make([][][]byte, n)
		for i := range rds {
			rds[i], _ = h.NewReader()
		}
		ctx := context.Background()
		i := 0
		step := func() {
			p := pkts[i%len(pkts)]
			p.Time += time.Duration(i/len(pkts)) * time.Hour
			i++
			if err := src.WritePacket(p); err != nil {
				t.Fatal(err)
			}
			for j, r := range rds {
				var err error
				if bufs[j], err = r.NextWire(ctx, enc, bufs[j]); err != nil {
					t.Fatal(err)
				}
			}
		}
		for range 200 { // past the first keyframe, scratch slices grown
			step()
		}
		return testing.AllocsPerRun(300, step)
	}
	one, hundred := per(1), per(100)
	t.Logf("allocs per packet: 1 reader %.2f, 100 readers %.2f", one, hundred)
	if hundred > one+0.5 {
		t.Fatalf("allocations grow with readers: %.2f per packet with 1 reader, %.2f with 100", one, hundred)
	}
}

// MergeWindowFunc is read at every window: a reloaded window applies to the
// next packets of a running hub.
func TestMergeWindowFuncReloads(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	var window atomic.Int64
	window.Store(int64(time.Hour))
	h := hub.New("k", hub.Config{MergeWindowFunc: func() time.Duration { return time.Duration(window.Load()) }})
	src, _ := h.Publish(streams, nil)
	rd, _ := h.NewReader()
	first := 0
	for !pkts[first].IsKeyFrame {
		first++
	}
	if err := src.WritePacket(pkts[first]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if tags, err := rd.Next(ctx); err == nil {
		t.Fatalf("got %d tags inside an hour-long window", len(tags))
	}
	window.Store(0) // reloaded: no merging; the next packet wakes the reader
	if err := src.WritePacket(pkts[first+1]); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	tags, err := rd.Next(ctx2)
	if err != nil || len(tags) < 2 {
		t.Fatalf("after the reload: %d tags, %v", len(tags), err)
	}
}

// WriteDelay is told, once per batch and when the reader comes back after
// writing it, how long the batch's oldest live tag waited: the merge
// window plus the write. A new reader's burst from the GOP cache, older
// than the reader, is not counted.
func TestWriteDelay(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	const (
		window = 100 * time.Millisecond
		write  = 150 * time.Millisecond // how long the reader "writes" its batch
	)
	type delay struct{ taken, written time.Duration }
	var (
		mu     sync.Mutex
		delays []delay
	)
	h := hub.New("k", hub.Config{MergeWindow: window, WriteDelay: func(taken, written time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		delays = append(delays, delay{taken, written})
	}})
	told := func() []delay {
		mu.Lock()
		defer mu.Unlock()
		return append([]delay(nil), delays...)
	}
	src, _ := h.Publish(streams, nil)
	first := 0
	for !pkts[first].IsKeyFrame {
		first++
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	live, _ := h.NewReader()
	start := time.Now()
	for _, p := range pkts[first : first+3] {
		if err := src.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := live.Next(ctx); err != nil {
		t.Fatal(err)
	}
	tookAt := time.Since(start)
	time.Sleep(write)
	if d := told(); len(d) != 0 {
		t.Fatalf("told %v before the reader came back", d)
	}
	// Back for the next batch: the first one is told, its oldest tag
	// (the first written) having waited the window and the write.
	if err := src.WritePacket(pkts[first+3]); err != nil {
		t.Fatal(err)
	}
	if _, err := live.Next(ctx); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	d := told()
	if len(d) != 1 {
		t.Fatalf("told %d delays (%v), want 1 for the one batch written", len(d), d)
	}
	if d[0].taken < window || d[0].taken > tookAt {
		t.Fatalf("taken after %v, want between the window (%v) and when Next returned (%v)", d[0].taken, window, tookAt)
	}
	if d[0].written < d[0].taken+write || d[0].written > elapsed {
		t.Fatalf("written after %v, want between taken + write (%v) and the time since the first tag (%v)",
			d[0].written, d[0].taken+write, elapsed)
	}

	// A reader joining now takes the cached GOP at once; coming back after
	// it, nothing is told: those tags waited for the GOP cache, not for it.
	late, _ := h.NewReader()
	if tags, err := late.Next(ctx); err != nil || len(tags) < 4 {
		t.Fatalf("GOP burst: %d tags, %v", len(tags), err)
	}
	short, cancelShort := context.WithTimeout(ctx, window/2)
	defer cancelShort()
	if _, err := late.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no packet since the burst, Next: %v", err)
	}
	if d := told(); len(d) != 1 {
		t.Fatalf("told %v after a GOP burst, want only the live reader's batch", d)
	}
}
