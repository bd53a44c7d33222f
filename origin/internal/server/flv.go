package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/livecluster/livecluster/media/httpflv"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/node/admin"
	"github.com/livecluster/livecluster/node/authz"
	"github.com/livecluster/livecluster/streamkey"

	"github.com/livecluster/livecluster/origin/internal/clients"
)

// flvHandler is the HTTP-FLV play adapter: httpflv fed from the hub, with
// client registration (API, kick, counters).
// writeTimeout bounds each write to a player (limits.timeouts.httpWrite).
func (s *Server) flvHandler(writeTimeout time.Duration) http.Handler {
	flv := &httpflv.Handler{
		Logger: s.log, WriteTimeout: writeTimeout,
		Lookup: func(_ context.Context, key streamkey.Key) (*hub.Hub, error) {
			h := s.hubs.Get(key.String())
			if h == nil || !h.Publishing() {
				return nil, httpflv.ErrNotFound
			}
			return h, nil
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, err := httpflv.ParsePath(r, ".flv")
		if err != nil {
			flv.ServeHTTP(w, r) // answers the error itself
			return
		}
		ar, ok := s.authz.CheckHTTP(w, r, key, "flv")
		if !ok {
			return
		}
		if r.Method != http.MethodGet {
			flv.ServeHTTP(w, r) // answers the HEAD itself
			return
		}
		if h := s.hubs.Get(key.String()); h == nil || !h.Publishing() {
			http.Error(w, "stream "+key.String()+" not found", http.StatusNotFound)
			return
		}
		epoch, err := s.owned(key, r.URL.RawQuery)
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, errNotOwner) {
				code = http.StatusConflict
			}
			http.Error(w, err.Error(), code)
			return
		}
		setOwnerHeaders(w.Header(), s.rt.Config().NodeID, epoch)
		release, err := s.limits.AcquirePlayer("http", key.String())
		if err != nil {
			w.Header().Set("Retry-After", "5")
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer release()
		defer func() {
			ar.Action = authz.Stop
			s.authz.Notify(r.Context(), ar)
		}()
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		cw := &countingWriter{ResponseWriter: w}
		_, remove := s.clients.Add(clients.Info{
			Kind: clients.KindFLVPlay, Protocol: "flv", Key: key, Remote: r.RemoteAddr,
			TcURL: "http://" + r.Host + "/" + key.App,
		}, nil, cw.n.Load, cancel)
		defer remove()
		flv.ServeHTTP(cw, r.WithContext(ctx))
	})
}

type countingWriter struct {
	http.ResponseWriter
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// CountBytes implements httpflv.BytesCounter: the bytes written on the
// hijacked connection.
func (c *countingWriter) CountBytes(n int64) { c.n.Add(n) }

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// playEnded turns the error that ended a play into its cause: a kick, a
// normal end (nil), or the error.
func playEnded(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if err == nil || errors.Is(err, io.EOF) || admin.IsBenignConnError(err) {
		return nil
	}
	return err
}

// setOwnerHeaders names the origin and the epoch of what a response serves
// (epoch 0: not owned, no epoch header).
func setOwnerHeaders(h http.Header, nodeID string, epoch int64) {
	h.Set(streamkey.OriginHeader, nodeID)
	if epoch > 0 {
		h.Set(streamkey.EpochHeader, strconv.FormatInt(epoch, 10))
	}
	h.Add("Access-Control-Expose-Headers", streamkey.OriginHeader+", "+streamkey.EpochHeader)
}
