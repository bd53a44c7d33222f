package stats

import (
	"math"
	"os"
	"strconv"
	"testing"
	"time"
)

func TestHistQuantiles(t *testing.T) {
	var h Hist
	if h.Summary() != nil {
		t.Fatal("empty histogram has a summary")
	}
	for i := 1; i <= 1000; i++ {
		h.Add(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.Quantile(c.q)
		if math.Abs(float64(got-c.want)) > 0.04*float64(c.want) {
			t.Errorf("Quantile(%v) = %v, want %v ± 4%%", c.q, got, c.want)
		}
	}
	if s := h.Summary(); s.N != 1000 || s.Max != 1000 {
		t.Errorf("Summary = %+v", s)
	}
	var small Hist
	small.Add(-time.Second) // clock skew: counts as 0
	small.Add(37 * time.Microsecond)
	if got := small.Quantile(1); got != 37*time.Microsecond {
		t.Errorf("exact small values: got %v", got)
	}
}

func TestLateClients(t *testing.T) {
	r, err := New("play", 3*time.Second, []string{strconv.Itoa(os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	onTime, behind, silent, waiting := r.NewClient(), r.NewClient(), r.NewClient(), r.NewClient()
	for _, c := range []*Client{onTime, behind, silent} {
		c.Connected()
	}
	base := time.Now()
	onTime.Media(10*time.Second, true)
	behind.Media(10*time.Second, true)
	// Backdate the first media so "now" is 10 s later.
	for _, c := range []*Client{onTime, behind} {
		c.firstWall.Store(base.Add(-10 * time.Second).UnixNano())
	}
	onTime.Media(19*time.Second, false) // 9 s of media in 10 s: 1 s behind
	behind.Media(15*time.Second, false) // 5 s of media in 10 s: 5 s behind
	silent.connWall.Store(base.Add(-4 * time.Second).UnixNano())
	_ = waiting // not connected yet: never late
	l := r.Tick(base)
	if l.Late != 2 || l.Connected != 3 {
		t.Fatalf("tick: late %d connected %d, want 2 (behind, silent) and 3", l.Late, l.Connected)
	}
	behind.Done("rtmp", "read", os.ErrDeadlineExceeded)
	l = r.Tick(base.Add(time.Second))
	if l.Late != 1 || l.Errors["rtmp"]["read"] != 1 || l.Connected != 2 {
		t.Fatalf("after Done: %+v", l)
	}
	s := r.Summary("u", "rtmp", 4)
	if s.LateMax != 2 || s.LateClients != 2 || s.ErrorsTotal != 1 || s.MaxConcurrent != 3 || s.StartupMS.N != 2 {
		t.Fatalf("summary: %+v", s)
	}
	if s.Server == nil || s.Server.RSSPeakBytes <= 0 {
		t.Fatalf("server figures of our own pid: %+v", s.Server)
	}
}

func TestNewRefusesMissingPID(t *testing.T) {
	if _, err := New("play", time.Second, []string{"999999999"}); err == nil {
		t.Fatal("New accepted a pid that does not exist")
	}
}

// TestLateAfterGOPBurst: a player first gets the server's cached GOP in a
// burst (2 s of media at once), then goes live; a 3.5 s stall after that
// is late even though the burst put its media ahead of the wall clock.
func TestLateAfterGOPBurst(t *testing.T) {
	r, err := New("play", 3*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := r.NewClient()
	c.Connected()
	c.Media(0, true)                                                       // cached keyframe
	c.Media(1900*time.Millisecond, false)                                  // rest of the cached GOP, same instant
	c.Media(2000*time.Millisecond, true)                                   // live keyframe
	c.firstWall.Store(time.Now().Add(-3500 * time.Millisecond).UnixNano()) // then nothing for 3.5 s
	if l := r.Tick(time.Now()); l.Late != 1 {
		t.Fatalf("late = %d after a 3.5 s stall once live, want 1", l.Late)
	}
	if !c.Live() {
		t.Fatal("not live after the second keyframe")
	}
}

// TestGaps: a pause between two media arrivals of at least the threshold
// is listed with both ends and the client's index; shorter ones are not.
func TestGaps(t *testing.T) {
	r, err := New("play", 3*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.RecordGaps(time.Second)
	a, b := r.NewClient(), r.NewClient()
	a.Media(0, true)
	b.Media(0, true)
	a.Media(10*time.Millisecond, false) // at once: not a gap
	time.Sleep(1100 * time.Millisecond)
	before := time.Now().UnixMilli()
	b.Media(90*time.Millisecond, false) // 1.1 s: a gap
	s := r.Summary("u", "rtmp", 2)
	if len(s.Gaps) != 1 {
		t.Fatalf("gaps %+v, want one", s.Gaps)
	}
	g := s.Gaps[0]
	if g.Client != 1 || g.MS < 1100 || g.ToMS < before || g.ToMS-g.FromMS > g.MS+1 {
		t.Fatalf("gap %+v: want client 1, >= 1100 ms, ending at or after %d", g, before)
	}
	off, _ := New("play", 3*time.Second, nil)
	c := off.NewClient()
	c.Media(0, true)
	time.Sleep(60 * time.Millisecond)
	c.Media(time.Millisecond, false)
	if s := off.Summary("u", "rtmp", 1); s.Gaps != nil {
		t.Fatalf("gaps recorded without RecordGaps: %+v", s.Gaps)
	}
}

// TestLatencySteady: stamps read before the steady part (the ramp and 2 s
// after it) count in latency_ms only; from then on in both.
func TestLatencySteady(t *testing.T) {
	r, err := New("play", 3*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := r.NewClient()
	c.Connected()
	c.Media(0, true)
	c.Media(2*time.Second, true)                       // live
	c.Stamped(time.Now().Add(-900 * time.Millisecond)) // during the ramp
	r.LaunchDone()
	c.Stamped(time.Now().Add(-800 * time.Millisecond)) // within 2 s of its end
	r.steadyFrom.Store(time.Now().UnixNano())          // as if 2 s had passed
	c.Stamped(time.Now().Add(-50 * time.Millisecond))
	c.Stamped(time.Now().Add(-60 * time.Millisecond))
	s := r.Summary("u", "rtmp", 1)
	if s.LatencyMS == nil || s.LatencyMS.N != 4 {
		t.Fatalf("latency_ms %+v, want all 4 stamps", s.LatencyMS)
	}
	if st := s.LatencySteadyMS; st == nil || st.N != 2 || st.Max > 100 {
		t.Fatalf("latency_steady_ms %+v, want the 2 steady stamps (50, 60 ms)", st)
	}
}
