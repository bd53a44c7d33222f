package connlimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// RefuseHTTP is an Options.Refuse for HTTP listeners: it answers 503
// Service Unavailable (the listener is full) or 429 Too Many Requests (the
// client's address is), with Retry-After and the reason as the body, then
// half-closes and reads what the client sent for up to a second so that
// the answer is not lost to a reset.
func RefuseHTTP(_ context.Context, nc net.Conn, err error) {
	code := http.StatusServiceUnavailable
	if errors.Is(err, ErrMaxConnsPerIP) {
		code = http.StatusTooManyRequests
	}
	body := err.Error() + "\n"
	_ = nc.SetDeadline(time.Now().Add(refuseTimeout))
	_, werr := fmt.Fprintf(nc, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
	if werr != nil {
		return
	}
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.CopyN(io.Discard, nc, 64<<10)
}

// HTTPTimeouts returns an http.Server ConnState hook that counts the
// connections the server cut off with a read deadline: reason
// header_timeout when the first request's header did not arrive within
// ReadHeaderTimeout (a slowloris, or a client that connected and said
// nothing), idle_timeout when a kept-alive connection stayed silent past
// IdleTimeout or trickled a later request. It needs the connections of a
// Listener (it reads their timeout mark); others are not counted. The
// server closes those connections itself; this only makes them visible.
func HTTPTimeouts(m *Metrics, listener string) func(net.Conn, http.ConnState) {
	// The hook runs at every request's start and end: it keeps its state
	// on the connection (no lock, no map), since only ours are counted.
	return func(nc net.Conn, st http.ConnState) {
		c, ok := nc.(*conn)
		if !ok {
			return
		}
		switch st {
		case http.StateIdle:
			c.served.Store(true)
		case http.StateClosed:
			if !c.readTimeout.Load() {
				return
			}
			if c.served.Load() {
				m.Rejected(listener, ReasonIdleTimeout)
			} else {
				m.Rejected(listener, ReasonHeaderTimeout)
			}
		}
	}
}
