// Package edgetest holds what the edge's unit tests run against: an OCM at
// the gRPC edge (an in-process gRPC server answering from a table the test
// sets), origins made of the real media parts (RTMP and HTTP-FLV servers
// over hubs, fed with ffmpeg-made FLV), and a TCP listener that accepts and
// never answers (an origin that hangs). Only tests import it.
package edgetest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/media/httpflv"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/media/rtmp"
	"github.com/livecluster/livecluster/media/stream"
	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

// OCM answers LookupStream, WatchStreams, AssignOrigin and ListNodes from
// tables the test sets; Set pushes a PUT (or DELETE) to the open watches.
type OCM struct {
	ocmv1.UnimplementedOCMServiceServer

	mu      sync.Mutex
	streams map[string]*ocmv1.Stream
	nodes   map[string]*ocmv1.Node
	watches map[chan *ocmv1.WatchStreamsResponse]struct{}
	// Assign, when set, answers AssignOrigin.
	assign  func(*ocmv1.AssignOriginRequest) (*ocmv1.Node, error)
	assigns int
}

// StartOCM serves an OCM on a loopback port and returns an edge's typed
// client of it (not started), closed at cleanup.
func StartOCM(t testing.TB) (*OCM, *ocmclient.Client) {
	t.Helper()
	o := &OCM{streams: map[string]*ocmv1.Stream{}, nodes: map[string]*ocmv1.Node{},
		watches: map[chan *ocmv1.WatchStreamsResponse]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ocmv1.RegisterOCMServiceServer(srv, o)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	c, err := ocmclient.New(ocmclient.Options{Address: ln.Addr().String(), Node: &ocmv1.Node{
		Id: "edge-1", Role: ocmv1.NodeRole_NODE_ROLE_EDGE,
		Addresses: &ocmv1.NodeAddresses{Rtmp: "edge-1:1935", Http: "edge-1:8080"},
	}, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return o, c
}

// Node records an origin node (its addresses and state).
func (o *OCM) Node(n *ocmv1.Node) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.nodes[n.GetId()] = n
}

// Set makes node the owner of key at epoch ("" frees it) and tells the
// watches.
func (o *OCM) Set(key streamkey.Key, node string, epoch int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	pk := ocmv1.NewStreamKey(key)
	ev := &ocmv1.WatchStreamsResponse{Type: ocmv1.WatchStreamsResponse_EVENT_TYPE_DELETE}
	if node == "" {
		ev.Stream = o.streams[key.String()]
		delete(o.streams, key.String())
		if ev.Stream == nil {
			return
		}
	} else {
		st := &ocmv1.Stream{Key: pk, OwnerNodeId: node, Epoch: epoch}
		o.streams[key.String()] = st
		ev = &ocmv1.WatchStreamsResponse{Type: ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT, Stream: st, Owner: o.nodes[node]}
	}
	for w := range o.watches {
		select {
		case w <- ev:
		default:
		}
	}
}

// AssignWith sets how AssignOrigin answers.
func (o *OCM) AssignWith(f func(*ocmv1.AssignOriginRequest) (*ocmv1.Node, error)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.assign = f
}

// Assigns is the number of AssignOrigin calls.
func (o *OCM) Assigns() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.assigns
}

func (o *OCM) LookupStream(_ context.Context, r *ocmv1.LookupStreamRequest) (*ocmv1.LookupStreamResponse, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.streams[r.GetKey().KeyString()]
	if st == nil {
		return nil, status.Error(codes.NotFound, "stream not published")
	}
	return &ocmv1.LookupStreamResponse{Stream: st, Owner: o.nodes[st.GetOwnerNodeId()]}, nil
}

func (o *OCM) WatchStreams(r *ocmv1.WatchStreamsRequest, ws grpc.ServerStreamingServer[ocmv1.WatchStreamsResponse]) error {
	ch := make(chan *ocmv1.WatchStreamsResponse, 64)
	o.mu.Lock()
	want := map[string]bool{}
	var initial []*ocmv1.WatchStreamsResponse
	for _, k := range r.GetKeys() {
		want[k.KeyString()] = true
		if st := o.streams[k.KeyString()]; st != nil && r.GetInitialState() {
			initial = append(initial, &ocmv1.WatchStreamsResponse{Type: ocmv1.WatchStreamsResponse_EVENT_TYPE_PUT,
				Stream: st, Owner: o.nodes[st.GetOwnerNodeId()]})
		}
	}
	o.watches[ch] = struct{}{}
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		delete(o.watches, ch)
		o.mu.Unlock()
	}()
	for _, ev := range initial {
		if err := ws.Send(ev); err != nil {
			return err
		}
	}
	if err := ws.Send(&ocmv1.WatchStreamsResponse{Type: ocmv1.WatchStreamsResponse_EVENT_TYPE_SYNCED}); err != nil {
		return err
	}
	for {
		select {
		case <-ws.Context().Done():
			return nil
		case ev := <-ch:
			if !want[ev.GetStream().GetKey().KeyString()] {
				continue
			}
			if err := ws.Send(ev); err != nil {
				return err
			}
		}
	}
}

func (o *OCM) AssignOrigin(_ context.Context, r *ocmv1.AssignOriginRequest) (*ocmv1.AssignOriginResponse, error) {
	o.mu.Lock()
	o.assigns++
	f := o.assign
	o.mu.Unlock()
	if f == nil {
		return nil, status.Error(codes.Unavailable, "no origin")
	}
	n, err := f(r)
	if err != nil {
		return nil, err
	}
	return &ocmv1.AssignOriginResponse{Origin: n}, nil
}

func (o *OCM) ListNodes(context.Context, *ocmv1.ListNodesRequest) (*ocmv1.ListNodesResponse, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	resp := &ocmv1.ListNodesResponse{}
	for _, n := range o.nodes {
		resp.Nodes = append(resp.Nodes, n)
	}
	return resp, nil
}

// Origin is an in-process origin of real media parts: an RTMP server whose
// publishes go into hubs (PublishHook may refuse them) and whose plays, like
// its HTTP-FLV server's, come from them.
type Origin struct {
	ID   string
	Hubs *hub.Registry
	// Refuse, when set, refuses publishes with this error.
	Refuse error

	mu        sync.Mutex
	published []string // keys published, in order
	cancel    context.CancelFunc
	done      chan struct{}
	rtmpAddr  string
	httpAddr  string
	kick      context.CancelCauseFunc // of the running publish
}

// StartOrigin starts an origin on loopback ports; it stops at cleanup.
func StartOrigin(t testing.TB, id string) *Origin {
	t.Helper()
	o := &Origin{ID: id, Hubs: hub.NewRegistry(hub.Config{}), done: make(chan struct{})}
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.rtmpAddr, o.httpAddr = rl.Addr().String(), hl.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	o.cancel = cancel
	hs := &http.Server{Handler: &httpflv.Handler{Lookup: func(_ context.Context, k streamkey.Key) (*hub.Hub, error) {
		if h := o.Hubs.Get(k.String()); h != nil && h.Publishing() {
			return h, nil
		}
		return nil, httpflv.ErrNotFound
	}}}
	go func() { _ = hs.Serve(hl) }()
	go func() {
		defer close(o.done)
		_ = (&rtmp.Server{Handler: o}).Serve(ctx, rl)
	}()
	t.Cleanup(func() { o.Stop() })
	t.Cleanup(func() { hs.Close() })
	return o
}

// Stop closes the origin's connections and listeners (it "dies").
func (o *Origin) Stop() {
	o.cancel()
	o.Hubs.Close()
	<-o.done
}

// Node is the origin's node record.
func (o *Origin) Node(state ocmv1.NodeState) *ocmv1.Node {
	return &ocmv1.Node{Id: o.ID, Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN, State: state,
		Addresses: &ocmv1.NodeAddresses{Rtmp: o.rtmpAddr, Http: o.httpAddr}}
}

// Published returns the keys published to the origin so far.
func (o *Origin) Published() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.published...)
}

// KickPublisher ends the running publish with err, as an origin that
// drains or lost the stream does.
func (o *Origin) KickPublisher(err error) {
	o.mu.Lock()
	k := o.kick
	o.mu.Unlock()
	if k != nil {
		k(err)
	}
}

// ServePublish implements rtmp.Handler.
func (o *Origin) ServePublish(ctx context.Context, c *rtmp.Conn) error {
	if o.Refuse != nil {
		return o.Refuse
	}
	k, _ := c.Request().Key()
	h, _, err := o.Hubs.GetOrCreate(k.String())
	if err != nil {
		return err
	}
	defer h.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	o.mu.Lock()
	o.published = append(o.published, k.String())
	o.kick = cancel
	o.mu.Unlock()
	p, err := stream.Start(h, c, stream.Options{})
	if err != nil {
		return err
	}
	err = p.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// ServePlay implements rtmp.Handler.
func (o *Origin) ServePlay(ctx context.Context, c *rtmp.Conn) error {
	k, _ := c.Request().Key()
	h := o.Hubs.Get(k.String())
	if h == nil || !h.Publishing() {
		return &rtmp.StatusError{Code: "NetStream.Play.StreamNotFound", Description: "not here"}
	}
	rd, err := h.NewReader()
	if err != nil {
		return err
	}
	defer rd.Close()
	if err := c.Accept(); err != nil {
		return err
	}
	return rd.CopyWire(ctx, c, c.WriteWire)
}

// Feed publishes the test FLV into the origin's hub of key in real time,
// looping, until the test ends or Stop. It returns the hub.
func (o *Origin) Feed(t testing.TB, key streamkey.Key) *hub.Hub {
	t.Helper()
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	h, _, err := o.Hubs.GetOrCreate(key.String())
	if err != nil {
		t.Fatal(err)
	}
	src, err := h.Publish(streams, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		var base time.Duration
		for {
			for _, p := range pkts {
				p.Time += base
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(start.Add(p.Time))):
				}
				if src.WritePacket(p) != nil {
					return
				}
			}
			base += pkts[len(pkts)-1].Time + 33*time.Millisecond
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// Blackhole is a TCP listener that accepts and never says anything: an
// origin that hangs. It returns the address.
func Blackhole(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// Cleanup removes the generated media; call from TestMain.
func Cleanup() { mediatest.Cleanup() }

// FLVSource is a publisher's connection as the edge sees it: the test FLV
// in real time through a pipe, looping, until the test ends. Close ends it
// as a leaving publisher does.
func FLVSource(t testing.TB) (*httpflv.Conn, *io.PipeWriter) {
	t.Helper()
	f, err := os.Open(mediatest.TestFLV(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// One pass is 6 s: enough for the tests, which end it earlier.
		if _, err := pw.Write(b[:13]); err != nil {
			return
		}
		rest := b[13:]
		chunk := len(rest) / 60 // ~100 ms each
		for len(rest) > 0 {
			n := min(chunk, len(rest))
			if _, err := pw.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); pw.Close(); <-done })
	src, err := httpflv.NewReader(pr)
	if err != nil {
		t.Fatal(err)
	}
	return src, pw
}

// WaitFor polls cond every 10 ms until it holds or within passes.
func WaitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
