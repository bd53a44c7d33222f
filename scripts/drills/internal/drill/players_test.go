package drill

import (
	"testing"
	"time"
)

func TestResumeAndKept(t *testing.T) {
	t0 := time.UnixMilli(10_000)
	s := &Summary{Requested: 3, Connected: 3, Gaps: []Gap{
		{Client: 0, FromMS: 9_900, ToMS: 12_400, MS: 2500},  // across t0: resumed 2.4 s after
		{Client: 1, FromMS: 10_300, ToMS: 11_000, MS: 700},  // began just after t0: 1 s
		{Client: 1, FromMS: 11_500, ToMS: 12_500, MS: 1000}, // a second one: not the resume
		{Client: 2, FromMS: 20_000, ToMS: 21_000, MS: 1000}, // later: not about t0
	}}
	r := s.Resume(t0, time.Second)
	if len(r) != 2 || r[0] != 2400*time.Millisecond || r[1] != time.Second {
		t.Fatalf("Resume = %v, want [2.4s 1s]", r)
	}
	if s.MaxGap() != 2500*time.Millisecond {
		t.Fatalf("MaxGap = %v", s.MaxGap())
	}
	if s.Kept() != 3 {
		t.Fatalf("Kept = %d, want 3", s.Kept())
	}
	s.ErrorsTotal, s.Errors = 2, map[string]map[string]int64{"hls": {"http_404": 1, "hls_behind": 1}}
	if s.Kept() != 2 {
		t.Fatalf("Kept with a 404 and an hls_behind = %d, want 2", s.Kept())
	}
	s.ErrorsTotal, s.Errors, s.Connected = 0, nil, 1
	if s.Kept() != 1 {
		t.Fatalf("Kept with 1 of 3 connected = %d, want 1", s.Kept())
	}
}
