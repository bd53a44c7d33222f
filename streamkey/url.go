package streamkey

import (
	"fmt"
	"net/url"

	"github.com/livecluster/livecluster/streamkey/nodeid"
)

// VhostParam is the URL query parameter that carries a non-default vhost,
// for every protocol: rtmp://host/app/name?vhost=v,
// http://host/app/name.flv?vhost=v, http://host/app/name.m3u8?vhost=v.
const VhostParam = "vhost"

// ForwardedByParam is the query parameter an edge adds to the RTMP publish
// URL it opens on an origin, naming itself:
//
//	rtmp://origin-0.origin:1935/live/camera1?lc_forwarded_by=edge-7f9c
//
// The origin then claims the stream as FORWARDED by that edge, so the OCM
// knows the publish comes through the edge and can move it.
const ForwardedByParam = "lc_forwarded_by"

// Query returns the key's URL query suffix: "" for the default vhost, else
// "?vhost=<escaped vhost>". Append it to "<scheme>://host/app/name<ext>".
func (k Key) Query() string {
	if k.Vhost == "" || k.Vhost == DefaultVhost {
		return ""
	}
	return "?" + VhostParam + "=" + url.QueryEscape(k.Vhost)
}

// SetQuery sets the key's vhost in q, or removes it for the default vhost.
func (k Key) SetQuery(q url.Values) {
	if k.Vhost == "" || k.Vhost == DefaultVhost {
		q.Del(VhostParam)
		return
	}
	q.Set(VhostParam, k.Vhost)
}

// FromURL builds the key of a request for app/name whose URL query is q
// (the vhost comes from VhostParam, default when absent). An invalid key is
// an error wrapping ErrInvalid.
func FromURL(app, name string, q url.Values) (Key, error) {
	return New(q.Get(VhostParam), app, name)
}

// ForwardedBy returns the forwarding edge's node id named by q
// (ForwardedByParam), "" when the publish is not forwarded. An invalid node
// id is an error wrapping nodeid.ErrInvalid: the publish must be refused,
// not taken as direct.
func ForwardedBy(q url.Values) (string, error) {
	id := q.Get(ForwardedByParam)
	if id == "" {
		return "", nil
	}
	if err := nodeid.Validate(id); err != nil {
		return "", fmt.Errorf("%s: %w", ForwardedByParam, err)
	}
	return id, nil
}

// ForwardQuery returns the query an edge puts on the publish URL it opens on
// an origin: the forwarded-by marker naming edgeID, and the key's vhost.
func (k Key) ForwardQuery(edgeID string) url.Values {
	q := url.Values{ForwardedByParam: {edgeID}}
	k.SetQuery(q)
	return q
}

// RelayParam is the query parameter an edge adds to the play URL (RTMP or
// HTTP-FLV) of its upstream pull on an origin:
//
//	rtmp://origin-0.origin:1935/live/camera1?lc_relay=1
//
// The origin then sends that player every packet at once instead of
// holding it for its merge window: the edge merges for its own players, so
// the two windows do not add up. Any player may ask; it only costs the
// origin more write calls for that one connection.
const RelayParam = "lc_relay"

// IsRelay reports whether a play's query carries RelayParam.
func IsRelay(q url.Values) bool { return q.Get(RelayParam) != "" }

// RelayQuery returns the query suffix of an edge's upstream play URL: the
// relay marker and the key's vhost. Append it to "<scheme>://host/app/name<ext>".
func (k Key) RelayQuery() string {
	q := url.Values{RelayParam: {"1"}}
	k.SetQuery(q)
	return "?" + q.Encode()
}
