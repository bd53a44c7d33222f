// Package listeners opens the player-facing listeners of a node, the same
// way on origins and edges: RTMP, HTTP and, when a certificate is
// configured, HTTPS, each under the node's connection limits.
package listeners

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/livecluster/livecluster/node/config"
	"github.com/livecluster/livecluster/node/connlimit"
	"github.com/livecluster/livecluster/node/tlsfiles"
)

// Set is a node's open listeners. HTTPS is nil when no HTTPS address is
// configured.
type Set struct {
	RTMP, HTTP, HTTPS net.Listener
}

// Addresses are the listen addresses of a Set.
type Addresses struct {
	RTMP, HTTP string
	HTTPS      config.HTTPS
}

// Open binds every address and wraps each listener in limits; refuseRTMP
// answers an RTMP connection the limits refuse (an HTTP one gets
// connlimit.RefuseHTTP). On any failure, which names the config key of the
// address, the listeners opened so far are closed again.
func Open(addrs Addresses, limits *connlimit.Node, refuseRTMP func(context.Context, net.Conn, error), log *slog.Logger) (*Set, error) {
	rawRTMP, err := net.Listen("tcp", addrs.RTMP)
	if err != nil {
		return nil, fmt.Errorf("rtmp.listen: %w", err)
	}
	rawHTTP, err := net.Listen("tcp", addrs.HTTP)
	if err != nil {
		rawRTMP.Close()
		return nil, fmt.Errorf("http.listen: %w", err)
	}
	s := &Set{
		RTMP: limits.Listener("rtmp", rawRTMP, refuseRTMP),
		HTTP: limits.Listener("http", rawHTTP, connlimit.RefuseHTTP),
	}
	if h := addrs.HTTPS; h.Listen != "" {
		s.HTTPS, _, err = tlsfiles.Listen("https", h.Listen, h.CertFile, h.KeyFile, log,
			func(ln net.Listener) net.Listener { return limits.Listener("https", ln, connlimit.RefuseHTTP) })
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("https: %w", err)
		}
	}
	return s, nil
}

// Close closes every listener of the set.
func (s *Set) Close() {
	s.RTMP.Close()
	s.HTTP.Close()
	if s.HTTPS != nil {
		s.HTTPS.Close()
	}
}

// HTTPListeners returns the HTTP listener and, when configured, the HTTPS
// one, by name: one HTTP server serves both.
func (s *Set) HTTPListeners() map[string]net.Listener {
	m := map[string]net.Listener{"http": s.HTTP}
	if s.HTTPS != nil {
		m["https"] = s.HTTPS
	}
	return m
}
