package main

import (
	"bytes"
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/flvtag"
)

func TestChunk(t *testing.T) {
	body := bytes.Repeat([]byte{7}, 10000)
	b := chunk(flvtag.Video, 0x123456, body, 4096)
	// 12-byte type-0 header, then a 1-byte type-3 header before chunks 2 and 3.
	if len(b) != 12+10000+2 {
		t.Fatalf("chunked length %d, want %d", len(b), 12+10000+2)
	}
	if b[0] != 6 || b[1] != 0x12 || b[2] != 0x34 || b[3] != 0x56 || b[7] != flvtag.Video {
		t.Fatalf("type-0 header % x", b[:12])
	}
	if n := int(b[4])<<16 | int(b[5])<<8 | int(b[6]); n != 10000 {
		t.Fatalf("message length %d", n)
	}
	if b[12+4096] != 0xc6 || b[12+4096+1+4096] != 0xc6 {
		t.Fatal("no type-3 header at the chunk boundaries")
	}
	if a := chunk(flvtag.Audio, 0, []byte{1}, 4096); a[0] != 4 || len(a) != 13 {
		t.Fatalf("audio chunk % x", a)
	}
}

func TestSyntheticBitrate(t *testing.T) {
	s, err := loadStream(options{bitrate: 2_000_000, chunk: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(s.bitrate-2_000_000) > 20_000 {
		t.Fatalf("bitrate %.0f, want 2 Mbit/s ± 1%%", s.bitrate)
	}
	for i := 1; i < len(s.at); i++ {
		if s.at[i] < s.at[i-1] {
			t.Fatalf("message %d is scheduled before its predecessor", i)
		}
	}
	if len(s.msgs) != 60+86 {
		t.Fatalf("%d messages in 2 s, want 60 video + 86 audio", len(s.msgs))
	}
	if _, err := loadStream(options{bitrate: 1000, chunk: 4096}); err == nil {
		t.Fatal("accepted a 1 kbit/s stream")
	}
}

func TestSplit(t *testing.T) {
	conns := make([]net.Conn, 7)
	for _, tc := range []struct{ k, parts, first, last int }{
		{1, 1, 7, 7}, {2, 2, 4, 3}, {3, 3, 3, 1}, {7, 7, 1, 1}, {9, 7, 1, 1},
	} {
		ps := split(conns, tc.k)
		if len(ps) != tc.parts || len(ps[0].conns) != tc.first || len(ps[len(ps)-1].conns) != tc.last {
			t.Errorf("split 7 in %d: %d parts, first %d, last %d; want %d, %d, %d",
				tc.k, len(ps), len(ps[0].conns), len(ps[len(ps)-1].conns), tc.parts, tc.first, tc.last)
		}
		total := 0
		for _, p := range ps {
			total += len(p.conns)
		}
		if total != 7 {
			t.Errorf("split 7 in %d covers %d sockets", tc.k, total)
		}
	}
}

// socketPairs returns n connected loopback TCP pairs: the readers' ends
// and the server's (accepted) ends, all closed at the test's end.
func socketPairs(t *testing.T, n int) (ends, conns []net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		ends, conns = append(ends, c), append(conns, s)
	}
	return ends, conns
}

// TestWritersReachEverySocket runs the writers over real sockets: every
// socket, whichever part it is in, gets the bytes of one window once.
func TestWritersReachEverySocket(t *testing.T) {
	ends, conns := socketPairs(t, 5)
	if err := split(conns, 2).write(net.Buffers{[]byte("ab"), []byte("cd")}); err != nil {
		t.Fatal(err)
	}
	for i, c := range ends {
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "abcd" {
			t.Fatalf("socket %d got %q, %v", i, b, err)
		}
	}
	conns[3].Close()
	if err := split(conns, 2).write(net.Buffers{[]byte("x")}); err == nil {
		t.Fatal("a write to a closed socket in the second part was not reported")
	}
}

// TestMain is also the readers' child process of point (the command runs
// itself with -reader; under test, this binary is itself).
func TestMain(m *testing.M) {
	if readerChild() {
		return
	}
	mediatest.Main(m)
}

// TestHubRunWritesEverySocket serves real sockets from the hub (-hub): every
// reader gets an FLV stream that starts with the sequence headers and the
// cached GOP's keyframe and goes on at the file's pace, and the writes and
// bytes counted in the measured part are what the readers could have
// received.
func TestHubRunWritesEverySocket(t *testing.T) {
	pk, err := loadPackets(mediatest.TestFLV(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	ends, conns := socketPairs(t, n)
	got := make([]chan int64, n)
	for i, c := range ends {
		got[i] = make(chan int64, 1)
		go func() {
			b, _ := io.Copy(io.Discard, c)
			got[i] <- b
		}()
	}
	start := time.Now()
	measured := false
	hs, err := hubRun(context.Background(), pk, conns, 50*time.Millisecond, start.Add(500*time.Millisecond), start.Add(2500*time.Millisecond), func() { measured = true })
	if err != nil {
		t.Fatal(err)
	}
	if !measured {
		t.Fatal("the measured part never started")
	}
	// 2 s at 50 ms: about 40 windows per socket (fewer when a window has
	// no packet: the file is 30 fps with AAC, so every window has one).
	if perSock := hs.writes / n; perSock < 15 || perSock > 45 {
		t.Errorf("%d batches per socket in 2 s at a 50 ms window", perSock)
	}
	for _, c := range conns {
		c.Close()
	}
	for i := range ends {
		select {
		case b := <-got[i]:
			if b < hs.bytes/n {
				t.Errorf("socket %d read %d bytes, fewer than the %d measured per socket", i, b, hs.bytes/n)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("socket %d: reader did not end", i)
		}
	}
	if hs.bytes == 0 || hs.behind > time.Second {
		t.Errorf("bytes %d, behind %v", hs.bytes, hs.behind)
	}
}

// TestPointPlainAndHub runs whole points as the command does, with the
// readers in a child process (this test binary, as the command runs
// itself): the plain loop writes every socket once per window, the hub
// about as often, and both count what they wrote (the readers' CPU is
// sampled too, but three slow readers may not reach a clock tick).
func TestPointPlainAndHub(t *testing.T) {
	path := mediatest.TestFLV(t)
	pk, err := loadPackets(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := loadStream(options{flv: path, chunk: 4096})
	if err != nil {
		t.Fatal(err)
	}
	o := options{warmup: 300 * time.Millisecond, duration: 1500 * time.Millisecond, writers: 2}
	const n = 3
	for _, tc := range []struct {
		name string
		pk   *packets
	}{{"plain", nil}, {"hub", pk}} {
		p, err := point(context.Background(), o, st, tc.pk, n, 50*time.Millisecond)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// 20 windows a second, each with a message (30 fps).
		if per := p.WritesPerS / n; per < 10 || per > 25 {
			t.Errorf("%s: %.1f writes per socket per second at a 50 ms window", tc.name, per)
		}
		if p.N != n || p.BytesPerS < st.bitrate/8*n*0.5 || p.CPUPerS <= 0 || p.ReaderCPUPerS < 0 || p.DurationS < 1 {
			t.Errorf("%s: point %+v", tc.name, p)
		}
	}
}

// TestListenPointServesHTTPFLV plays -hub -listen as the load generator
// does: HTTP GETs whose responses are FLV streams, tags from the start,
// until the point ends and closes them.
func TestListenPointServesHTTPFLV(t *testing.T) {
	pk, err := loadPackets(mediatest.TestFLV(t))
	if err != nil {
		t.Fatal(err)
	}
	// A free port for the point to listen on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	type result struct {
		status string
		head   []byte
		n      int64
		err    error
	}
	const n = 2
	res := make(chan result, n)
	for range n {
		go func() {
			var resp *http.Response
			var err error
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				// Until the point listens.
				if resp, err = http.Get("http://" + addr + "/live/x.flv"); err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil {
				res <- result{err: err}
				return
			}
			defer resp.Body.Close()
			head := make([]byte, 13+11)
			_, err = io.ReadFull(resp.Body, head)
			m, _ := io.Copy(io.Discard, resp.Body)
			res <- result{resp.Status, head, m, err}
		}()
	}
	o := options{warmup: 200 * time.Millisecond, duration: time.Second, hub: true, listen: addr}
	p, err := point(context.Background(), o, &stream{}, pk, n, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if p.N != n || p.WritesPerS < 10 || p.BytesPerS <= 0 || p.CPUPerS <= 0 || p.ReaderCPUPerS != 0 {
		t.Errorf("point %+v", p)
	}
	for range n {
		r := <-res
		if r.err != nil {
			t.Fatal(r.err)
		}
		// The FLV file header, its first tag size, then a tag: audio (8),
		// video (9) or script data (18).
		if r.status != "200 OK" || string(r.head[:3]) != "FLV" || (r.head[13] != 8 && r.head[13] != 9 && r.head[13] != 18) {
			t.Errorf("response %s, head % x", r.status, r.head)
		}
		if float64(r.n) < p.BytesPerS/n*0.5 {
			t.Errorf("a player read %d bytes after the first tag's header; the point wrote %.0f per second to each", r.n, p.BytesPerS/n)
		}
	}
}
