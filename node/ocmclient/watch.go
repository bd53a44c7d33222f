package ocmclient

import (
	"context"
	"time"

	"github.com/livecluster/livecluster/node/backoff"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

// Watch describes a WatchStreams subscription that Client.Watch keeps
// open. The callbacks run on Watch's goroutine, one at a time.
type Watch struct {
	// Keys to watch; empty watches every stream.
	Keys []streamkey.Key
	// InitialState asks for the current state first, then a SYNCED event.
	InitialState bool
	// Begin, if set, is called before each new stream's first event, so
	// that per-stream state (what the initial state has shown) starts
	// afresh.
	Begin func()
	// Event is called for every event, in order.
	Event func(ev *ocmv1.WatchStreamsResponse)
	// End, if set, is called when a stream ends while ctx is still live,
	// with the typed error and the delay before the next subscription;
	// failures counts the ends in a row without a healthy stream.
	End func(err error, retryIn time.Duration, failures int)
}

// Watch keeps w's subscription until ctx ends: when a stream fails (the
// OCM unreachable, a replica shutting down, a slow watcher dropped) it
// subscribes again after a capped exponential backoff. The backoff starts
// over after a healthy stream, one that delivered SYNCED (or any event,
// without InitialState) or stayed open for MaxBackoff, so a watch that
// breaks once a day does not wait the maximum delay. It returns when ctx
// ends.
func (c *Client) Watch(ctx context.Context, w Watch) {
	req := &ocmv1.WatchStreamsRequest{InitialState: w.InitialState}
	for _, k := range w.Keys {
		req.Keys = append(req.Keys, ocmv1.NewStreamKey(k))
	}
	retry := backoff.Policy{Min: c.opts.MinBackoff, Max: c.opts.MaxBackoff}
	failures := 0
	for ctx.Err() == nil {
		start := time.Now()
		healthy, err := c.watchOnce(ctx, req, w)
		if ctx.Err() != nil {
			return
		}
		if healthy || time.Since(start) >= c.opts.MaxBackoff {
			failures = 0
		}
		d := retry.Delay(failures)
		failures++
		if w.End != nil {
			w.End(err, d, failures)
		}
		if !c.sleep(ctx, d) {
			return
		}
	}
}

// watchOnce runs one stream until it fails; healthy tells whether it got
// as far as SYNCED (or any event without initial state).
func (c *Client) watchOnce(ctx context.Context, req *ocmv1.WatchStreamsRequest, w Watch) (healthy bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ws, err := c.api.WatchStreams(ctx, req)
	if err != nil {
		return false, mapErr("WatchStreams", err)
	}
	if w.Begin != nil {
		w.Begin()
	}
	for {
		ev, err := ws.Recv()
		if err != nil {
			return healthy, mapErr("WatchStreams", err)
		}
		if ev.GetType() == ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED || !req.InitialState {
			healthy = true
		}
		w.Event(ev)
	}
}
