package ocmclient

import (
	"context"
	"errors"
	"time"

	"github.com/livecluster/livecluster/node/backoff"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// maxSessionRetry caps the delay between attempts to reopen the session
// stream: the OCM revokes the lease once the stream stays broken longer than
// its session grace (1.5s by default), so the client must keep trying well
// inside it.
const maxSessionRetry = 300 * time.Millisecond

// keepSession holds the session's KeepSession stream open until ctx ends,
// reopening it at once when it breaks (a replica going away, a proxy cutting
// it) and then with a short backoff. It closes lost when the OCM says the
// session is gone. An OCM without KeepSession (an older version) is left
// alone: the lease TTL then is the only crash detection.
func (c *Client) keepSession(ctx context.Context, s Session, lost chan<- struct{}) {
	req := &ocmv1.KeepSessionRequest{NodeId: s.NodeID, LeaseId: s.LeaseID}
	for attempt := 0; ; attempt++ {
		healthy := false
		call := c.opts.History.Now()
		stream, err := c.api.KeepSession(ctx, req)
		for err == nil {
			if _, err = stream.Recv(); err == nil && !healthy {
				healthy = true
				attempt = 0
				c.streamUp.Set(1)
			}
		}
		if healthy {
			c.streamUp.Set(0)
			c.streamBreaks.Inc()
		}
		if ctx.Err() != nil {
			return
		}
		err = mapSessionErr("KeepSession "+s.NodeID, err)
		switch {
		case errors.Is(err, ErrSessionLost):
			c.record(HistoryEvent{Op: HistSessionLost, Lease: s.LeaseID}, call, nil)
			close(lost)
			return
		case errors.Is(err, ErrUnsupported):
			c.log.Warn("the OCM has no session stream; crashes are detected by the lease TTL only", "err", err.Error())
			return
		}
		if healthy {
			c.log.Info("session stream to the OCM broke; reopening", "err", err.Error())
			continue // at once: the grace is short
		}
		d := backoff.Policy{Min: c.opts.MinBackoff, Max: min(c.opts.MaxBackoff, maxSessionRetry)}.Delay(attempt)
		if attempt%10 == 0 {
			c.log.Warn("opening the session stream to the OCM failed; retrying", "err", err.Error(), "attempt", attempt+1, "retry_in", d.String())
		}
		if !c.sleep(ctx, d) {
			return
		}
	}
}
