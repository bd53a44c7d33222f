package server

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/authz"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"

	"github.com/livecluster/livecluster/origin/internal/clients"
	"github.com/livecluster/livecluster/origin/internal/owner"
	"github.com/livecluster/livecluster/origin/internal/publish"
	"github.com/livecluster/livecluster/origin/internal/web"
)

// ServePublish implements rtmp.Handler: the RTMP ingest adapter of the
// publish session.
func (s *Server) ServePublish(ctx context.Context, c *rtmp.Conn) error {
	req := c.Request()
	key, err := req.Key()
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: err.Error()}
	}
	areq := s.authRequest(authz.Publish, key, c)
	if err := s.authz.Check(ctx, areq); err != nil {
		return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: err.Error()}
	}
	release, err := s.limits.AcquireStream("rtmp")
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Publish.Rejected", Description: err.Error()}
	}
	defer release()
	path, fwd := ocmv1.PublishPath_PUBLISH_PATH_DIRECT, ""
	// A forwarded publish (streamkey.ForwardedByParam on the URL) is
	// claimed as FORWARDED by that edge and may take the stream over from a
	// DRAINING owner (make-before-break) instead of being refused.
	if q, err := url.ParseQuery(req.Query); err == nil {
		if fwd, err = streamkey.ForwardedBy(q); err != nil {
			return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: err.Error()}
		}
		if fwd != "" {
			path = ocmv1.PublishPath_PUBLISH_PATH_FORWARDED
			// The marker lets a publish take a stream over from a draining
			// owner: only an edge's signed leg may set it once publishing
			// is authorized at all.
			if s.authz.Active(authz.Publish) && areq.Query.Get(authz.InternalParam) == "" {
				return &rtmp.StatusError{Code: "NetStream.Publish.BadName",
					Description: "not authorized: " + streamkey.ForwardedByParam + " needs an edge's internal credential"}
			}
		}
	}
	defer s.authz.Notify(ctx, s.authRequest(authz.Unpublish, key, c))
	err = s.pubs.Serve(ctx, publish.Request{
		Key: key, Path: path, ForwardedBy: fwd, Protocol: "rtmp", Remote: c.RemoteAddr().String(), TcURL: req.TcURL,
		BytesIn: c.BytesRead, BytesOut: c.BytesWritten,
	}, c)
	var refused *owner.Refused
	if errors.As(err, &refused) {
		return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: refused.Error()}
	}
	return err
}

// errNotOwner is why a pull naming an epoch is refused.
var errNotOwner = web.ErrNotOwner

// owned checks a pull's epoch (streamkey.EpochParam in the raw query, as
// edges send it) against the epoch key is published under here and
// returns that epoch (0: not published, or its ownership lost). A pull
// without the parameter (a player straight on the origin) is not checked;
// one naming another epoch is refused with an error wrapping errNotOwner
// (the edge looks the owner up again): serving it could let an edge play
// an ownership the OCM has replaced, or one it has not told the edge of yet.
func (s *Server) owned(key streamkey.Key, rawQuery string) (int64, error) {
	cur := s.pubs.Epoch(key)
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return cur, fmt.Errorf("stream %s: bad query: %w", key, err)
	}
	want, err := streamkey.Epoch(q)
	if err != nil {
		return cur, err
	}
	if want != 0 && want != cur {
		id := s.rt.Config().NodeID
		if cur == 0 {
			return cur, fmt.Errorf("origin %s does not own stream %s (asked for epoch %d): %w", id, key, want, errNotOwner)
		}
		return cur, fmt.Errorf("origin %s owns stream %s at epoch %d, not %d: %w", id, key, cur, want, errNotOwner)
	}
	return cur, nil
}

// hlsOwned is owned for HLS playlists: a playlist of a stream that is not
// published here any more is served whatever epoch is asked (its segments
// are history, and its ENDLIST tells the edge the stream ended here); one
// published here under another epoch is refused.
func (s *Server) hlsOwned(key streamkey.Key, rawQuery string) (int64, error) {
	cur, err := s.owned(key, rawQuery)
	if errors.Is(err, errNotOwner) && cur == 0 {
		return 0, nil
	}
	return cur, err
}

// ServePlay implements rtmp.Handler: the RTMP play adapter, fed from the hub.
func (s *Server) ServePlay(ctx context.Context, c *rtmp.Conn) error {
	req := c.Request()
	key, err := req.Key()
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound", Description: err.Error()}
	}
	if err := s.authz.Check(ctx, s.authRequest(authz.Play, key, c)); err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.Failed", Description: err.Error()}
	}
	h := s.hubs.Get(key.String())
	if h == nil || !h.Publishing() {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound",
			Description: fmt.Sprintf("stream %s is not published on origin %s", key, s.rt.Config().NodeID)}
	}
	if _, err := s.owned(key, req.Query); err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound", Description: err.Error()}
	}
	release, err := s.limits.AcquirePlayer("rtmp", key.String())
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.Rejected", Description: err.Error()}
	}
	defer release()
	defer s.authz.Notify(ctx, s.authRequest(authz.Stop, key, c))
	// An edge's pull (the relay marker) is fed at once: the edge merges
	// for its own players, so the windows do not add up.
	q, _ := url.ParseQuery(req.Query)
	rd, err := h.NewReaderWith(hub.ReaderOptions{NoMerge: streamkey.IsRelay(q)})
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound", Description: fmt.Sprintf("stream %s ended", key)}
	}
	defer rd.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_, remove := s.clients.Add(clients.Info{
		Kind: clients.KindRTMPPlay, Protocol: "rtmp", Key: key, Remote: c.RemoteAddr().String(), TcURL: req.TcURL,
	}, c.BytesRead, c.BytesWritten, cancel)
	defer remove()
	if err := c.Accept(); err != nil {
		return playEnded(ctx, err)
	}
	return playEnded(ctx, rd.CopyWire(ctx, c, c.WriteWire))
}

// rtmpConnect is the RTMP server's Connect: the on_connect hook.
func (s *Server) rtmpConnect(ctx context.Context, c *rtmp.Conn, info rtmp.ConnectInfo) error {
	return s.authz.Check(ctx, &authz.Request{
		Action: authz.Connect, Key: streamkey.Key{Vhost: info.Vhost, App: info.App}, Protocol: "rtmp",
		ClientID: c.ID(), IP: authz.ClientIP(c.RemoteAddr().String()),
		Query: authz.RTMPQuery(info.Query, info.TcURL), TcURL: info.TcURL,
	})
}

// authRequest describes an RTMP publish or play to the authorizer.
func (s *Server) authRequest(a authz.Action, key streamkey.Key, c *rtmp.Conn) *authz.Request {
	req := c.Request()
	return &authz.Request{
		Action: a, Key: key, Protocol: "rtmp", ClientID: c.ID(), IP: authz.ClientIP(c.RemoteAddr().String()),
		Query: authz.RTMPQuery(req.Query, req.TcURL), TcURL: req.TcURL,
	}
}
