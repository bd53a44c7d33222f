package hls_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/mediatest"
)

// owner simulates one origin's numbering of a stream: its clock is off by
// skew, its local next number survives across its sessions.
type owner struct {
	skew time.Duration
	next int64
	last int64 // highest number opened; -1: none
}

// session numbers segments from real time start for tenure at one segment
// per fragment (plus burst segments at once at the start, the worst case),
// as the segmenter does, and returns the numbers.
func (o *owner) session(start time.Time, tenure, fragment time.Duration, burst int) []int64 {
	n := hls.StartSeq(o.next, start.Add(o.skew), fragment)
	var out []int64
	for t := time.Duration(0); t <= tenure; t += fragment {
		k := 1
		if t == 0 {
			k += burst
		}
		for range k {
			out = append(out, n)
			o.last, n = n, n+1
		}
	}
	o.next = n
	return out
}

// TestStartSeqAcrossOwners checks the invariant of seq.go: with clocks
// within MaxClockSkew, a new owner's first number is above every number of
// the previous owner once that owner has held the stream MinTenure, for
// owners that are fresh, that come back (local state) and that alternate.
func TestStartSeqAcrossOwners(t *testing.T) {
	for _, fragment := range []time.Duration{100 * time.Millisecond, time.Second, 2 * time.Second, 2500 * time.Millisecond, 6 * time.Second} {
		minT := hls.MinTenure(fragment, hls.MaxClockSkew, hls.Burst)
		if minT <= 0 || minT > 2*hls.MaxClockSkew+fragment {
			t.Fatalf("fragment %v: MinTenure %v out of range", fragment, minT)
		}
		// The old owner's clock ahead by the whole skew is the worst case.
		for _, skewA := range []time.Duration{hls.MaxClockSkew, 0, -hls.MaxClockSkew} {
			// Start times at every offset within a clock quantum and a fragment.
			for off := time.Duration(0); off < fragment; off += fragment/37 + time.Millisecond {
				base := time.Unix(1_795_000_000, 0).Add(off)
				for _, tenure := range []time.Duration{minT, minT + fragment/3, minT + 10*fragment, time.Hour} {
					a := &owner{skew: skewA}
					b := &owner{}
					c := &owner{skew: skewA / 2}
					now := base
					var prev int64 = -1
					// A, B, A again (local state), C, B again: each held for tenure.
					for i, o := range []*owner{a, b, a, c, b} {
						nums := o.session(now, tenure, fragment, hls.Burst)
						if nums[0] <= prev {
							t.Fatalf("fragment %v skew %v off %v tenure %v: owner change %d starts at %d, previous owner reached %d",
								fragment, skewA, off, tenure, i, nums[0], prev)
						}
						prev = nums[len(nums)-1]
						now = now.Add(tenure)
					}
				}
			}
		}
	}
	// A fresh node starts from the clock, a node ahead of it continues.
	now := time.Unix(1_795_000_000, 0)
	if got, want := hls.StartSeq(0, now, 2*time.Second), int64(1_795_000_000*8); got != want {
		t.Errorf("StartSeq(0) = %d, want %d", got, want)
	}
	if got := hls.StartSeq(1_795_000_000*8+5, now, 2*time.Second); got != 1_795_000_000*8+5 {
		t.Errorf("StartSeq(ahead) = %d, want the local number", got)
	}
}

// TestClaimJumpsForward: a session after another one on the same node, once
// the clock has moved on, starts at the clock's number; the playlist then
// holds only the new session's segments (numbers are implicit, so a jump
// cannot sit inside it), with a discontinuity and a right
// DISCONTINUITY-SEQUENCE, and ffmpeg plays it.
func TestClaimJumpsForward(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_795_000_000, 0)
	clock := func() time.Time { return now }
	m, err := hls.New(hls.Config{Dir: dir, Fragment: time.Second, Window: 4, Dispose: time.Hour, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	first := hls.StartSeq(0, now, time.Second)

	s, err := m.Open("live", "j", streams)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, s, pkts, 0, 4*time.Second)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	plPath := filepath.Join(dir, "live", "j.m3u8")
	pl := readPlaylist(t, plPath)
	if got := segments(pl); len(got) != 4 || got[0] != fmt.Sprintf("j-%d.ts", first) {
		t.Fatalf("first session (want 4 segments from %d):\n%s", first, pl)
	}

	now = now.Add(10 * time.Second) // the stream came back after 10 s
	second := hls.StartSeq(first+4, now, time.Second)
	if second <= first+4 {
		t.Fatalf("second session starts at %d, not above %d", second, first+4)
	}
	s, err = m.Open("live", "j", streams)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, s, pkts, 0, 3*time.Second)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	pl = readPlaylist(t, plPath)
	got := segments(pl)
	if len(got) != 3 || got[0] != fmt.Sprintf("j-%d.ts", second) || tagInt(t, pl, "EXT-X-MEDIA-SEQUENCE") != int(second) {
		t.Fatalf("second session (want 3 segments from %d):\n%s", second, pl)
	}
	if !strings.HasPrefix(strings.SplitN(pl, "#EXT-X-DISCONTINUITY\n", 2)[1], "#EXTINF") ||
		strings.Count(pl, "#EXT-X-DISCONTINUITY\n") != 1 || strings.Contains(pl, "DISCONTINUITY-SEQUENCE") {
		t.Errorf("want one discontinuity before the first new segment and no DISCONTINUITY-SEQUENCE:\n%s", pl)
	}
	for i, sg := range got {
		if want := fmt.Sprintf("j-%d.ts", second+int64(i)); sg != want {
			t.Errorf("segment %d is %s, want %s (MEDIA-SEQUENCE + index)", i, sg, want)
		}
	}
	// The old segments left the playlist; Keep (2) of them stay on disk.
	for i, want := range []bool{false, false, true, true} {
		_, err := os.Stat(filepath.Join(dir, "live", fmt.Sprintf("j-%d.ts", first+int64(i))))
		if (err == nil) != want {
			t.Errorf("old segment %d on disk: %v, want %v", first+int64(i), err == nil, want)
		}
	}
	if !testing.Short() {
		ffmpegClean(t, "-i", plPath)
	}

	// A third session whose discontinuity leaves the window: counted.
	now = now.Add(10 * time.Second)
	third := hls.StartSeq(second+3, now, time.Second)
	s, err = m.Open("live", "j", streams)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, s, pkts, 0, 2*time.Second)
	s.Close()
	pl = readPlaylist(t, plPath)
	if tagInt(t, pl, "EXT-X-DISCONTINUITY-SEQUENCE") != 1 || tagInt(t, pl, "EXT-X-MEDIA-SEQUENCE") != int(third) {
		t.Errorf("third session from %d, want DISCONTINUITY-SEQUENCE 1:\n%s", third, pl)
	}
}
