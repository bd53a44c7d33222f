package forward

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nareix/joy4/av"

	"github.com/livecluster/livecluster/edge/internal/edgetest"
	"github.com/livecluster/livecluster/media/httpflv"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

func TestMain(m *testing.M) {
	code := m.Run()
	edgetest.Cleanup()
	os.Exit(code)
}

var key = streamkey.Key{Vhost: streamkey.DefaultVhost, App: "live", Name: "s"}

func newForwarder(t *testing.T, api *ocmclient.Client, st Settings) *Forwarder {
	t.Helper()
	f := New(Options{OCM: api, NodeID: "edge-1", Settings: func() Settings { return st }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

// assignFrom answers AssignOrigin with the first origin not excluded.
func assignFrom(origins ...*edgetest.Origin) func(*ocmv1.AssignOriginRequest) (*ocmv1.Node, error) {
	return func(r *ocmv1.AssignOriginRequest) (*ocmv1.Node, error) {
		for _, o := range origins {
			if !slices.Contains(r.GetExcludeNodeIds(), o.ID) {
				return o.Node(ocmv1.NodeState_NODE_STATE_READY), nil
			}
		}
		return nil, errors.New("no origin left")
	}
}

func serve(f *Forwarder, src *countingSource) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f.Serve(context.Background(), key, "127.0.0.1:1", src) }()
	return done
}

func wait(t *testing.T, done <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		t.Fatalf("forward did not end within %v", within)
		return nil
	}
}

// countingSource tells whether the forward read (accepted) the publisher.
type countingSource struct {
	*httpflv.Conn
	reads int
}

func source(t *testing.T) (*countingSource, *io.PipeWriter) {
	src, pw := edgetest.FLVSource(t)
	return &countingSource{Conn: src}, pw
}

func (c *countingSource) Streams() ([]av.CodecData, error) {
	c.reads++
	return c.Conn.Streams()
}

// An origin's refusal reaches the publisher as the origin's own status,
// before the publisher was read.
func TestRefusedByOrigin(t *testing.T) {
	ocm, api := edgetest.StartOCM(t)
	o := edgetest.StartOrigin(t, "origin-a")
	o.Refuse = &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: "stream default/live/s is already published on origin origin-z"}
	ocm.AssignWith(assignFrom(o))
	f := newForwarder(t, api, Settings{})
	src, _ := source(t)
	err := wait(t, serve(f, src), 10*time.Second)
	var refused *Refused
	var se *rtmp.StatusError
	if !errors.As(err, &refused) || !errors.As(err, &se) || !strings.Contains(refused.Msg, "origin-z") {
		t.Fatalf("Serve: %v, want a *Refused carrying the origin's status", err)
	}
	if src.reads != 0 {
		t.Fatal("the publisher was accepted although the origin refused")
	}
}

// An origin that accepts TCP and then says nothing costs the dial timeout,
// not the RTMP handshake timeout (10 s).
func TestDialTimeout(t *testing.T) {
	ocm, api := edgetest.StartOCM(t)
	hung := edgetest.Blackhole(t)
	ocm.AssignWith(func(*ocmv1.AssignOriginRequest) (*ocmv1.Node, error) {
		return &ocmv1.Node{Id: "origin-hung", Addresses: &ocmv1.NodeAddresses{Rtmp: hung}}, nil
	})
	f := newForwarder(t, api, Settings{DialTimeout: 300 * time.Millisecond})
	src, _ := source(t)
	start := time.Now()
	err := wait(t, serve(f, src), 15*time.Second)
	took := time.Since(start)
	var refused *Refused
	if !errors.As(err, &refused) || !strings.Contains(refused.Err.Error(), "did not accept the publish within 300ms") {
		t.Fatalf("Serve: %v, want a refusal naming the dial timeout", err)
	}
	if took > 3*time.Second {
		t.Fatalf("the refusal took %v, want about the 300 ms dial timeout", took)
	}
}

// The forward target drains (the poll says so): the forward moves to
// another origin make-before-break, and the publisher notices nothing.
func TestMoveWhenTargetDrains(t *testing.T) {
	ocm, api := edgetest.StartOCM(t)
	a := edgetest.StartOrigin(t, "origin-a")
	b := edgetest.StartOrigin(t, "origin-b")
	ocm.Node(a.Node(ocmv1.NodeState_NODE_STATE_READY))
	ocm.Node(b.Node(ocmv1.NodeState_NODE_STATE_READY))
	ocm.AssignWith(assignFrom(a, b))
	f := newForwarder(t, api, Settings{PollInterval: 100 * time.Millisecond})
	src, pw := source(t)
	done := serve(f, src)
	edgetest.WaitFor(t, "the publish at origin-a", 5*time.Second, func() bool {
		h := a.Hubs.Get(key.String())
		return h != nil && h.Stats().PacketsIn > 30
	})

	ocm.Node(a.Node(ocmv1.NodeState_NODE_STATE_DRAINING))
	edgetest.WaitFor(t, "the publish at origin-b", 5*time.Second, func() bool {
		h := b.Hubs.Get(key.String())
		return h != nil && h.Stats().PacketsIn > 30
	})
	edgetest.WaitFor(t, "the leg to origin-a to close", 5*time.Second, func() bool { return a.Hubs.Get(key.String()) == nil })
	if l := f.List(); len(l) != 1 || l[0].Origin != "origin-b" || l[0].Moves != 1 {
		t.Fatalf("forwards %+v: want one, moved once to origin-b", l)
	}
	select {
	case err := <-done:
		t.Fatalf("the publisher was let go by the move: %v", err)
	default:
	}
	pw.Close() // the publisher leaves (mid-tag: the pipe cuts anywhere)
	if err := wait(t, done, 5*time.Second); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Serve after the publisher left: %v, want its end", err)
	}
	if f.Active() != 0 {
		t.Fatal("the forward is still listed")
	}
}

// The connection to the only origin breaks while that origin stays READY:
// the forward goes back to it, and the publisher stays. Before, the broken
// origin was excluded from AssignOrigin, no other was found, and a stream
// with a READY origin stayed unowned while its publisher was connected.
func TestBrokenLegReturnsToReadyOrigin(t *testing.T) {
	ocm, api := edgetest.StartOCM(t)
	a := edgetest.StartOrigin(t, "origin-a")
	ocm.Node(a.Node(ocmv1.NodeState_NODE_STATE_READY))
	ocm.AssignWith(assignFrom(a))
	f := newForwarder(t, api, Settings{RetryTimeout: 3 * time.Second, WaitTimeout: 500 * time.Millisecond})
	src, pw := source(t)
	done := serve(f, src)
	edgetest.WaitFor(t, "the publish at origin-a", 5*time.Second, func() bool {
		h := a.Hubs.Get(key.String())
		return h != nil && h.Stats().PacketsIn > 30
	})
	a.KickPublisher(errors.New("the leg broke"))
	edgetest.WaitFor(t, "the forward back at origin-a", 5*time.Second, func() bool {
		h := a.Hubs.Get(key.String())
		return len(a.Published()) == 2 && h != nil && h.Stats().PacketsIn > 30
	})
	// Past the retry timeout the publisher is still forwarded.
	time.Sleep(3500 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the publisher was let go: %v", err)
	default:
	}
	if l := f.List(); len(l) != 1 || l[0].Origin != "origin-a" {
		t.Fatalf("forwards %+v: want one, at origin-a", l)
	}
	pw.Close()
	wait(t, done, 5*time.Second)
}

// The connection to the origin breaks because the origin is gone, and no
// other origin takes the stream within the retry timeout: the publisher is
// let go with the reason.
func TestNoOriginLeft(t *testing.T) {
	ocm, api := edgetest.StartOCM(t)
	a := edgetest.StartOrigin(t, "origin-a")
	ocm.AssignWith(assignFrom(a))
	f := newForwarder(t, api, Settings{RetryTimeout: 500 * time.Millisecond, WaitTimeout: 200 * time.Millisecond})
	src, pw := source(t)
	done := serve(f, src)
	edgetest.WaitFor(t, "the publish at origin-a", 5*time.Second, func() bool {
		h := a.Hubs.Get(key.String())
		return h != nil && h.Stats().PacketsIn > 30
	})
	a.Stop()
	err := wait(t, done, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "origin lost and no other origin") {
		t.Fatalf("Serve: %v, want the forward's failure", err)
	}
	if _, werr := pw.Write(make([]byte, 64)); !errors.Is(werr, io.ErrClosedPipe) {
		t.Fatalf("the publisher's connection is still open: %v", werr)
	}
}
