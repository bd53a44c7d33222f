package publish

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv"
	"github.com/nareix/joy4/format/flv/flvio"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/node/ocmclient"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
)

// fakeOCM is the OCM at the gRPC edge of the origin's owner code: an
// in-process gRPC server that answers claims from its own ownership table.
type fakeOCM struct {
	ocmv1.UnimplementedOCMServiceServer

	mu       sync.Mutex
	owners   map[string]*ocmv1.Stream // key -> record
	epoch    int64
	claims   []*ocmv1.ClaimStreamRequest
	releases []*ocmv1.ReleaseStreamRequest
}

func keyOf(k *ocmv1.StreamKey) string { return k.GetVhost() + "/" + k.GetApp() + "/" + k.GetName() }

func (f *fakeOCM) ClaimStream(_ context.Context, r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims = append(f.claims, r)
	if cur := f.owners[keyOf(r.GetKey())]; cur != nil {
		st, _ := status.New(codes.AlreadyExists, "stream is owned by node "+cur.GetOwnerNodeId()).WithDetails(cur)
		return nil, st.Err()
	}
	f.epoch++
	rec := &ocmv1.Stream{Key: r.GetKey(), OwnerNodeId: r.GetNodeId(), Epoch: f.epoch, PublishPath: r.GetPublishPath(), ForwardedBy: r.GetForwardedBy()}
	f.owners[keyOf(r.GetKey())] = rec
	return &ocmv1.ClaimStreamResponse{Stream: rec}, nil
}

func (f *fakeOCM) ReleaseStream(_ context.Context, r *ocmv1.ReleaseStreamRequest) (*ocmv1.ReleaseStreamResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releases = append(f.releases, r)
	cur := f.owners[keyOf(r.GetKey())]
	if cur == nil || cur.GetEpoch() != r.GetEpoch() {
		return nil, status.Error(codes.FailedPrecondition, "stale epoch")
	}
	delete(f.owners, keyOf(r.GetKey()))
	return &ocmv1.ReleaseStreamResponse{}, nil
}

// setOwner makes another node own key (as after a lease loss).
func (f *fakeOCM) setOwner(key, node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch++
	k, _ := splitKey(key)
	f.owners[key] = &ocmv1.Stream{Key: k, OwnerNodeId: node, Epoch: f.epoch}
}

func splitKey(key string) (*ocmv1.StreamKey, error) {
	p := strings.SplitN(key, "/", 3)
	return &ocmv1.StreamKey{Vhost: p[0], App: p[1], Name: p[2]}, nil
}

func (f *fakeOCM) counts() (claims, releases int, last *ocmv1.ReleaseStreamRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.releases) > 0 {
		last = f.releases[len(f.releases)-1]
	}
	return len(f.claims), len(f.releases), last
}

// startOCM serves f on a loopback port and returns the node's typed client
// of it (not started: the tests give the session themselves).
func startOCM(t *testing.T, f *fakeOCM) *ocmclient.Client {
	t.Helper()
	f.owners = map[string]*ocmv1.Stream{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ocmv1.RegisterOCMServiceServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	c, err := ocmclient.New(ocmclient.Options{Address: ln.Addr().String(), Node: &ocmv1.Node{
		Id: "origin-0", Role: ocmv1.NodeRole_NODE_ROLE_ORIGIN,
		Addresses: &ocmv1.NodeAddresses{Rtmp: "origin-0:1935", Http: "origin-0:8080"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestMain(m *testing.M) { mediatest.Main(m) }

// part is one encoder configuration's codecs and packets.
type part struct {
	streams []av.CodecData
	pkts    []av.Packet
}

// readFLV demuxes a test FLV (mediatest.TestFLVSized) into a part.
func readFLV(t *testing.T, path string) part {
	t.Helper()
	streams, pkts := mediatest.ReadFLV(t, path)
	return part{streams: streams, pkts: pkts}
}

// flvBytes serializes parts as one FLV byte stream, each part with its own
// sequence headers (a codec change between parts), on one timeline. With
// fileHeader false it continues a stream already started.
func flvBytes(t *testing.T, fileHeader bool, base time.Duration, parts ...part) ([]byte, time.Duration) {
	t.Helper()
	var b bytes.Buffer
	if fileHeader {
		h := make([]byte, flvio.FileHeaderLength+4)
		flvio.FillFileHeader(h, flvio.FILE_HAS_AUDIO|flvio.FILE_HAS_VIDEO)
		b.Write(h)
	}
	buf := make([]byte, 256)
	for _, p := range parts {
		for _, c := range p.streams {
			tag, ok, err := flv.CodecDataToTag(c)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				if err := flvio.WriteTag(&b, tag, flvio.TimeToTs(base), buf); err != nil {
					t.Fatal(err)
				}
			}
		}
		var last time.Duration
		for _, pkt := range p.pkts {
			pkt.Time += base
			last = max(last, pkt.Time)
			tag, ts := flv.PacketToTag(pkt, p.streams[pkt.Idx])
			if err := flvio.WriteTag(&b, tag, ts, buf); err != nil {
				t.Fatal(err)
			}
		}
		base = last + 40*time.Millisecond
	}
	return b.Bytes(), base
}

// waitFor polls cond every 10 ms until it holds or within passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
