package server

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/livecluster/livecluster/media/rtmp"
	nodeconfig "github.com/livecluster/livecluster/node/config"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"

	"github.com/livecluster/livecluster/origin/internal/clients"
	"github.com/livecluster/livecluster/origin/internal/owner"
	"github.com/livecluster/livecluster/origin/internal/publish"
)

// ForwardedByParam is the query parameter an edge adds to the RTMP publish
// URL it forwards to an origin, naming itself:
//
//	rtmp://origin-0.origin:1935/live/camera1?lc_forwarded_by=edge-7f9c
//
// Its value must be a valid node id. The origin then claims the stream as
// PUBLISH_PATH_FORWARDED with forwarded_by set to that id, and, if the
// stream is owned by a DRAINING origin, takes it over with TransferStream
// (make-before-break) instead of refusing it. The parameter is not part of
// the stream key.
const ForwardedByParam = "lc_forwarded_by"

// ServePublish implements rtmp.Handler: the RTMP ingest adapter of the
// publish session.
func (s *Server) ServePublish(ctx context.Context, c *rtmp.Conn) error {
	req := c.Request()
	key, err := req.Key()
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: err.Error()}
	}
	path, fwd := ocmv1.PublishPath_PUBLISH_PATH_DIRECT, ""
	if q, err := url.ParseQuery(req.Query); err == nil && q.Get(ForwardedByParam) != "" {
		fwd = q.Get(ForwardedByParam)
		if err := nodeconfig.ValidNodeID(fwd); err != nil {
			return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: ForwardedByParam + ": " + err.Error()}
		}
		path = ocmv1.PublishPath_PUBLISH_PATH_FORWARDED
	}
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

// ServePlay implements rtmp.Handler: the RTMP play adapter, fed from the hub.
func (s *Server) ServePlay(ctx context.Context, c *rtmp.Conn) error {
	req := c.Request()
	key, err := req.Key()
	if err != nil {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound", Description: err.Error()}
	}
	h := s.hubs.Get(key.String())
	if h == nil || !h.Publishing() {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound",
			Description: fmt.Sprintf("stream %s is not published on origin %s", key, s.rt.Config().NodeID)}
	}
	rd, err := h.NewReader()
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
	return playEnded(ctx, rd.CopyTo(ctx, c.WriteTags))
}
