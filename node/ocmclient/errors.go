package ocmclient

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// Errors of the OCM, as Go values. Every call of the Client returns nil or
// an error that errors.Is one of these (an *Error, or an *AlreadyOwnedError
// for ErrAlreadyOwned); nothing outside this package reads gRPC codes.
// mapErr is the one place the OCM's contract (status code plus the
// ErrorInfo reason, see ocmv1.Reason*) becomes these values.
var (
	// ErrUnavailable: the OCM (or its etcd) could not be reached, the call
	// timed out, or the caller's context ended. Retrying later may work.
	ErrUnavailable = errors.New("OCM unavailable")
	// ErrInvalidArgument: the OCM refused the request as malformed (a bad
	// stream key, node id or field). Retrying the same call will not work.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: nobody owns the stream, or a node named in the request
	// has no session.
	ErrNotFound = errors.New("not found")
	// ErrSessionLost: the caller's own node session is unknown to the OCM or
	// its lease expired; the session's Done channel closes and the client
	// registers again on its own.
	ErrSessionLost = errors.New("node session lost")
	// ErrAlreadyOwned: the stream is owned; the error is an
	// *AlreadyOwnedError naming the owner and epoch.
	ErrAlreadyOwned = errors.New("stream already owned")
	// ErrStaleEpoch: the epoch given is no longer the stream's (someone
	// else owns it now, or it was transferred).
	ErrStaleEpoch = errors.New("stale ownership epoch")
	// ErrDraining: the node that would take the stream is DRAINING.
	ErrDraining = errors.New("node is draining")
	// ErrNoOrigin: AssignOrigin found no READY origin that qualifies.
	ErrNoOrigin = errors.New("no origin available")
	// ErrRefused: the caller may not do this (not an origin, not the owner,
	// the owner is not DRAINING, permission denied).
	ErrRefused = errors.New("refused")
	// ErrUnauthenticated: the OCM wants credentials (a client certificate
	// or a bearer token: ocm.tls, ocm.token) or did not accept them. It is
	// also ErrRefused.
	ErrUnauthenticated = fmt.Errorf("%w: not authenticated", ErrRefused)
	// ErrPermissionDenied: the OCM knows the caller, who may not do this
	// (act for another node id, claim as an edge). It is also ErrRefused.
	ErrPermissionDenied = fmt.Errorf("%w: permission denied", ErrRefused)
	// ErrConflict: the OCM kept reporting a concurrent change after the
	// client's own retries.
	ErrConflict = errors.New("concurrent change")
	// ErrUnsupported: the OCM does not implement the call (an older
	// version); the client does without it.
	ErrUnsupported = errors.New("not supported by this OCM")
	// ErrInternal: anything else the OCM answered.
	ErrInternal = errors.New("OCM error")
)

// Error is a failed OCM call: Kind is one of the Err* values above (which
// errors.Is matches), Msg the OCM's own explanation.
type Error struct {
	Op   string // the call, e.g. "ClaimStream default/live/s1"
	Kind error
	Msg  string
	ctx  error // the caller's context error, when that is what ended the call
}

func (e *Error) Error() string { return e.Op + ": " + e.Msg }

// Unwrap returns Kind (and the context error when the caller's context
// ended the call, so errors.Is(err, context.Canceled) holds too).
func (e *Error) Unwrap() []error {
	if e.ctx != nil {
		return []error{e.Kind, e.ctx}
	}
	return []error{e.Kind}
}

// AlreadyOwnedError is ErrAlreadyOwned with the current ownership record.
type AlreadyOwnedError struct {
	Op    string
	Owner string // the owner's node id ("" when the OCM did not say)
	Epoch int64
	// Stream is the ownership record the OCM sent (nil when it sent none).
	Stream *ocmv1.Stream
	Msg    string
}

func (e *AlreadyOwnedError) Error() string { return e.Op + ": " + e.Msg }

// Is makes errors.Is(err, ErrAlreadyOwned) hold.
func (e *AlreadyOwnedError) Is(target error) bool { return target == ErrAlreadyOwned }

// mapSessionErr is mapErr for the calls whose only NOT_FOUND is the
// caller's own session (Heartbeat, Drain, Deregister, ClaimStream): an OCM
// that sends no reason still means ErrSessionLost there.
func mapSessionErr(op string, err error) error {
	err = mapErr(op, err)
	var e *Error
	if errors.As(err, &e) && e.Kind == ErrNotFound {
		e.Kind = ErrSessionLost
	}
	return err
}

// mapErr turns a gRPC error of call op into the package's typed errors.
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		e := &Error{Op: op, Kind: ErrInternal, Msg: err.Error()}
		switch {
		case errors.Is(err, io.EOF):
			// A stream the OCM ended without a status: only a replica
			// going away does that.
			e.Kind = ErrUnavailable
		case errors.Is(err, context.Canceled):
			e.Kind, e.ctx = ErrUnavailable, context.Canceled
		case errors.Is(err, context.DeadlineExceeded):
			e.Kind, e.ctx = ErrUnavailable, context.DeadlineExceeded
		}
		return e
	}
	reason := ""
	var stream *ocmv1.Stream
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if d.GetDomain() == ocmv1.ErrorDomain {
				reason = d.GetReason()
			}
		case *ocmv1.Stream:
			stream = d
		}
	}
	e := &Error{Op: op, Msg: st.Message()}
	switch st.Code() {
	case codes.Canceled:
		e.Kind, e.ctx = ErrUnavailable, context.Canceled
	case codes.DeadlineExceeded:
		e.Kind, e.ctx = ErrUnavailable, context.DeadlineExceeded
	case codes.Unavailable, codes.ResourceExhausted:
		e.Kind = ErrUnavailable
	case codes.InvalidArgument, codes.OutOfRange:
		e.Kind = ErrInvalidArgument
	case codes.NotFound:
		e.Kind = ErrNotFound
		if reason == ocmv1.ReasonSessionNotFound {
			e.Kind = ErrSessionLost
		}
	case codes.AlreadyExists:
		return &AlreadyOwnedError{Op: op, Owner: stream.GetOwnerNodeId(), Epoch: stream.GetEpoch(), Stream: stream, Msg: st.Message()}
	case codes.FailedPrecondition:
		switch reason {
		case ocmv1.ReasonStaleEpoch:
			e.Kind = ErrStaleEpoch
		case ocmv1.ReasonNodeDraining:
			e.Kind = ErrDraining
		case ocmv1.ReasonNoOrigin:
			e.Kind = ErrNoOrigin
		default:
			e.Kind = ErrRefused
		}
	case codes.PermissionDenied:
		e.Kind = ErrPermissionDenied
	case codes.Unauthenticated:
		e.Kind = ErrUnauthenticated
	case codes.Aborted:
		e.Kind = ErrConflict
	case codes.Unimplemented:
		e.Kind = ErrUnsupported
	default:
		e.Kind = ErrInternal
	}
	return e
}
