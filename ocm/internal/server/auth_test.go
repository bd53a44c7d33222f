package server

import (
	"testing"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// TestEveryRPCHasARule: a call added to OCMService without a rule would be
// refused to every node once auth is on (only admins pass); this makes the
// omission fail here instead of in a cluster.
func TestEveryRPCHasARule(t *testing.T) {
	desc := ocmv1.OCMService_ServiceDesc
	var names []string
	for _, m := range desc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range desc.Streams {
		names = append(names, s.StreamName)
	}
	if len(names) < 13 {
		t.Fatalf("only %d methods in the descriptor: %v", len(names), names)
	}
	for _, n := range names {
		_, write := rules[n]
		if write == reads[n] {
			t.Errorf("%s: must be in exactly one of rules (acts for a node) and reads", n)
		}
	}
}
