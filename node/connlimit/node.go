package connlimit

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livecluster/livecluster/node/config"
)

// Node applies a data-plane node's `limits` section (origin and edge
// alike): it wraps the listeners, builds the HTTP server's deadlines and
// counts players per stream and publishes. Every cap is read from limits()
// when it is checked, so a reload applies to the next client.
type Node struct {
	Metrics *Metrics
	limits  func() config.Limits
	players *Counter
	streams *Counter
}

// NewNode registers the limiter's metrics on reg.
func NewNode(reg prometheus.Registerer, limits func() config.Limits) *Node {
	return &Node{Metrics: NewMetrics(reg), limits: limits, players: NewCounter(), streams: NewCounter()}
}

// Listener wraps ln (named "rtmp" or "http") with limits.maxConns and
// limits.maxConnsPerIP; refuse answers a refused client (RefuseHTTP,
// rtmp.Server.Refuse).
func (n *Node) Listener(name string, ln net.Listener, refuse func(context.Context, net.Conn, error)) *Listener {
	return Wrap(ln, Options{
		Name: name, Metrics: n.Metrics, Refuse: refuse,
		Limits: func() Limits {
			l := n.limits()
			return Limits{MaxConns: l.MaxConns, MaxConnsPerIP: l.MaxConnsPerIP}
		},
	})
}

// HTTPServer returns an http.Server for a data-plane listener wrapped by
// Listener("http", ...): header and idle deadlines from limits.timeouts
// (read at call time: restart-only), the timeouts counted.
func (n *Node) HTTPServer(h http.Handler, errLog *log.Logger) *http.Server {
	t := n.limits().Timeouts
	return &http.Server{
		Handler: h, ErrorLog: errLog,
		ReadHeaderTimeout: t.HTTPReadHeader.D(),
		IdleTimeout:       t.HTTPIdle.D(),
		ConnState:         HTTPTimeouts(n.Metrics, "http"),
	}
}

// MaxPlayersError and MaxStreamsError are the refusals of AcquirePlayer
// and AcquireStream; their text is what the client is told.
type MaxPlayersError struct {
	Stream string
	Max    int
}

func (e *MaxPlayersError) Error() string {
	return fmt.Sprintf("stream %s has the most players this server allows (%d)", e.Stream, e.Max)
}

type MaxStreamsError struct{ Max int }

func (e *MaxStreamsError) Error() string {
	return fmt.Sprintf("this server has the most streams it allows (%d), publish elsewhere", e.Max)
}

// AcquirePlayer takes a player slot of stream (limits.maxPlayersPerStream),
// listener naming the protocol for the metric. It returns the release
// function, or a *MaxPlayersError and counts the refusal.
func (n *Node) AcquirePlayer(listener, stream string) (func(), error) {
	max := n.limits().MaxPlayersPerStream
	rel, ok := n.players.Acquire(stream, max)
	if !ok {
		n.Metrics.Rejected(listener, ReasonMaxPlayers)
		return nil, &MaxPlayersError{Stream: stream, Max: max}
	}
	return rel, nil
}

// AcquireStream takes one of the node's publish slots (limits.maxStreams).
// It returns the release function, or a *MaxStreamsError and counts the
// refusal.
func (n *Node) AcquireStream(listener string) (func(), error) {
	max := n.limits().MaxStreams
	rel, ok := n.streams.Acquire("", max)
	if !ok {
		n.Metrics.Rejected(listener, ReasonMaxStreams)
		return nil, &MaxStreamsError{Max: max}
	}
	return rel, nil
}
