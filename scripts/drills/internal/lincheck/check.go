package lincheck

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/livecluster/livecluster/node/ocmclient"
)

// Read parses a JSONL history (one ocmclient.HistoryEvent a line).
func Read(r io.Reader) ([]ocmclient.HistoryEvent, error) {
	var out []ocmclient.HistoryEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var ev ocmclient.HistoryEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("history line %d: %w", line, err)
		}
		out = append(out, ev)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	return out, nil
}

// ReadFiles reads and concatenates the histories of several nodes.
func ReadFiles(paths ...string) ([]ocmclient.HistoryEvent, error) {
	var all []ocmclient.HistoryEvent
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		evs, err := Read(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		all = append(all, evs...)
	}
	return all, nil
}

type lease struct {
	node       string
	start, end int64
	alive      int64 // the latest call that proves the lease was alive
}

// provesAlive reports whether ev's answer shows that its lease was alive
// while it ran: the OCM checked the session (in the same transaction) and
// found it.
func provesAlive(ev ocmclient.HistoryEvent) bool {
	switch ev.Op {
	case ocmclient.HistHeartbeat:
		return true
	case ocmclient.HistClaim:
		return ev.Result == ocmclient.HistOK || ev.Result == ocmclient.HistOwned || ev.Result == ocmclient.HistDraining
	case ocmclient.HistRelease:
		switch ev.Result {
		case ocmclient.HistOK, ocmclient.HistNotFound, ocmclient.HistStale, ocmclient.HistRefused:
			return true
		}
	case ocmclient.HistTransfer:
		return ev.Result == ocmclient.HistOK
	}
	return false
}

// Build turns events into porcupine operations, one partition per stream
// key (see the package doc for the synthetic lease ends). Lookups and
// failed registrations are left out. It also returns how many calls were
// taken (claims, releases, transfers).
func Build(evs []ocmclient.HistoryEvent) (parts [][]porcupine.Operation, calls int) {
	var last int64
	for _, ev := range evs {
		last = max(last, ev.Return, ev.Call)
	}
	inf := last + int64(time.Second) // after everything: "never seen to end"
	if last == 0 {
		inf = math.MaxInt64 / 2
	}

	// Leases, their start (Register's call) and the first sign of their end.
	leases := map[int64]*lease{}
	get := func(l int64, node string) *lease {
		ls := leases[l]
		if ls == nil {
			ls = &lease{node: node, start: 0, end: inf}
			leases[l] = ls
		}
		return ls
	}
	regs := map[string][]ocmclient.HistoryEvent{} // successful registrations by node
	for _, ev := range evs {
		if ev.Op == ocmclient.HistRegister && ev.Result == ocmclient.HistOK && ev.Lease != 0 {
			get(ev.Lease, ev.Node).start = ev.Call
			regs[ev.Node] = append(regs[ev.Node], ev)
		}
	}
	for _, ev := range evs {
		if ev.Lease == 0 || ev.Op == ocmclient.HistLookup {
			continue
		}
		ls := get(ev.Lease, ev.Node)
		if provesAlive(ev) {
			// The lease was alive at some instant of this call, so it
			// ended after the call began (whatever key the call was about:
			// this ties the per-key partitions together).
			ls.alive = max(ls.alive, ev.Call)
		}
		switch {
		case ev.Op == ocmclient.HistSessionLost,
			ev.Result == ocmclient.HistSessionGone,
			ev.Op == ocmclient.HistDeregister && ev.Result == ocmclient.HistOK:
			ls.end = min(ls.end, ev.Return)
		}
	}
	for _, rs := range regs {
		// A Register revokes the node's previous lease before it returns.
		sort.Slice(rs, func(i, j int) bool { return rs[i].Call < rs[j].Call })
		for i, r := range rs {
			for _, next := range rs[i+1:] {
				if next.Call > r.Return {
					ls := leases[r.Lease]
					ls.end = min(ls.end, next.Return)
					break
				}
			}
		}
	}

	byKey := map[string][]porcupine.Operation{}
	nodesOf := map[string]map[string]bool{}
	clients := map[string]int{}
	client := func(n string) int {
		if id, ok := clients[n]; ok {
			return id
		}
		clients[n] = len(clients)
		return clients[n]
	}
	for _, ev := range evs {
		switch ev.Op {
		case ocmclient.HistClaim, ocmclient.HistRelease, ocmclient.HistTransfer:
		default:
			continue
		}
		calls++
		ret := ev.Return
		if ev.Result == ocmclient.HistUnknown {
			ret = inf // it may still apply later
		}
		op := porcupine.Operation{
			ClientId: client(ev.Node),
			Input:    Input{Op: ev.Op, Key: ev.Key, Node: ev.Node, Lease: ev.Lease, Epoch: ev.Epoch, To: ev.To},
			Call:     ev.Call,
			Output:   Output{Result: ev.Result, Owner: ev.OutOwner, Epoch: ev.OutEpoch},
			Return:   ret,
		}
		byKey[ev.Key] = append(byKey[ev.Key], op)
		if nodesOf[ev.Key] == nil {
			nodesOf[ev.Key] = map[string]bool{}
		}
		nodesOf[ev.Key][ev.Node] = true
		if ev.To != "" {
			nodesOf[ev.Key][ev.To] = true
		}
		if ev.OutOwner != "" {
			nodesOf[ev.Key][ev.OutOwner] = true
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ops := byKey[k]
		for l, ls := range leases {
			if nodesOf[k][ls.node] {
				ops = append(ops, porcupine.Operation{
					ClientId: client(ls.node),
					Input:    Input{Op: opEnd, Key: k, Node: ls.node, Lease: l},
					// A call proving the lease alive after its loss was seen
					// contradicts the loss: keep the end where it was seen,
					// so that call fails the check.
					Call: min(max(ls.start, ls.alive), ls.end), Output: Output{}, Return: max(ls.end, ls.start),
				})
			}
		}
		parts = append(parts, ops)
	}
	return parts, calls
}

// Result is the verdict on a history.
type Result struct {
	Calls   int    `json:"calls"`
	Keys    int    `json:"keys"`
	Verdict string `json:"verdict"` // porcupine's: Ok, Illegal, Unknown (timed out)
	// BadKeys are the keys whose history is not linearizable.
	BadKeys []string `json:"bad_keys,omitempty"`
	// HTML is the visualization written for a failure ("" when none).
	HTML string `json:"html,omitempty"`
}

// Check checks evs, each key within timeout. On a verdict other than Ok
// and with htmlPath set, it writes porcupine's visualization of the
// failing keys there.
func Check(evs []ocmclient.HistoryEvent, timeout time.Duration, htmlPath string) (Result, error) {
	parts, calls := Build(evs)
	res := Result{Calls: calls, Keys: len(parts), Verdict: string(porcupine.Ok)}
	m := Model()
	var bad []porcupine.Operation
	for _, ops := range parts {
		v, _ := porcupine.CheckOperationsVerbose(m, ops, timeout)
		if v == porcupine.Ok {
			continue
		}
		if res.Verdict == string(porcupine.Ok) || v == porcupine.Illegal {
			res.Verdict = string(v)
		}
		res.BadKeys = append(res.BadKeys, ops[0].Input.(Input).Key)
		bad = append(bad, ops...)
	}
	if len(bad) == 0 || htmlPath == "" {
		return res, nil
	}
	// One visualization of the failing keys, partitioned per key.
	vm := m
	vm.Partition = func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range h {
			k := op.Input.(Input).Key
			if by[k] == nil {
				order = append(order, k)
			}
			by[k] = append(by[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, k := range order {
			out = append(out, by[k])
		}
		return out
	}
	_, info := porcupine.CheckOperationsVerbose(vm, bad, timeout)
	if err := porcupine.VisualizePath(vm, info, htmlPath); err != nil {
		return res, fmt.Errorf("write linearizability visualization: %w", err)
	}
	res.HTML = htmlPath
	return res, nil
}
