// This file is written by hand, not by buf (scripts/gen.sh rewrites only
// the *.pb.go files next to it).

package ocmv1

// ErrorDomain is the domain of the google.rpc.ErrorInfo the OCM attaches to
// its errors. Its Reason says which of the cases a status code covers, so a
// client never parses a message: node/ocmclient maps (code, reason) to Go
// errors, in one place.
const ErrorDomain = "ocm.livecluster.io"

// ErrorInfo reasons, by status code.
const (
	// ReasonStreamOwned (ALREADY_EXISTS): the stream is owned; the metadata
	// names owner_node_id and epoch, and the Stream record is a detail too.
	ReasonStreamOwned = "STREAM_OWNED"
	// ReasonStreamNotFound (NOT_FOUND): nobody owns the stream.
	ReasonStreamNotFound = "STREAM_NOT_FOUND"
	// ReasonSessionNotFound (NOT_FOUND): the caller's node session is unknown
	// or its lease expired; Register again.
	ReasonSessionNotFound = "SESSION_NOT_FOUND"
	// ReasonNodeNotFound (NOT_FOUND): another node named in the request (a
	// transfer's target) has no session.
	ReasonNodeNotFound = "NODE_NOT_FOUND"
	// ReasonStaleEpoch (FAILED_PRECONDITION): the epoch named is not the
	// stream's current one.
	ReasonStaleEpoch = "STALE_EPOCH"
	// ReasonNodeDraining (FAILED_PRECONDITION): the node that would take the
	// stream (the claimer, a transfer's target) is DRAINING.
	ReasonNodeDraining = "NODE_DRAINING"
	// ReasonNoOrigin (FAILED_PRECONDITION): AssignOrigin found no origin that
	// qualifies.
	ReasonNoOrigin = "NO_ORIGIN"
	// ReasonNotPermitted (FAILED_PRECONDITION): the caller may not do this
	// (not an origin, not the owner, the owner is not DRAINING).
	ReasonNotPermitted = "NOT_PERMITTED"
	// ReasonConcurrentChange (ABORTED): the records changed while the OCM
	// was deciding; retrying the same call is safe.
	ReasonConcurrentChange = "CONCURRENT_CHANGE"
)
