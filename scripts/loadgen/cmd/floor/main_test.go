package main

import (
	"bytes"
	"io"
	"math"
	"net"
	"testing"

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

// TestWritersReachEverySocket runs the writers over real sockets: every
// socket, whichever part it is in, gets the bytes of one window once.
func TestWritersReachEverySocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const n = 5
	var ends []net.Conn
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		ends, conns = append(ends, c), append(conns, s)
	}
	defer func() {
		for _, c := range append(ends, conns...) {
			c.Close()
		}
	}()
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
