package httpflv_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
)

// An HTTP-FLV player is written by the hub's flushers (one non-blocking
// writev per window on the hijacked connection) and receives the very
// bytes a reader's goroutine takes with Next, after the FLV file header;
// with room in its socket, its goroutine writes nothing after the first
// batch.
func TestDirectSameBytesAsNext(t *testing.T) {
	f := newFixture(t, hub.Config{MergeWindow: time.Hour, QueuePackets: 1 << 16, QueueBytes: 1 << 30})
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	hb, _, err := f.reg.GetOrCreate("default/live/s")
	if err != nil {
		t.Fatal(err)
	}
	src, err := hb.Publish(streams, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := hb.NewReader() // attached before any packet, as the player
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(f.srv.URL + "/live/s.flv")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(resp.Body)
		body <- b
	}()
	var want bytes.Buffer
	refDone := make(chan error, 1)
	go func() {
		for {
			tags, err := ref.Next(context.Background())
			if err != nil {
				refDone <- err
				return
			}
			for _, tg := range tags {
				want.Write(tg)
			}
		}
	}()
	mediatest.Eventually(t, 10*time.Second, "the player attached", func() bool { return hb.NumReaders() == 2 })
	i := 0
	// Until the player's goroutine wrote its first batch and handed the
	// connection to the flushers (a window's batch written by them).
	mediatest.Eventually(t, 10*time.Second, "the player in direct mode", func() bool {
		if err := src.WritePacket(pkts[i]); err != nil {
			t.Fatal(err)
		}
		i++
		hb.Flush()
		return hb.Stats().DirectWrites > 0
	})
	for ; i < len(pkts); i++ {
		if err := src.WritePacket(pkts[i]); err != nil {
			t.Fatal(err)
		}
		if i%4 == 3 {
			hb.Flush()
		}
	}
	hb.Flush()
	st := hb.Stats()
	hb.Close()
	<-refDone
	got := <-body
	if st.DirectWrites == 0 {
		t.Fatalf("no batch written by the flushers: %+v", st)
	}
	const head = flvio.FileHeaderLength + 4
	if len(got) < head || want.Len() == 0 || !bytes.Equal(got[head:], want.Bytes()) {
		t.Fatalf("player got %d bytes after the file header, Next %d: not the same", len(got)-head, want.Len())
	}
	t.Logf("%d bytes; %+v", len(got), st)
}
