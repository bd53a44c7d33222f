package stats

import (
	"time"

	"github.com/livecluster/livecluster/scripts/loadgen/internal/procstat"
)

// sampler follows the CPU and RSS of a set of processes.
type sampler struct {
	pids     []string
	prevCPU  map[string]time.Duration
	rssStart int64
	rssPeak  int64
	rssLast  int64
}

func newSampler(pids []string) (*sampler, error) {
	s := &sampler{pids: pids, prevCPU: map[string]time.Duration{}}
	for _, p := range pids {
		smp, err := procstat.Read(p)
		if err != nil {
			return nil, err
		}
		s.prevCPU[p] = smp.CPU
		s.rssStart += smp.RSS
	}
	s.rssPeak, s.rssLast = s.rssStart, s.rssStart
	return s, nil
}

// sample returns the CPU seconds used by all processes since the last call
// and updates the RSS figures. A process that cannot be read is skipped and
// reported as an error.
func (s *sampler) sample() (float64, error) {
	var cpu time.Duration
	var rss int64
	var firstErr error
	for _, p := range s.pids {
		smp, err := procstat.Read(p)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		cpu += smp.CPU - s.prevCPU[p]
		s.prevCPU[p] = smp.CPU
		rss += smp.RSS
	}
	if firstErr == nil {
		s.rssLast = rss
		if rss > s.rssPeak {
			s.rssPeak = rss
		}
	}
	return cpu.Seconds(), firstErr
}

// Summary is the JSON summary of a run.
type Summary struct {
	Mode          string  `json:"mode"` // play or publish
	URL           string  `json:"url"`
	Protocol      string  `json:"protocol"` // rtmp, httpflv, hls
	DurationS     float64 `json:"duration_s"`
	Requested     int     `json:"requested"`      // players (or publishers) asked for
	Launched      int64   `json:"launched"`       // started before the run ended
	Connected     int64   `json:"connected"`      // accepted by the server at least once
	MaxConcurrent int64   `json:"max_concurrent"` // most connected at one time
	ConnectedEnd  int64   `json:"connected_end"`  // connected when the run ended
	Bytes         int64   `json:"bytes"`          // received (play) or sent (publish)
	Mbps          float64 `json:"mbps"`           // Bytes over the whole run

	Errors      map[string]map[string]int64 `json:"errors"` // protocol → kind → count
	ErrorsTotal int64                       `json:"errors_total"`
	FirstErrors map[string]string           `json:"first_errors"` // "protocol/kind" → the first one's message

	LateMax     int     `json:"late_max"`     // most clients late in one second
	LateClients int64   `json:"late_clients"` // clients late at least once
	LateAfterS  float64 `json:"late_after_s"` // the threshold

	StartupMS *Percentiles `json:"startup_ms"` // connect → first keyframe (nil: none)
	LatencyMS *Percentiles `json:"latency_ms"` // embedded send time → arrival (nil: no stamps)
	// LatencySteadyMS is LatencyMS over the steady part of the run, the
	// window of the server figures (nil: no stamps then).
	LatencySteadyMS *Percentiles `json:"latency_steady_ms"`

	// Gaps are the media gaps of at least -gaps (nil when not asked for).
	Gaps []Gap `json:"gaps,omitempty"`

	Server  *ServerFigures `json:"server"`  // nil without -pids
	Loadgen LoadFigures    `json:"loadgen"` // this process
}

// ServerFigures are the sampled server processes' CPU and memory. The
// window is the steady part of the run (from 2 s after the last client
// started to the end) when it lasted at least a second, else the whole run.
type ServerFigures struct {
	PIDs              []string `json:"pids"`
	WindowS           float64  `json:"window_s"`
	Steady            bool     `json:"steady"`
	MeanConnected     float64  `json:"mean_connected"`
	CPUPerS           float64  `json:"cpu_s_per_s"`
	CPUPer100         float64  `json:"cpu_s_per_s_per_100"` // per 100 mean connected clients
	RSSStartBytes     int64    `json:"rss_start_bytes"`
	RSSPeakBytes      int64    `json:"rss_peak_bytes"`
	RSSPerClientBytes float64  `json:"rss_per_client_bytes"` // (peak − start) / max concurrent
}

// LoadFigures is the load generator's own CPU, to tell when it is the limit.
type LoadFigures struct {
	CPUPerS float64 `json:"cpu_s_per_s"`
	RSSPeak int64   `json:"rss_peak_bytes"`
}

// Summary builds the summary; call it after the last Tick.
func (r *Run) Summary(url, proto string, requested int) Summary {
	r.mu.Lock()
	errs := copyErrs(r.errs)
	first := make(map[string]string, len(r.firstErrs))
	for k, v := range r.firstErrs {
		first[k] = v
	}
	lateMax, lateClients := r.lateMax, r.lateClients
	var gaps []Gap
	if r.gapMin > 0 {
		gaps = append([]Gap{}, r.gaps...)
	}
	r.mu.Unlock()
	var total int64
	for _, m := range errs {
		for _, n := range m {
			total += n
		}
	}
	dur := r.lastTick.Sub(r.start).Seconds()
	s := Summary{
		Mode: r.mode, URL: url, Protocol: proto, DurationS: dur, Requested: requested,
		Launched: r.launched.Load(), Connected: r.everConnected.Load(), MaxConcurrent: r.maxConc.Load(),
		ConnectedEnd: r.connected.Load(), Bytes: r.Bytes.Load(),
		Errors: errs, ErrorsTotal: total, FirstErrors: first, LateMax: lateMax, LateClients: lateClients,
		LateAfterS: r.lateAfter.Seconds(),
		StartupMS:  r.Startup.Summary(), LatencyMS: r.Latency.Summary(), LatencySteadyMS: r.LatencySteady.Summary(), Gaps: gaps,
	}
	if dur > 0 {
		s.Mbps = float64(s.Bytes) * 8 / dur / 1e6
	}
	w, steady := r.steady, true
	if w.seconds < 1 {
		w, steady = r.whole, false
	}
	if w.seconds > 0 {
		s.Loadgen.CPUPerS = w.selfCPU / w.seconds
	}
	s.Loadgen.RSSPeak = r.self.rssPeak
	if len(r.srv.pids) > 0 {
		f := &ServerFigures{
			PIDs: r.srv.pids, WindowS: w.seconds, Steady: steady,
			RSSStartBytes: r.srv.rssStart, RSSPeakBytes: r.srv.rssPeak,
		}
		if w.seconds > 0 {
			f.CPUPerS = w.srvCPU / w.seconds
			f.MeanConnected = w.connSeconds / w.seconds
		}
		if f.MeanConnected > 0 {
			f.CPUPer100 = f.CPUPerS / f.MeanConnected * 100
		}
		if s.MaxConcurrent > 0 {
			f.RSSPerClientBytes = float64(f.RSSPeakBytes-f.RSSStartBytes) / float64(s.MaxConcurrent)
		}
		s.Server = f
	}
	return s
}
