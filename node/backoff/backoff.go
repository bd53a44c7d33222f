// Package backoff is the retry pacing every livecluster component uses
// against the OCM and upstream origins: capped exponential delays with
// equal jitter, and a context-aware sleep.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is a capped exponential backoff. The zero value is not useful;
// set both fields.
type Policy struct {
	Min time.Duration // delay of the first retry (before jitter)
	Max time.Duration // cap of the delay (before jitter)
}

// Delay returns the delay before retry number attempt (0 for the first):
// Min doubled per attempt up to Max, with equal jitter (half fixed, half
// random), so a fleet restarted together does not retry in lockstep while
// each node still waits at least half the nominal delay.
func (p Policy) Delay(attempt int) time.Duration {
	d := max(p.Min, time.Millisecond)
	for i := 0; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, max(p.Max, p.Min))
	return d/2 + rand.N(d/2+1)
}

// Sleep waits for d or until ctx ends; it reports whether the full d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
