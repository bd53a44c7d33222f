package streamkey

import (
	"fmt"
	"net/url"
	"strconv"

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

// EpochParam is the query parameter an edge adds to every pull it opens on
// an origin (RTMP play, HTTP-FLV, HLS playlist), naming the ownership epoch
// the OCM gave it for the stream:
//
//	rtmp://origin-0.origin:1935/live/camera1?lc_epoch=4711
//
// The origin serves the pull only while it owns the stream at exactly that
// epoch, so an edge never plays from an origin the OCM no longer names.
const EpochParam = "lc_epoch"

// The HTTP response headers and onMetaData fields that name the origin and
// the ownership epoch of what is served: the origin sets them on its
// HTTP-FLV and HLS playlist responses and in the onMetaData it sends (RTMP
// and HTTP-FLV, again after every source change at an edge); an edge sets
// the headers on its HTTP-FLV and HLS playlist responses from the upstream
// it plays.
const (
	EpochHeader  = "X-Livecluster-Epoch"
	OriginHeader = "X-Livecluster-Origin"
	EpochMeta    = "livecluster_epoch"
	OriginMeta   = "livecluster_origin"
)

// Epoch returns the epoch named by q (EpochParam), 0 when absent. Anything
// but a positive decimal integer is an error wrapping ErrInvalid: the pull
// must be refused, not served unchecked.
func Epoch(q url.Values) (int64, error) {
	v := q.Get(EpochParam)
	if v == "" {
		return 0, nil
	}
	e, err := strconv.ParseInt(v, 10, 64)
	if err != nil || e <= 0 {
		return 0, fmt.Errorf("%w: %s %q is not a positive integer", ErrInvalid, EpochParam, v)
	}
	return e, nil
}

// PullQuery returns the query suffix of an edge's pull of the key at epoch
// (0: none): "" or "?vhost=...&lc_epoch=...".
func (k Key) PullQuery(epoch int64) string {
	q := url.Values{}
	k.SetQuery(q)
	if epoch > 0 {
		q.Set(EpochParam, strconv.FormatInt(epoch, 10))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// RelayQuery returns the query suffix of an edge's upstream play (RTMP or
// HTTP-FLV) of the key at epoch (0: none): PullQuery's parameters and the
// relay marker. Append it to "<scheme>://host/app/name<ext>".
func (k Key) RelayQuery(epoch int64) string {
	q := url.Values{RelayParam: {"1"}}
	k.SetQuery(q)
	if epoch > 0 {
		q.Set(EpochParam, strconv.FormatInt(epoch, 10))
	}
	return "?" + q.Encode()
}
