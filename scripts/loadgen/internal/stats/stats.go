// Package stats keeps the load generator's counters: clients connected,
// bytes, errors by protocol and kind, late clients, start-up and
// end-to-end latency, and the CPU and memory of the server processes under
// test. It prints one line per second and builds the final summary.
package stats

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Run is the state of one load run. Clients report into it from their own
// goroutines; Tick and Summary are called by the run's owner.
type Run struct {
	mode      string
	lateAfter time.Duration
	start     time.Time

	Bytes   atomic.Int64 // received (players) or sent (publishers), wire bytes
	Startup Hist         // connect → first keyframe
	Latency Hist         // embedded send time → arrival
	// LatencySteady is Latency over the steady part only (from 2 s after
	// the last client started), the part the CPU figures cover: while
	// players join, the server also sends each one its GOP cache burst.
	LatencySteady Hist
	steadyFrom    atomic.Int64 // unix ns when the steady part starts; 0: not yet known
	launched      atomic.Int64

	connected, maxConc, everConnected atomic.Int64

	mu          sync.Mutex
	errs        map[string]map[string]int64
	firstErrs   map[string]string // "proto/kind" → the first error's text
	clients     map[*Client]struct{}
	lateMax     int
	lateClients int64
	launchEnd   time.Time // when the last client was started; zero before
	nextID      int
	gapMin      time.Duration // record media gaps at least this long; 0: none
	gaps        []Gap

	// tick state, owned by the caller of Tick
	lastTick  time.Time
	lastBytes int64
	srv       *sampler
	self      *sampler
	steady    window
	whole     window
}

// window accumulates figures over part of the run.
type window struct {
	seconds, srvCPU, selfCPU, connSeconds float64
}

// New starts the clock of a run. mode is "play" or "publish"; a client is
// late when its media is more than lateAfter behind the wall clock. pids
// are the server processes to sample (may be empty). It fails when a pid
// cannot be read.
func New(mode string, lateAfter time.Duration, pids []string) (*Run, error) {
	r := &Run{
		mode: mode, lateAfter: lateAfter, start: time.Now(),
		errs: map[string]map[string]int64{}, firstErrs: map[string]string{}, clients: map[*Client]struct{}{},
	}
	r.lastTick = r.start
	var err error
	if r.srv, err = newSampler(pids); err != nil {
		return nil, err
	}
	if r.self, err = newSampler([]string{"self"}); err != nil {
		return nil, err
	}
	return r, nil
}

// maxGaps bounds the gaps kept for the summary.
const maxGaps = 10000

// Gap is a pause in one client's media: no media arrived from From to To
// (wall clock, unix milliseconds), both ends media arrivals.
type Gap struct {
	Client int   `json:"client"` // the client's index, in start order from 0
	FromMS int64 `json:"from_unix_ms"`
	ToMS   int64 `json:"to_unix_ms"`
	MS     int64 `json:"ms"`
}

// RecordGaps makes the run keep every media gap of at least min (wall
// time between two media arrivals of one client; the first maxGaps of
// them) for the summary. Call it before clients start.
func (r *Run) RecordGaps(min time.Duration) {
	r.mu.Lock()
	r.gapMin = min
	r.mu.Unlock()
}

// Launched counts a client started; LaunchDone marks that all were.
func (r *Run) Launched() { r.launched.Add(1) }

// LaunchDone records that the ramp finished (starts the steady window).
func (r *Run) LaunchDone() {
	r.mu.Lock()
	r.launchEnd = time.Now()
	r.steadyFrom.Store(r.launchEnd.Add(steadyAfter).UnixNano())
	r.mu.Unlock()
}

// steadyAfter is how long after the last client started the steady part
// of a run begins.
const steadyAfter = 2 * time.Second

// Error counts one error of kind for protocol proto; err (may be nil)
// is kept as an example when it is the first of its kind.
func (r *Run) Error(proto, kind string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k := proto + "/" + kind; err != nil && r.firstErrs[k] == "" {
		r.firstErrs[k] = err.Error()
	}
	m := r.errs[proto]
	if m == nil {
		m = map[string]int64{}
		r.errs[proto] = m
	}
	m[kind]++
}

// Client is one player or publisher. Its methods are called from the
// client's goroutine; Tick reads its clock concurrently.
type Client struct {
	run       *Run
	connected bool
	connWall  atomic.Int64 // unix ns when connected, 0 before
	firstWall atomic.Int64 // unix ns of the first media, 0 before
	firstTS   atomic.Int64 // media ms of the first media
	lastTS    atomic.Int64 // media ms of the latest media
	late      atomic.Bool  // was late at some tick
	keyframes int
	began     time.Time
	id        int
	gapMin    time.Duration
	lastAt    time.Time // wall time of the latest media arrival
}

// NewClient registers a client whose connection attempt begins now.
func (r *Run) NewClient() *Client {
	c := &Client{run: r, began: time.Now()}
	r.mu.Lock()
	r.clients[c] = struct{}{}
	c.id, c.gapMin = r.nextID, r.gapMin
	r.nextID++
	r.mu.Unlock()
	return c
}

// Connected records that the server accepted the client.
func (c *Client) Connected() {
	if c.connected {
		return
	}
	c.connected = true
	c.connWall.Store(time.Now().UnixNano())
	n := c.run.connected.Add(1)
	c.run.everConnected.Add(1)
	for {
		m := c.run.maxConc.Load()
		if n <= m || c.run.maxConc.CompareAndSwap(m, n) {
			break
		}
	}
}

// Media records media with timestamp ts (the end of what the client has,
// for players; what was sent, for publishers); key marks a keyframe, whose
// first arrival sets the start-up latency.
func (c *Client) Media(ts time.Duration, key bool) {
	ms := ts.Milliseconds()
	if c.gapMin > 0 {
		now := time.Now()
		if !c.lastAt.IsZero() && now.Sub(c.lastAt) >= c.gapMin {
			c.run.gap(Gap{Client: c.id, FromMS: c.lastAt.UnixMilli(), ToMS: now.UnixMilli(), MS: now.Sub(c.lastAt).Milliseconds()})
		}
		c.lastAt = now
	}
	if c.firstWall.Load() == 0 {
		c.firstTS.Store(ms)
		c.lastTS.Store(ms)
		c.firstWall.Store(time.Now().UnixNano())
	} else {
		c.lastTS.Store(ms)
	}
	if key {
		c.keyframes++
		switch c.keyframes {
		case 1:
			c.run.Startup.Add(time.Since(c.began))
		case 2:
			// Live from here (see Live): measure lateness from this frame,
			// or the burst of the server's cached GOP, delivered faster than
			// real time, would hide up to a GOP of stall.
			c.firstTS.Store(ms)
			c.firstWall.Store(time.Now().UnixNano())
		}
	}
}

func (r *Run) gap(g Gap) {
	r.mu.Lock()
	if len(r.gaps) < maxGaps {
		r.gaps = append(r.gaps, g)
	}
	r.mu.Unlock()
}

// Live reports whether the client's media is live: from its second
// keyframe on. Before it, a player may be receiving the server's cached
// GOP, whose frames were sent up to a GOP earlier.
func (c *Client) Live() bool { return c.keyframes >= 2 }

// Stamped records the end-to-end latency of a frame sent at sent, once the
// client is live.
func (c *Client) Stamped(sent time.Time) {
	if !c.Live() {
		return
	}
	now := time.Now()
	c.run.Latency.Add(now.Sub(sent))
	if from := c.run.steadyFrom.Load(); from != 0 && now.UnixNano() >= from {
		c.run.LatencySteady.Add(now.Sub(sent))
	}
}

// Done unregisters the client. A non-nil err is counted as an error of
// kind for proto.
func (c *Client) Done(proto, kind string, err error) {
	r := c.run
	if c.connected {
		r.connected.Add(-1)
	}
	r.mu.Lock()
	delete(r.clients, c)
	r.mu.Unlock()
	if err != nil {
		r.Error(proto, kind, err)
	}
}

// lag returns how far the client's media is behind the wall clock: wall
// time since its first media (its second keyframe, once it has one) minus
// media time since then; before any media, the time since it connected.
func (c *Client) lag(now time.Time) (time.Duration, bool) {
	fw := c.firstWall.Load()
	if fw == 0 {
		cw := c.connWall.Load()
		if cw == 0 {
			return 0, false
		}
		return now.Sub(time.Unix(0, cw)), true
	}
	wall := now.Sub(time.Unix(0, fw))
	media := time.Duration(c.lastTS.Load()-c.firstTS.Load()) * time.Millisecond
	return wall - media, true
}

// Line is one second's report.
type Line struct {
	Elapsed   time.Duration
	Connected int64
	Mbps      float64
	Late      int
	Errors    map[string]map[string]int64
	ServerCPU float64 // CPU seconds per second of the sampled processes
}

func (l Line) String() string {
	var errs []string
	for p, m := range l.Errors {
		for k, n := range m {
			errs = append(errs, fmt.Sprintf("%s/%s:%d", p, k, n))
		}
	}
	sort.Strings(errs)
	e := "0"
	if len(errs) > 0 {
		e = strings.Join(errs, ",")
	}
	return fmt.Sprintf("t=%ds connected=%d Mbps=%.2f late=%d errors=%s server_cpu=%.3f",
		int(l.Elapsed.Round(time.Second).Seconds()), l.Connected, l.Mbps, l.Late, e, l.ServerCPU)
}

// Tick samples the run (call it about once a second) and returns the line.
// Sampling errors (a server process exited) are reported in the line's
// errors under "server".
func (r *Run) Tick(now time.Time) Line {
	dt := now.Sub(r.lastTick).Seconds()
	r.lastTick = now
	bytes := r.Bytes.Load()
	l := Line{Elapsed: now.Sub(r.start), Connected: r.connected.Load()}
	if dt > 0 {
		l.Mbps = float64(bytes-r.lastBytes) * 8 / dt / 1e6
	}
	r.lastBytes = bytes
	srvCPU, srvErr := r.srv.sample()
	selfCPU, _ := r.self.sample()
	if srvErr != nil {
		r.Error("server", "sample", srvErr)
	}
	if dt > 0 {
		l.ServerCPU = srvCPU / dt
	}

	r.mu.Lock()
	for c := range r.clients {
		if lag, ok := c.lag(now); ok && lag > r.lateAfter {
			l.Late++
			if !c.late.Swap(true) {
				r.lateClients++
			}
		}
	}
	if l.Late > r.lateMax {
		r.lateMax = l.Late
	}
	l.Errors = copyErrs(r.errs)
	steady := !r.launchEnd.IsZero() && now.Sub(r.launchEnd) >= steadyAfter
	r.mu.Unlock()

	w := window{seconds: dt, srvCPU: srvCPU, selfCPU: selfCPU, connSeconds: float64(l.Connected) * dt}
	r.whole.add(w)
	if steady {
		r.steady.add(w)
	}
	return l
}

func (w *window) add(o window) {
	w.seconds += o.seconds
	w.srvCPU += o.srvCPU
	w.selfCPU += o.selfCPU
	w.connSeconds += o.connSeconds
}

func copyErrs(m map[string]map[string]int64) map[string]map[string]int64 {
	out := make(map[string]map[string]int64, len(m))
	for p, km := range m {
		c := make(map[string]int64, len(km))
		for k, n := range km {
			c[k] = n
		}
		out[p] = c
	}
	return out
}

// Report prints a line every second to w until stop is closed, then one
// last line; it returns when done.
func (r *Run) Report(w io.Writer, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			fmt.Fprintln(w, r.Tick(now))
		case <-stop:
			fmt.Fprintln(w, r.Tick(time.Now()))
			return
		}
	}
}
