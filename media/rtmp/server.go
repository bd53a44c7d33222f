// Package rtmp is an RTMP connection layer, server and client, carrying
// H.264/AAC as joy4 av packets or as FLV tag bytes from a hub.
//
// The server answers both the plain and the digest ("complex") handshake,
// bounds chunk and message sizes, applies read/write deadlines, and hands
// each publish or play to a Handler which may refuse it; the refusal
// reaches the client as an onStatus error whose description ffmpeg prints.
// Outgoing chunk size is 4096.
//
// The client dials rtmp://host[:port]/app/name[?query] to publish or play,
// used by edges to pull from and forward to origins.
package rtmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/internal/flvx"
	"github.com/livecluster/livecluster/streamkey"
)

// Handler serves accepted publish and play requests. c.Request() tells
// what was asked. Returning an error before the session was accepted
// (Conn.Accept, or the first read or write of media) refuses it: a
// *StatusError chooses the onStatus code, any other error is sent as
// NetStream.Publish.BadName or NetStream.Play.StreamNotFound with the error
// text as description. ctx ends when the client leaves or the server stops.
type Handler interface {
	ServePublish(ctx context.Context, c *Conn) error
	ServePlay(ctx context.Context, c *Conn) error
}

// Server accepts RTMP connections.
type Server struct {
	Handler Handler
	Config  Config
	Logger  *slog.Logger // nil: slog.Default()
	// Rejected, if set, is told each connection cut off by a deadline or
	// a limit, with one of the Reason constants (for a metric).
	Rejected func(reason string)
	// PublishBitrate, if set, gives the publish bitrate ceiling (bits per
	// second, 0: none) and its averaging window; it is read when each
	// publish starts, so a reload applies to the next publisher.
	PublishBitrate func() (bitsPerSecond int64, window time.Duration)
	// PublishReadWindowFunc, if set, replaces Config.PublishReadWindow:
	// it is read when each publish starts, so a reload applies to the
	// next publisher (one publishing keeps its window). Zero or negative:
	// no pacing, every arrival is read at once (unlike the Config field,
	// whose 0 means the default: a configuration key's 0s means off).
	PublishReadWindowFunc func() time.Duration
	// Connect, when set, is asked about each connect command before it is
	// answered (c.ID and c.RemoteAddr are set, c.Request is not yet). An
	// error refuses the connection: the client gets a _error
	// NetConnection.Connect.Rejected whose description is a *StatusError's
	// Description or the error's text, and the connection is closed.
	Connect func(ctx context.Context, c *Conn, info ConnectInfo) error

	ids atomic.Uint64
}

// ConnectInfo is what a connect command tells.
type ConnectInfo struct {
	App   string // without query
	Query string // the app's raw query
	TcURL string
	Vhost string // the app's vhost query parameter, else streamkey.DefaultVhost
}

// Serve accepts connections on ln until ln is closed or ctx ends, then waits
// for the connections it started. Closing ln (drain) lets running sessions
// finish; cancelling ctx closes them too. It returns nil on a clean stop.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	cfg := s.Config.withDefaults()
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("rtmp accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, nc, cfg, log)
		}()
	}
}

// quietErr reports errors that are a peer going away, not a fault: a load
// balancer's TCP check, a player closing, a reset.
func quietErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, context.Canceled)
}

// publishReadWindow is the read window of a publish starting now; ≤ 0:
// none (cfg has had its defaults applied).
func (s *Server) publishReadWindow(cfg Config) time.Duration {
	if s.PublishReadWindowFunc != nil {
		return s.PublishReadWindowFunc()
	}
	return cfg.PublishReadWindow
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn, cfg Config, log *slog.Logger) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := newConn(nc, cfg, log, true)
	c.rejected = s.Rejected
	c.id = strconv.FormatUint(s.ids.Add(1), 10)
	c.stopAfter = context.AfterFunc(ctx, func() { nc.Close() })
	defer c.Close()
	log = log.With("remote", nc.RemoteAddr().String())
	if err := c.serverHandshake(); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.reject(ReasonHandshakeTimeout)
		}
		if c.rx.Load() == 0 || quietErr(err) {
			log.Debug("rtmp connection closed during handshake", "err", err)
		} else {
			log.Info("rtmp handshake refused", "err", err)
		}
		return
	}
	err := s.session(ctx, c, log)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if !c.setupDeadline.IsZero() {
			c.reject(ReasonHandshakeTimeout)
		} else {
			c.reject(ReasonIdleTimeout)
		}
	}
	switch {
	case err == nil || quietErr(err):
		log.Debug("rtmp connection ended", "err", err)
	default:
		log.Info("rtmp connection ended", "err", err)
	}
}

// session runs the command phase until a publish or play, then serves it.
func (s *Server) session(ctx context.Context, c *Conn, log *slog.Logger) error {
	var app, tcURL string
	connected := false
	for {
		m, err := c.readMessage()
		if err != nil {
			return err
		}
		if m.typ != msgCommandAMF0 && m.typ != msgCommandAMF3 {
			continue
		}
		cmd, err := parseCommand(m)
		if err != nil {
			return err
		}
		switch cmd.name {
		case "connect":
			app, _ = cmd.obj["app"].(string)
			tcURL, _ = cmd.obj["tcUrl"].(string)
			req := parseRequest(app, "x", tcURL)
			err := streamkey.ValidatePart("app", req.App)
			if err == nil && s.Connect != nil {
				err = s.Connect(ctx, c, ConnectInfo{App: req.App, Query: req.Query, TcURL: tcURL, Vhost: req.Vhost})
				var se *StatusError
				if errors.As(err, &se) {
					err = errors.New(se.Description)
				}
			}
			if err != nil {
				_ = c.writeCommand(csCommand, 0, "_error", cmd.txn, nil, flvio.AMFMap{
					"level": "error", "code": "NetConnection.Connect.Rejected", "description": err.Error(),
				})
				return fmt.Errorf("connect refused: %w", err)
			}
			if err := c.acceptConnect(cmd.txn); err != nil {
				return err
			}
			connected = true
		case "createStream":
			if err := c.writeCommand(csCommand, 0, "_result", cmd.txn, nil, 1.0); err != nil {
				return err
			}
		case "publish", "play":
			if !connected {
				return fmt.Errorf("%s before connect", cmd.name)
			}
			req := parseRequest(app, cmd.argString(0), tcURL)
			req.Publish = cmd.name == "publish"
			req.RemoteAddr = c.nc.RemoteAddr()
			if req.Publish {
				req.PublishType = cmd.argString(1)
			}
			c.req = req
			c.streamID = cmd.streamID
			if c.streamID == 0 {
				c.streamID = 1
			}
			c.setupDeadline, c.msgDeadline = time.Time{}, time.Time{}
			if req.Publish {
				c.readWindow = s.publishReadWindow(c.cfg)
				if c.readWindow > 0 {
					c.lowat = newRcvLowat(c.nc)
				}
			}
			if req.Publish && s.PublishBitrate != nil {
				c.bitrate.max, c.bitrate.window = s.PublishBitrate()
			}
			if !req.Publish {
				c.noReadDeadline = true
				_ = c.nc.SetReadDeadline(time.Time{})
			}
			return s.serve(ctx, c, log)
		case "deleteStream", "closeStream", "FCUnpublish":
		default:
			// releaseStream, FCPublish, getStreamLength, checkbw and the like.
			if cmd.txn != 0 {
				if err := c.writeCommand(csCommand, cmd.streamID, "_result", cmd.txn, nil); err != nil {
					return err
				}
			}
		}
	}
}

func (c *Conn) acceptConnect(txn float64) error {
	if err := c.writeControl(msgWindowAckSize, u32(c.cfg.WindowAckSize)); err != nil {
		return err
	}
	if err := c.writeControl(msgSetPeerBandwidth, append(u32(c.cfg.WindowAckSize), 2)); err != nil {
		return err
	}
	if err := c.setChunkSize(); err != nil {
		return err
	}
	return c.writeCommand(csCommand, 0, "_result", txn,
		flvio.AMFMap{"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
		flvio.AMFMap{"level": "status", "code": "NetConnection.Connect.Success",
			"description": "Connection succeeded.", "objectEncoding": 0.0})
}

func (s *Server) serve(ctx context.Context, c *Conn, log *slog.Logger) error {
	req := &c.req
	log = log.With("app", req.App, "name", req.Name, "publish", req.Publish)
	if _, err := req.Key(); err != nil {
		c.accepted.Store(true)
		code := "NetStream.Play.StreamNotFound"
		if req.Publish {
			code = "NetStream.Publish.BadName"
		}
		_ = c.writeStatus("error", code, err.Error())
		return fmt.Errorf("refused %s: %w", req.Name, err)
	}
	if req.Publish {
		c.acceptFn = func() error {
			return c.writeStatus("status", "NetStream.Publish.Start", "Start publishing "+req.Name)
		}
		err := s.Handler.ServePublish(ctx, c)
		return s.finish(c, err, "NetStream.Publish.BadName", log)
	}
	c.acceptFn = func() error {
		if err := c.writeControl(msgUserControl, userControl(ucStreamBegin, c.streamID)); err != nil {
			return err
		}
		if err := c.writeStatus("status", "NetStream.Play.Reset", "Playing and resetting "+req.Name); err != nil {
			return err
		}
		if err := c.writeStatus("status", "NetStream.Play.Start", "Started playing "+req.Name); err != nil {
			return err
		}
		c.wmu.Lock()
		defer c.wmu.Unlock()
		if err := c.writeMessageLocked(csData, msgDataAMF0, c.streamID, 0, flvx.AMFBody("|RtmpSampleAccess", true, true)); err != nil {
			return err
		}
		return c.flushLocked()
	}
	// A player sends little, but it must be read: pings, acks, deleteStream
	// or the socket closing end the session.
	c.shrinkReader()
	pctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := c.readMessage()
			if err != nil {
				cancel(err)
				return
			}
			if m.typ == msgCommandAMF0 || m.typ == msgCommandAMF3 {
				cmd, err := parseCommand(m)
				if err != nil {
					cancel(err)
					return
				}
				if err := c.handleSessionCommand(cmd); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()
	err := s.Handler.ServePlay(pctx, c)
	err = s.finish(c, err, "NetStream.Play.StreamNotFound", log)
	c.nc.Close() // stops the reader goroutine
	<-done
	if err == nil || errors.Is(err, context.Canceled) {
		if cause := context.Cause(pctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
	}
	cancel(nil)
	return err
}

// finish reports a refusal to the client when the session was never
// accepted; a publish that ends with an error after it was accepted gets
// an onStatus error with that error's text, so the publisher learns why.
func (s *Server) finish(c *Conn, err error, code string, log *slog.Logger) error {
	if err == nil {
		return nil
	}
	if c.accepted.Load() {
		if c.req.Publish && !quietErr(err) {
			_ = c.closeLingering(err)
		}
		return err
	}
	desc := err.Error()
	var se *StatusError
	if errors.As(err, &se) {
		code, desc = se.Code, se.Description
	}
	c.accepted.Store(true)
	_ = c.writeStatus("error", code, desc)
	log.Info("rtmp request refused", "code", code, "err", err)
	return nil
}

// Refuse answers a connection the server will not serve (a connection
// limit, see node/connlimit): it does the handshake and answers the
// client's connect with NetConnection.Connect.Rejected and err's text,
// which ffmpeg prints, then returns; the caller closes nc. The whole
// exchange is bounded by the handshake timeout, and ctx ending stops it.
func (s *Server) Refuse(ctx context.Context, nc net.Conn, err error) {
	cfg := s.Config.withDefaults()
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	c := newConn(nc, cfg, log, true)
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	if herr := c.serverHandshake(); herr != nil {
		return
	}
	for {
		m, rerr := c.readMessage()
		if rerr != nil {
			return
		}
		if m.typ != msgCommandAMF0 && m.typ != msgCommandAMF3 {
			continue
		}
		cmd, perr := parseCommand(m)
		if perr != nil {
			return
		}
		if cmd.name == "connect" {
			_ = c.writeCommand(csCommand, 0, "_error", cmd.txn, nil, flvio.AMFMap{
				"level": "error", "code": "NetConnection.Connect.Rejected", "description": err.Error(),
			})
			return
		}
	}
}
