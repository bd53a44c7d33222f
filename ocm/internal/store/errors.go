package store

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// ErrorDomain is the domain of the ErrorInfo details the store attaches.
const ErrorDomain = ocmv1.ErrorDomain

// Reasoned returns a status error with an ErrorInfo detail naming reason
// (one of the ocmv1.Reason* constants), so clients tell apart the cases a
// code covers without parsing the message.
func Reasoned(code codes.Code, reason, format string, args ...any) error {
	st := status.New(code, fmt.Sprintf(format, args...))
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}
