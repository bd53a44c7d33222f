package stats

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Hist is a lock-free log-linear histogram of durations at microsecond
// resolution: exact below 64 µs, then 32 buckets per power of two (about 3%
// error). Safe for concurrent Add.
type Hist struct {
	b   [64 + 40*32]atomic.Int64
	n   atomic.Int64
	max atomic.Int64
}

func bucket(us uint64) int {
	if us < 64 {
		return int(us)
	}
	e := bits.Len64(us) - 6 // us>>e is in [32, 63]
	i := 64 + (e-1)*32 + int(us>>e) - 32
	if i >= 64+40*32 {
		i = 64 + 40*32 - 1
	}
	return i
}

// value returns the middle of bucket i, in µs.
func value(i int) int64 {
	if i < 64 {
		return int64(i)
	}
	e := (i-64)/32 + 1
	m := int64((i-64)%32 + 32)
	return m<<e + (int64(1)<<e)/2
}

// Add records d (negative counts as 0).
func (h *Hist) Add(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h.b[bucket(uint64(us))].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			break
		}
	}
}

// Count returns the number of values recorded.
func (h *Hist) Count() int64 { return h.n.Load() }

// Quantile returns the q-quantile (0 < q ≤ 1), 0 when empty.
func (h *Hist) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := int64(q*float64(n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen int64
	for i := range h.b {
		seen += h.b[i].Load()
		if seen >= rank {
			v := value(i)
			if m := h.max.Load(); v > m {
				v = m
			}
			return time.Duration(v) * time.Microsecond
		}
	}
	return time.Duration(h.max.Load()) * time.Microsecond
}

// Percentiles are a histogram's percentiles in milliseconds.
type Percentiles struct {
	N   int64   `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Summary returns the percentiles, or nil when nothing was recorded.
func (h *Hist) Summary() *Percentiles {
	if h.Count() == 0 {
		return nil
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return &Percentiles{
		N: h.Count(), P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)),
		Max: float64(h.max.Load()) / 1000,
	}
}
