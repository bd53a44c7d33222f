// Package placement picks the origin for a new publish.
package placement

import (
	"math/rand/v2"
	"slices"

	"google.golang.org/grpc/codes"

	"github.com/livecluster/livecluster/ocm/internal/cache"
	"github.com/livecluster/livecluster/ocm/internal/store"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// Scales turn each load dimension into a fraction of "full"; a node's score
// is the sum of its fractions (lower is better).
type Scales struct {
	// Streams that count as full when the node reports no capacity.
	Streams float64
	// Ingress bits per second that count as full.
	IngressBps float64
	// CPU cores that count as full.
	CPUCores float64
}

// DefaultScales: 1000 streams, 1 Gbit/s ingress, 4 cores.
var DefaultScales = Scales{Streams: 1000, IngressBps: 1e9, CPUCores: 4}

// Request is what the publish asks for.
type Request struct {
	// Zone preferred; empty for any. When no eligible origin is in the zone,
	// any zone is used.
	Zone string
	// Exclude names origins never to choose.
	Exclude []string
}

// Placer chooses among origins with the power of two random choices: two
// eligible origins are drawn at random and the less loaded wins, which
// spreads a burst of publishes instead of sending it all to the one origin
// whose load report is lowest.
type Placer struct {
	Scales Scales
	// IntN draws a random int in [0,n); default math/rand/v2.IntN.
	IntN func(n int) int
}

// Score is a node's load as a sum of fractions.
func (p *Placer) Score(nl cache.NodeLoad) float64 {
	sc := p.Scales
	if sc == (Scales{}) {
		sc = DefaultScales
	}
	n := nl.Node
	streams := float64(max(uint32(nl.Owned), n.GetLoad().GetStreams()))
	var s float64
	if n.GetCapacity() > 0 {
		s = streams / float64(n.GetCapacity())
	} else {
		s = streams / sc.Streams
	}
	s += float64(n.GetLoad().GetIngressBps()) / sc.IngressBps
	s += n.GetLoad().GetCpuCores() / sc.CPUCores
	return s
}

func eligible(nl cache.NodeLoad, exclude []string) bool {
	n := nl.Node
	if n.GetRole() != ocmv1.NodeRole_NODE_ROLE_ORIGIN || n.GetState() != ocmv1.NodeState_NODE_STATE_READY {
		return false
	}
	if slices.Contains(exclude, n.GetId()) {
		return false
	}
	if c := n.GetCapacity(); c > 0 && max(uint32(nl.Owned), n.GetLoad().GetStreams()) >= c {
		return false
	}
	return true
}

// Choose returns the origin for a new stream among the candidates, or a
// FailedPrecondition status when none is READY, not excluded and below
// capacity.
func (p *Placer) Choose(cands []cache.NodeLoad, req Request) (*ocmv1.Node, error) {
	var ok, inZone []cache.NodeLoad
	for _, c := range cands {
		if !eligible(c, req.Exclude) {
			continue
		}
		ok = append(ok, c)
		if req.Zone != "" && c.Node.GetZone() == req.Zone {
			inZone = append(inZone, c)
		}
	}
	if len(inZone) > 0 {
		ok = inZone
	}
	switch len(ok) {
	case 0:
		return nil, store.Reasoned(codes.FailedPrecondition, ocmv1.ReasonNoOrigin,
			"no origin available: none of %d origins is READY, below capacity and not excluded", countOrigins(cands))
	case 1:
		return ok[0].Node, nil
	}
	intN := p.IntN
	if intN == nil {
		intN = rand.IntN
	}
	i := intN(len(ok))
	j := intN(len(ok) - 1)
	if j >= i {
		j++
	}
	a, b := ok[i], ok[j]
	if p.Score(b) < p.Score(a) {
		return b.Node, nil
	}
	return a.Node, nil
}

// Assign decides where a publish of an owned stream goes. The owner keeps
// it when it is a READY origin not in req.Exclude (moved is false);
// otherwise the stream is placed among the other origins as a new one would
// be, and moved is true: the chosen origin has to take the stream over from
// the owner (TransferStream, make-before-break).
func (p *Placer) Assign(owner *ocmv1.Node, cands []cache.NodeLoad, req Request) (n *ocmv1.Node, moved bool, err error) {
	if owner.GetState() == ocmv1.NodeState_NODE_STATE_READY && !slices.Contains(req.Exclude, owner.GetId()) {
		return owner, false, nil
	}
	req.Exclude = append(slices.Clip(req.Exclude), owner.GetId())
	n, err = p.Choose(cands, req)
	if err != nil {
		return nil, false, err
	}
	return n, true, nil
}

func countOrigins(c []cache.NodeLoad) int {
	n := 0
	for _, x := range c {
		if x.Node.GetRole() == ocmv1.NodeRole_NODE_ROLE_ORIGIN {
			n++
		}
	}
	return n
}
