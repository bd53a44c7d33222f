package publish

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv"
	"github.com/nareix/joy4/format/flv/flvio"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livecluster/livecluster/node/ocmclient"
	"github.com/livecluster/livecluster/node/proctest"
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

// Test media: ffmpeg-made FLVs, generated once per test binary.
var media struct {
	mu   sync.Mutex
	dir  string
	path map[string]string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if media.dir != "" {
		os.RemoveAll(media.dir)
	}
	os.Exit(code)
}

// testFLV returns 6 s of H.264 (GOP 30 at 30 fps) + AAC at size.
func testFLV(t *testing.T, size string) string {
	t.Helper()
	ffmpeg := proctest.Tool(t, "LIVECLUSTER_FFMPEG", "ffmpeg")
	media.mu.Lock()
	defer media.mu.Unlock()
	if p := media.path[size]; p != "" {
		return p
	}
	if media.dir == "" {
		dir, err := os.MkdirTemp("", "publish-test-")
		if err != nil {
			t.Fatal(err)
		}
		media.dir, media.path = dir, map[string]string{}
	}
	p := filepath.Join(media.dir, size+".flv")
	out, err := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size="+size+":rate=30", "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100",
		"-t", "6", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "500k", "-g", "30", "-keyint_min", "30",
		"-sc_threshold", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv", p).CombinedOutput()
	if err != nil {
		t.Fatalf("make test flv: %v: %s", err, out)
	}
	media.path[size] = p
	return p
}

type part struct {
	streams []av.CodecData
	pkts    []av.Packet
}

func readFLV(t *testing.T, path string) part {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := flv.NewDemuxer(f)
	streams, err := d.Streams()
	if err != nil {
		t.Fatal(err)
	}
	p := part{streams: streams}
	for {
		pkt, err := d.ReadPacket()
		if err != nil {
			return p
		}
		p.pkts = append(p.pkts, pkt)
	}
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

// stallFile makes path a file whose writes block, as on a hung NFS mount:
// a FIFO whose kernel buffer is already full, held open by the test (so
// opening it for writing does not wait, but the first write(2) does).
// resume drains it from then on. Both end at test cleanup.
func stallFile(t *testing.T, path string) (resume func()) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0) // a FIFO opened read-write never waits
	if err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := syscall.Write(fd, buf); err != nil {
			break // EAGAIN: the pipe is full
		}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() {
		close(stop)
		once.Do(func() { close(done) })
		<-done
		f.Close()
	})
	return func() {
		once.Do(func() {
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := syscall.Read(fd, buf); err != nil {
						time.Sleep(2 * time.Millisecond) // EAGAIN: drained for now
					}
				}
			}()
		})
	}
}
