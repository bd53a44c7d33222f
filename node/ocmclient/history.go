package ocmclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// HistoryEnv names the environment variable that turns the history log on
// in the origin and the edge (HistoryFromEnv): the path of a JSONL file.
// It is meant for failure drills, which check the log with a
// linearizability checker (scripts/drills/lincheck); it is off by default
// and costs one small write per ownership call when on.
const HistoryEnv = "LIVECLUSTER_OCM_HISTORY"

// History operations (HistoryEvent.Op).
const (
	HistRegister    = "register"     // Lease: the new lease (Result ok), or none
	HistDeregister  = "deregister"   // Lease: the lease ended
	HistSessionLost = "session_lost" // a heartbeat or the session stream found Lease gone
	HistHeartbeat   = "heartbeat"    // a renewal that succeeded: Lease was alive
	HistClaim       = "claim"
	HistTransfer    = "transfer" // Epoch: the epoch presented; To: the target
	HistRelease     = "release"  // Epoch: the epoch presented
	HistLookup      = "lookup"   // served from a replica's cache: not linearizable
)

// History results (HistoryEvent.Result), one per way an OCM call can end.
const (
	HistOK          = "ok"
	HistOwned       = "owned" // ALREADY_EXISTS: OutOwner, OutEpoch
	HistStale       = "stale_epoch"
	HistNotFound    = "not_found"
	HistSessionGone = "session_lost"
	HistDraining    = "draining"
	HistRefused     = "refused"
	HistConflict    = "conflict" // ABORTED: the transaction did not apply
	HistInvalid     = "invalid"
	// HistUnknown: the call failed in a way that does not say whether it
	// took effect (unreachable, timed out, an internal error).
	HistUnknown = "unknown"
)

// HistoryEvent is one OCM call as a node made it: who, what, when it was
// called and when it returned (Unix nanoseconds, wall clock: the processes
// of a drill share one host clock), and how it ended.
type HistoryEvent struct {
	Node   string `json:"node"`
	Op     string `json:"op"`
	Lease  int64  `json:"lease,omitempty"`
	Key    string `json:"key,omitempty"`
	Epoch  int64  `json:"epoch,omitempty"`
	To     string `json:"to,omitempty"`
	Call   int64  `json:"call"`
	Return int64  `json:"return"`
	Result string `json:"result"`
	// OutOwner and OutEpoch: the ownership the answer names (a claim's or
	// transfer's new record, the owner of ALREADY_EXISTS, a lookup's).
	OutOwner string `json:"out_owner,omitempty"`
	OutEpoch int64  `json:"out_epoch,omitempty"`
	Err      string `json:"err,omitempty"`
}

// History appends HistoryEvents to a JSONL file, one line per call. It is
// safe for concurrent use (one History may serve many Clients); a nil
// *History records nothing. After a failed write the log stops and Err
// returns why (a drill then fails on it; serving is never affected).
type History struct {
	mu  sync.Mutex
	f   *os.File
	enc *json.Encoder
	err error
	now func() time.Time
}

// OpenHistory opens (appending, creating) the history log at path.
func OpenHistory(path string) (*History, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open OCM history log: %w", err)
	}
	return &History{f: f, enc: json.NewEncoder(f), now: time.Now}, nil
}

// HistoryFromEnv opens the history log named by HistoryEnv; nil (and no
// error) when the variable is unset or empty.
func HistoryFromEnv() (*History, error) {
	p := os.Getenv(HistoryEnv)
	if p == "" {
		return nil, nil
	}
	h, err := OpenHistory(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", HistoryEnv, err)
	}
	return h, nil
}

// Close closes the file; later events are dropped.
func (h *History) Close() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.f == nil {
		return nil
	}
	err := h.f.Close()
	h.f, h.enc = nil, nil
	return err
}

// Now returns the clock the history uses (wall clock, Unix ns).
func (h *History) Now() int64 {
	if h == nil {
		return 0
	}
	return h.now().UnixNano()
}

// Record appends ev. Each event is one write(2) of one line, so a file
// that several processes append to keeps whole lines.
func (h *History) Record(ev HistoryEvent) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.enc == nil || h.err != nil {
		return
	}
	if err := h.enc.Encode(ev); err != nil {
		h.err = fmt.Errorf("write OCM history log: %w", err)
	}
}

// Err returns the write error that stopped the log, if any.
func (h *History) Err() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// HistoryResult classifies the outcome of an OCM call for the history:
// the result and, for ALREADY_EXISTS, the owner and epoch it names.
func HistoryResult(err error) (result, owner string, epoch int64) {
	var owned *AlreadyOwnedError
	switch {
	case err == nil:
		return HistOK, "", 0
	case errors.As(err, &owned):
		return HistOwned, owned.Owner, owned.Epoch
	case errors.Is(err, ErrSessionLost):
		return HistSessionGone, "", 0
	case errors.Is(err, ErrStaleEpoch):
		return HistStale, "", 0
	case errors.Is(err, ErrNotFound):
		return HistNotFound, "", 0
	case errors.Is(err, ErrDraining):
		return HistDraining, "", 0
	case errors.Is(err, ErrRefused), errors.Is(err, ErrNoOrigin):
		return HistRefused, "", 0
	case errors.Is(err, ErrConflict):
		return HistConflict, "", 0
	case errors.Is(err, ErrInvalidArgument):
		return HistInvalid, "", 0
	default:
		return HistUnknown, "", 0
	}
}

// record appends one finished call to the client's history, if any.
func (c *Client) record(ev HistoryEvent, call int64, err error) {
	h := c.opts.History
	if h == nil {
		return
	}
	ev.Node, ev.Call, ev.Return = c.opts.Node.GetId(), call, h.Now()
	res, owner, epoch := HistoryResult(err)
	ev.Result = res
	if res == HistOwned {
		ev.OutOwner, ev.OutEpoch = owner, epoch
	}
	if err != nil {
		ev.Err = err.Error()
	}
	h.Record(ev)
}
