// Package lincheck checks the OCM ownership calls the nodes made during a
// drill (the JSONL history of node/ocmclient, see ocmclient.HistoryEnv) for
// linearizability with porcupine (github.com/anishathalye/porcupine), as
// etcd's own robustness tests do.
//
// The model is one register per stream key, following docs/ocm.md: the
// owner node, the owner's lease and the epoch (the key's etcd ModRevision,
// so it only grows), plus the set of leases known to have ended. Claim,
// release and transfer have the OCM's semantics, including the order in
// which their transactions report a failure (session first, then the
// stream). A lease can end without any call (TTL expiry, the session
// grace's revocation, a re-Register of the same node), so the history
// gets one synthetic "end" operation per lease, spanning from its Register
// to the first sign that it was gone (a session_lost answer, the node's
// next Register, its Deregister), or to the end of the history when the
// node never found out (it was killed). An ended lease frees the streams
// it holds. A call that failed without saying whether it applied (an
// unreachable OCM, a timeout) may have applied at any time after it
// started: it is kept open to the end of the history and the model tries
// both outcomes (porcupine's NondeterministicModel).
//
// Lookups are not checked: the OCM serves them from each replica's watch
// cache, which may lag (by design: lookups go on from the caches while
// etcd is down), so they are not linearizable and were never meant to be.
package lincheck

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/anishathalye/porcupine"

	"github.com/livecluster/livecluster/node/ocmclient"
)

// opEnd is the synthetic end of a lease.
const opEnd = "end"

// Input is what an operation asked.
type Input struct {
	Op    string // ocmclient.HistClaim, HistRelease, HistTransfer or "end"
	Key   string
	Node  string
	Lease int64
	Epoch int64  // release, transfer: the epoch presented
	To    string // transfer: the target
}

// Output is how it ended: an ocmclient.Hist* result and the ownership the
// answer named (claim/transfer ok: the new owner and epoch; owned: the
// current ones).
type Output struct {
	Result string
	Owner  string
	Epoch  int64
}

// State is one stream's ownership. Epoch 0: not owned; -1: owned with an
// epoch nobody saw yet (a claim whose answer was lost), known only to be
// above Floor. Lease 0 with an Owner: the stream was transferred to Owner's
// lease of the time, which the transfer's caller does not know. Dead lists
// the ended leases, sorted, comma-separated (a string keeps State
// comparable with ==).
type State struct {
	Owner string
	Lease int64
	Epoch int64
	Floor int64
	Dead  string
}

func (s State) dead(l int64) bool {
	for f := range strings.SplitSeq(s.Dead, ",") {
		if f == strconv.FormatInt(l, 10) {
			return true
		}
	}
	return false
}

func (s State) withDead(l int64) State {
	var ls []int64
	for f := range strings.SplitSeq(s.Dead, ",") {
		if v, err := strconv.ParseInt(f, 10, 64); err == nil {
			ls = append(ls, v)
		}
	}
	ls = append(ls, l)
	slices.Sort(ls)
	parts := make([]string, len(ls))
	for i, v := range ls {
		parts[i] = strconv.FormatInt(v, 10)
	}
	s.Dead = strings.Join(parts, ",")
	return s
}

func (s State) owned() bool { return s.Epoch != 0 }

// epochIs reports whether e can be the current epoch.
func (s State) epochIs(e int64) bool { return s.Epoch == e || (s.Epoch == -1 && e > s.Floor) }

// heldBy reports whether the lease l of node n may hold the stream.
func (s State) heldBy(n string, l int64) bool {
	return s.owned() && s.Owner == n && (s.Lease == l || s.Lease == 0)
}

func (s State) free() State {
	s.Owner, s.Lease, s.Epoch = "", 0, 0
	return s
}

func (s State) fix(e int64) State {
	s.Epoch = e
	s.Floor = max(s.Floor, e)
	return s
}

// step returns every state the operation can lead to from s with the
// output observed; none when it cannot happen.
func step(s State, in Input, out Output) []State {
	alive := !s.dead(in.Lease)
	same := []State{s}
	switch in.Op {
	case opEnd:
		if !alive {
			return nil
		}
		n := s.withDead(in.Lease)
		if s.owned() && s.Owner == in.Node && (s.Lease == in.Lease || s.Lease == 0) {
			if s.Lease == 0 {
				// A transferred stream sits on some lease of its owner: this
				// one, or a later one.
				return []State{n, n.free()}
			}
			n = n.free()
		}
		return []State{n}
	case ocmclient.HistClaim:
		applied := func() (State, bool) {
			if s.owned() || !alive {
				return State{}, false
			}
			n := s
			n.Owner, n.Lease, n.Epoch = in.Node, in.Lease, -1
			return n, true
		}
		switch out.Result {
		case ocmclient.HistOK:
			if n, ok := applied(); ok && out.Epoch > s.Floor {
				return []State{n.fix(out.Epoch)}
			}
			return nil
		case ocmclient.HistOwned:
			if alive && s.owned() && s.Owner == out.Owner && s.epochIs(out.Epoch) {
				return []State{s.fix(out.Epoch)}
			}
			return nil
		case ocmclient.HistSessionGone:
			if !alive {
				return same
			}
			return nil
		case ocmclient.HistDraining:
			if alive && !s.owned() {
				return same
			}
			return nil
		case ocmclient.HistUnknown:
			if n, ok := applied(); ok {
				return []State{s, n}
			}
			return same
		default: // conflict, refused, invalid: the transaction did not apply
			return same
		}
	case ocmclient.HistRelease:
		canApply := alive && s.heldBy(in.Node, in.Lease) && s.epochIs(in.Epoch)
		switch out.Result {
		case ocmclient.HistOK:
			if canApply {
				return []State{s.fix(in.Epoch).free()}
			}
			return nil
		case ocmclient.HistSessionGone:
			if !alive {
				return same
			}
			return nil
		case ocmclient.HistNotFound:
			if alive && !s.owned() {
				return same
			}
			return nil
		case ocmclient.HistStale:
			if alive && s.owned() && (s.Epoch == -1 || s.Epoch != in.Epoch) {
				return same
			}
			return nil
		case ocmclient.HistRefused:
			if alive && s.owned() && s.epochIs(in.Epoch) && !(s.Owner == in.Node && s.Lease == in.Lease) {
				return []State{s.fix(in.Epoch)}
			}
			return nil
		case ocmclient.HistUnknown:
			if canApply {
				return []State{s, s.fix(in.Epoch).free()}
			}
			return same
		default:
			return same
		}
	case ocmclient.HistTransfer:
		canApply := alive && s.owned() && s.epochIs(in.Epoch) &&
			(s.heldBy(in.Node, in.Lease) || in.Node == in.To)
		moved := func(e int64) State {
			n := s.fix(in.Epoch)
			n.Owner, n.Lease, n.Epoch = in.To, 0, e
			if e > 0 {
				n.Floor = max(n.Floor, e)
			}
			return n
		}
		switch out.Result {
		case ocmclient.HistOK:
			if canApply && out.Epoch > max(s.Floor, in.Epoch) {
				return []State{moved(out.Epoch)}
			}
			return nil
		case ocmclient.HistStale:
			if s.owned() && (s.Epoch == -1 || s.Epoch != in.Epoch) {
				return same
			}
			return nil
		case ocmclient.HistSessionGone:
			if !alive {
				return same
			}
			return nil
		case ocmclient.HistUnknown:
			if canApply {
				return []State{s, moved(-1)}
			}
			return same
		default: // not_found (stream or target), draining, refused, conflict
			return same
		}
	}
	return nil
}

// Model is the porcupine model of the OCM's ownership records. Histories
// are partitioned per stream key beforehand (Build), so it sees one key.
func Model() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{State{}} },
		Step: func(st, in, out any) []any {
			var r []any
			for _, n := range step(st.(State), in.(Input), out.(Output)) {
				r = append(r, n)
			}
			return r
		},
		DescribeOperation: func(in, out any) string {
			i, o := in.(Input), out.(Output)
			switch i.Op {
			case opEnd:
				return fmt.Sprintf("end lease %x of %s", i.Lease, i.Node)
			case ocmclient.HistClaim:
				return fmt.Sprintf("%s claim (lease %x) → %s %s@%d", i.Node, i.Lease, o.Result, o.Owner, o.Epoch)
			case ocmclient.HistRelease:
				return fmt.Sprintf("%s release @%d (lease %x) → %s", i.Node, i.Epoch, i.Lease, o.Result)
			default:
				return fmt.Sprintf("%s transfer @%d to %s (lease %x) → %s %s@%d", i.Node, i.Epoch, i.To, i.Lease, o.Result, o.Owner, o.Epoch)
			}
		},
		DescribeState: func(st any) string {
			s := st.(State)
			own := "free"
			if s.owned() {
				own = fmt.Sprintf("%s (lease %x) @%d", s.Owner, s.Lease, s.Epoch)
			}
			return fmt.Sprintf("%s; floor %d; dead [%s]", own, s.Floor, s.Dead)
		},
	}
	return nm.ToModel()
}
