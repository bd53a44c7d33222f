package hub_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nareix/joy4/av"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
)

// countingWriter is a player's connection that takes every write whole
// and counts the tags of the last one; before its write, onWrite runs
// (once per test, from whichever flusher writes first).
type countingWriter struct {
	lastTags atomic.Int64
	onWrite  func()
}

func (w *countingWriter) TryWriteBuffers(v *net.Buffers) (int64, error) {
	if w.onWrite != nil {
		w.onWrite()
	}
	w.lastTags.Store(int64(len(*v)))
	return consume(v), nil
}

// consume takes all of v as written and returns its length.
func consume(v *net.Buffers) int64 {
	var n int64
	for _, b := range *v {
		n += int64(len(b))
	}
	*v = (*v)[len(*v):]
	return n
}

// directHub returns a hub whose windows end only by Flush, publishing
// streams, with a player in direct mode per writer of ws (their
// goroutines stopped, and the hub closed, at the test's end).
func directHub(t *testing.T, streams []av.CodecData, ws []hub.DirectWriter) (*hub.Hub, *hub.Source, []*hub.Reader) {
	t.Helper()
	h := hub.New("k", hub.Config{MergeWindow: time.Hour})
	src, err := h.Publish(streams, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); h.Close(); wg.Wait() })
	rds := make([]*hub.Reader, len(ws))
	for i, w := range ws {
		if rds[i], err = h.NewReader(); err != nil {
			t.Fatal(err)
		}
		r := rds[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = r.CopyDirect(ctx, w, nil, func([][]byte) error { return nil })
		}()
	}
	return h, src, rds
}

// A flusher takes a reader's tags just before it writes them, so a tag
// that arrives while a flush is writing goes out in that flush to every
// reader not yet taken: with thousands of players on one core, writing
// them all outlasts the window, and a tag waits about one flush instead
// of the rest of this one and the whole next.
func TestTagArrivingDuringFlushJoinsIt(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	// Four chunks per flusher, so that most readers are taken after the
	// tag arrives however many cores there are.
	readers := 64 * 4 * max(runtime.GOMAXPROCS(0), 2)
	var src *hub.Source // set below; onWrite runs only after
	var inject atomic.Bool
	var once sync.Once
	var injectErr error
	first := 0
	for !pkts[first].IsKeyFrame {
		first++
	}
	next := first
	onWrite := func() {
		if inject.Load() {
			once.Do(func() { // a tag arrives while the flush writes
				injectErr = src.WritePacket(pkts[next+1])
			})
		}
	}
	ws := make([]*countingWriter, readers)
	dws := make([]hub.DirectWriter, readers)
	for i := range ws {
		ws[i] = &countingWriter{onWrite: onWrite}
		dws[i] = ws[i]
	}
	h, src0, _ := directHub(t, streams, dws)
	src = src0
	// Step windows until every reader is written by the flushers (their
	// goroutines have written the headers and handed them over).
	deadline := time.Now().Add(10 * time.Second)
	for {
		before := h.Stats().DirectWrites
		if err := src.WritePacket(pkts[next]); err != nil {
			t.Fatal(err)
		}
		next++
		h.Flush()
		if h.Stats().DirectWrites-before == int64(readers) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readers not all in direct mode after 10 s: %d of %d written directly", h.Stats().DirectWrites-before, readers)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// One tag queued, one more arriving at the flush's first write.
	if err := src.WritePacket(pkts[next]); err != nil {
		t.Fatal(err)
	}
	inject.Store(true)
	h.Flush()
	if injectErr != nil {
		t.Fatal(injectErr)
	}
	both := 0
	for _, w := range ws {
		if w.lastTags.Load() == 2 {
			both++
		}
	}
	// Every flusher may have taken its first chunk before the tag came.
	flushers := min(runtime.GOMAXPROCS(0), readers/64)
	want := readers - flushers*64
	t.Logf("%d of %d readers got the tag that arrived during the flush in that flush (%d flushers)", both, readers, flushers)
	if both < want {
		t.Fatalf("%d of %d readers got the tag that arrived during the flush in that flush, want at least %d (all but the first chunk of each of %d flushers)",
			both, readers, want, flushers)
	}
}

// seqWriter records, in order, which player each direct write went to.
type seqWriter struct {
	id    int
	mu    *sync.Mutex
	order *[]int
}

func (w *seqWriter) TryWriteBuffers(v *net.Buffers) (int64, error) {
	w.mu.Lock()
	*w.order = append(*w.order, w.id)
	w.mu.Unlock()
	return consume(v), nil
}

// Every flush writes the players in the same order, so that a player's
// writes come one flush apart (with a random order, a player written
// first in one flush and last in the next waits two); a player leaving
// moves only the last one into its place.
func TestFlushOrderIsStable(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	const players = 64 // one flusher
	var mu sync.Mutex
	var order []int
	ws := make([]hub.DirectWriter, players)
	for i := range ws {
		ws[i] = &seqWriter{id: i, mu: &mu, order: &order}
	}
	h, src, rds := directHub(t, streams, ws)
	next := 0
	for !pkts[next].IsKeyFrame {
		next++
	}
	// flushOrder publishes one packet, ends the window and returns the
	// order of the flush's direct writes.
	flushOrder := func() []int {
		t.Helper()
		if err := src.WritePacket(pkts[next]); err != nil {
			t.Fatal(err)
		}
		next++
		mu.Lock()
		order = order[:0]
		mu.Unlock()
		h.Flush()
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), order...)
	}
	deadline := time.Now().Add(10 * time.Second)
	var first []int
	for first = flushOrder(); len(first) < players; first = flushOrder() {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d players written directly after 10 s", len(first), players)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		if got := flushOrder(); fmt.Sprint(got) != fmt.Sprint(first) {
			t.Fatalf("flush order changed:\n%v\n%v", first, got)
		}
	}
	// Player 10 leaves: the last one in the order takes its place, and
	// the others keep theirs.
	leaving := 10
	pos := -1
	for i, id := range first {
		if id == leaving {
			pos = i
		}
	}
	rds[leaving].Close()
	want := append([]int(nil), first[:len(first)-1]...)
	if pos < len(want) {
		want[pos] = first[len(first)-1]
	}
	if got := flushOrder(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after player %d left, flush order\n%v\nwant\n%v", leaving, got, want)
	}
}
