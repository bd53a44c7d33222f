package placement

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/ocm/internal/cache"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

func node(id, zone string, state ocmv1.NodeState, capacity uint32, owned int) cache.NodeLoad {
	return cache.NodeLoad{Node: &ocmv1.Node{Id: id, Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN, Zone: zone, State: state, Capacity: capacity, Load: &ocmv1.Load{}}, Owned: owned}
}

const ready, draining = ocmv1.NodeState_NODE_STATE_READY, ocmv1.NodeState_NODE_STATE_DRAINING

func TestChoose(t *testing.T) {
	p := &Placer{}
	cands := []cache.NodeLoad{
		node("busy", "z1", ready, 0, 900),
		node("idle", "z1", ready, 0, 1),
		node("drain", "z1", draining, 0, 0),
		node("full", "z2", ready, 10, 10),
		node("z2", "z2", ready, 100, 99),
	}
	for range 200 {
		n, err := p.Choose(cands, Request{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Id == "drain" || n.Id == "full" {
			t.Fatalf("chose %s", n.Id)
		}
	}
	// With two candidates, power of two always compares both: the busier never wins.
	counts := map[string]int{}
	for range 300 {
		n, _ := p.Choose(cands[:2], Request{})
		counts[n.Id]++
	}
	if counts["busy"] != 0 {
		t.Fatalf("with two candidates the busier won %d times", counts["busy"])
	}
	n, err := p.Choose(cands, Request{Zone: "z2"})
	if err != nil || n.Id != "z2" {
		t.Fatalf("zone affinity chose %v, %v", n, err)
	}
	n, err = p.Choose(cands, Request{Zone: "z9"})
	if err != nil || n.Zone != "z1" {
		t.Fatalf("unknown zone fallback chose %v, %v", n, err)
	}
	n, err = p.Choose(cands, Request{Exclude: []string{"idle", "z2"}})
	if err != nil || n.Id != "busy" {
		t.Fatalf("exclude chose %v, %v", n, err)
	}
	_, err = p.Choose(cands, Request{Exclude: []string{"idle", "z2", "busy"}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("no eligible origin: %v", err)
	}
	_, err = p.Choose(nil, Request{})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("no origin: %v", err)
	}
	// Reported load counts too: CPU and ingress.
	hot := node("hot", "", ready, 0, 0)
	hot.Node.Load = &ocmv1.Load{CpuCores: 3.5, IngressBps: 9e8}
	cool := node("cool", "", ready, 0, 10)
	for range 50 {
		if n, _ := p.Choose([]cache.NodeLoad{hot, cool}, Request{}); n.Id != "cool" {
			t.Fatal("placed on the hot node")
		}
	}
}

func TestAssignOwned(t *testing.T) {
	p := &Placer{}
	cands := []cache.NodeLoad{node("owner", "", ready, 0, 1), node("other", "", ready, 0, 50)}
	owner := cands[0].Node
	exclude := []string{"x"}
	n, moved, err := p.Assign(owner, cands, Request{Exclude: exclude})
	if err != nil || moved || n.Id != "owner" {
		t.Fatalf("READY owner: %v, moved %v, %v", n, moved, err)
	}
	n, moved, err = p.Assign(owner, cands, Request{Exclude: []string{"owner"}})
	if err != nil || !moved || n.Id != "other" {
		t.Fatalf("excluded owner: %v, moved %v, %v", n, moved, err)
	}
	drained := node("owner", "", draining, 0, 1)
	n, moved, err = p.Assign(drained.Node, []cache.NodeLoad{drained, cands[1]}, Request{Exclude: exclude})
	if err != nil || !moved || n.Id != "other" {
		t.Fatalf("DRAINING owner: %v, moved %v, %v", n, moved, err)
	}
	if len(exclude) != 1 {
		t.Fatalf("Assign changed the caller's exclude list: %v", exclude)
	}
	_, _, err = p.Assign(drained.Node, []cache.NodeLoad{drained}, Request{})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("no other origin: %v", err)
	}
}
