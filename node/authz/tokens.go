package authz

import (
	"context"
	"errors"
	"time"
)

// Tokens is the signed-URL-token strategy: a publish (when Publish) or a
// play (when Play) needs a token valid for that action and stream in the
// query parameter TokenParam. Connect is never checked (the stream is not
// known yet).
type Tokens struct {
	Keys          *Keyring
	Publish, Play bool
	Now           func() time.Time
}

// Authorize implements Authorizer.
func (t *Tokens) Authorize(_ context.Context, r *Request) error {
	if !(r.Action == Publish && t.Publish) && !(r.Action == Play && t.Play) {
		return nil
	}
	tok := TokenFrom(r.Query)
	if tok == "" {
		return &Denied{Reason: "a token is required to " + string(r.Action) + " " + r.Key.String() +
			" (query parameter " + TokenParam + ")", Unauthenticated: true}
	}
	if err := t.Keys.Verify(tok, string(r.Action), r.Key, t.Now()); err != nil {
		reason := "invalid token"
		switch {
		case errors.Is(err, ErrTokenExpired):
			reason = "token expired"
		case errors.Is(err, ErrTokenUnknownKey):
			reason = "token signed with an unknown key"
		case errors.Is(err, ErrTokenMalformed):
			reason = "malformed token"
		case errors.Is(err, ErrTokenSignature):
			reason = "token not valid for " + string(r.Action) + " " + r.Key.String()
		}
		return &Denied{Reason: reason}
	}
	return nil
}
