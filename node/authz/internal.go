package authz

import (
	"fmt"
	"net/url"
	"time"

	"github.com/livecluster/livecluster/streamkey"
)

// internalAction is the action an internal credential is signed for: a
// user token, even signed with a reused secret, never passes as one.
func internalAction(a Action) string { return "edge-" + string(a) }

// checkInternal verifies an edge→origin leg's credential for r.
func (p *policy) checkInternal(r *Request, tok string, now time.Time) error {
	act := r.Action
	if act == Connect {
		// An RTMP connect carrying a leg's credential: the stream is not
		// known yet; the publish or play that follows verifies it.
		return nil
	}
	if err := p.internal.Verify(tok, internalAction(act), r.Key, now); err != nil {
		return &Denied{Reason: "internal credential refused: " + err.Error()}
	}
	return nil
}

// LegQuery returns the query an edge adds to a leg it opens on an origin
// for key (action Play for a pull, Publish for a forwarded publish): the
// internal credential, or nothing when no auth.internal.keys are set. The
// expiry is rounded up to the minute so that the URLs of one minute are
// equal (HLS caches). An unsignable key returns an error.
func (m *Manager) LegQuery(a Action, key streamkey.Key) (url.Values, error) {
	p := m.policy()
	if p.internal.Len() == 0 {
		return nil, nil
	}
	exp := m.opts.Now().Add(p.cfg.Internal.TTL.D()).Truncate(time.Minute).Add(time.Minute)
	tok, err := p.internal.Mint("", internalAction(a), key, exp)
	if err != nil {
		return nil, fmt.Errorf("sign %s leg for %s: %w", a, key, err)
	}
	return url.Values{InternalParam: {tok}}, nil
}
