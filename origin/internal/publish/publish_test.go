package publish

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/codec/h264parser"

	"github.com/livecluster/livecluster/media/hls"
	"github.com/livecluster/livecluster/media/httpflv"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/media/stream"
	"github.com/livecluster/livecluster/node/ocmclient"
	"github.com/livecluster/livecluster/node/proctest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"

	"github.com/livecluster/livecluster/origin/internal/clients"
	"github.com/livecluster/livecluster/origin/internal/owner"
)

type fixture struct {
	ocm     *fakeOCM
	owner   *owner.Manager
	hubs    *hub.Registry
	clients *clients.Registry
	hlsDir  string
	s       *Sessions
}

var ocmSession = ocmclient.Session{NodeID: "origin-0", LeaseID: 7}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{ocm: &fakeOCM{}, hubs: hub.NewRegistry(hub.Config{}), clients: clients.New(), hlsDir: t.TempDir()}
	api := startOCM(t, f.ocm)
	f.owner = owner.New(owner.Options{
		OCM: api, NodeID: ocmSession.NodeID, Session: func() (ocmclient.Session, bool) { return ocmSession, true },
		Timeout: func() time.Duration { return 2 * time.Second },
	})
	m, err := hls.New(hls.Config{Dir: f.hlsDir, Fragment: time.Second, Window: 20, Dispose: time.Hour, Clock: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.s = New(ctx, Options{Hubs: f.hubs, Owner: f.owner, Clients: f.clients, HLS: m})
	t.Cleanup(func() {
		cancel()
		f.hubs.Close()
		// HLS writers finish in the background after their publish ended:
		// wait for them, as the origin does before it exits, so none writes
		// into the test's directory while it is removed.
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		if err := f.s.WaitHLS(wctx); err != nil {
			t.Error(err)
		}
		m.Close()
	})
	return f
}

var key = streamkey.Key{Vhost: streamkey.DefaultVhost, App: "live", Name: "s"}

// pipeSource is a real FLV source the test feeds: what an ingest adapter
// hands the session.
func pipeSource(t *testing.T, b []byte) (*httpflv.Conn, *io.PipeWriter) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write(b[:13]) }()
	src, err := httpflv.NewReader(pr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = pw.Write(b[13:]) }()
	t.Cleanup(func() { pw.Close() })
	return src, pw
}

// serve runs f.s.Serve in the background.
func (f *fixture) serve(req Request, src stream.Source) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f.s.Serve(context.Background(), req, src) }()
	return done
}

func wait(t *testing.T, done <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		t.Fatalf("publish session did not end within %v", within)
		return nil
	}
}

func (f *fixture) packetsIn() int64 {
	if h := f.hubs.Get(key.String()); h != nil {
		return h.Stats().PacketsIn
	}
	return 0
}

// The whole session: claimed before anything is read, the hub and HLS fed,
// the API listing, and at the end of the source the hub closed, the claim
// released with its epoch and the playlist ended.
func TestPublishClaimFeedRelease(t *testing.T) {
	f := newFixture(t)
	a := readFLV(t, mediatest.TestFLVSized(t, "320x240"))
	b, _ := flvBytes(t, true, 0, a)
	src, pw := pipeSource(t, b[:len(b)/2])
	done := f.serve(Request{Key: key, Path: ocmv1.PublishPath_PUBLISH_PATH_FORWARDED, ForwardedBy: "edge-1", Protocol: "flv"}, src)
	waitFor(t, "packets in the hub", 5*time.Second, func() bool { return f.packetsIn() > 100 })
	claims, _, _ := f.ocm.counts()
	if claims != 1 || f.ocm.claims[0].GetPublishPath() != ocmv1.PublishPath_PUBLISH_PATH_FORWARDED || f.ocm.claims[0].GetForwardedBy() != "edge-1" {
		t.Fatalf("claims at the OCM: %v", f.ocm.claims)
	}
	list := f.s.List()
	if len(list) != 1 || list[0].Claim.Epoch() != 1 || len(list[0].Streams) != 2 || f.s.PublisherOf(key) != list[0].ID {
		t.Fatalf("sessions list %+v", list)
	}
	if pubs, _ := f.clients.Counts(); pubs != 1 {
		t.Fatalf("%d publishers registered, want 1", pubs)
	}
	pw.Close() // the publisher ends the stream
	if err := wait(t, done, 5*time.Second); err != nil {
		t.Fatalf("Serve at the end of the stream: %v, want nil", err)
	}
	waitFor(t, "release at the OCM", 5*time.Second, func() bool { _, r, _ := f.ocm.counts(); return r == 1 })
	if _, _, rel := f.ocm.counts(); rel.GetEpoch() != 1 || rel.GetLeaseId() != ocmSession.LeaseID {
		t.Fatalf("release %v, want epoch 1 on lease %d", rel, ocmSession.LeaseID)
	}
	if f.hubs.Get(key.String()) != nil || f.s.Len() != 0 || f.clients.Len() != 0 {
		t.Fatalf("after the end: hub %v, sessions %d, clients %d", f.hubs.Get(key.String()), f.s.Len(), f.clients.Len())
	}
	if err := f.s.WaitHLS(context.Background()); err != nil {
		t.Fatal(err)
	}
	pl, err := os.ReadFile(filepath.Join(f.hlsDir, "live", "s.m3u8"))
	if err != nil || !strings.Contains(string(pl), "#EXT-X-ENDLIST") {
		t.Fatalf("playlist after the end: %v\n%s", err, pl)
	}
}

// countingSource tells whether the session read anything.
type countingSource struct {
	stream.Source
	reads int
}

func (c *countingSource) Streams() ([]av.CodecData, error) {
	c.reads++
	return c.Source.Streams()
}

// A stream owned by another origin is refused before anything is read from
// the publisher, and leaves nothing behind.
func TestPublishRefusedWhenOwnedElsewhere(t *testing.T) {
	f := newFixture(t)
	f.ocm.setOwner(key.String(), "origin-9")
	a := readFLV(t, mediatest.TestFLVSized(t, "320x240"))
	b, _ := flvBytes(t, true, 0, a)
	src, _ := pipeSource(t, b)
	cs := &countingSource{Source: src}
	err := wait(t, f.serve(Request{Key: key, Protocol: "flv"}, cs), 5*time.Second)
	var refused *owner.Refused
	if !errors.As(err, &refused) || refused.Result != owner.ResultOwnedElsewhere || !strings.Contains(err.Error(), "origin-9") {
		t.Fatalf("Serve: %v, want a refusal naming origin-9", err)
	}
	if cs.reads != 0 {
		t.Fatal("the publisher was read (accepted) although the claim was refused")
	}
	if f.hubs.Get(key.String()) != nil || f.clients.Len() != 0 {
		t.Fatal("a refused publish left a hub or a client behind")
	}
	if _, r, _ := f.ocm.counts(); r != 0 {
		t.Fatalf("%d releases for a stream never owned", r)
	}
}

// A source that fails mid-stream ends the session with that error; the
// claim is released and the hub closed (its players end).
func TestPublishSourceErrorMidStream(t *testing.T) {
	f := newFixture(t)
	a := readFLV(t, mediatest.TestFLVSized(t, "320x240"))
	b, _ := flvBytes(t, true, 0, a)
	src, pw := pipeSource(t, b[:len(b)/3])
	done := f.serve(Request{Key: key, Protocol: "flv"}, src)
	waitFor(t, "packets in the hub", 5*time.Second, func() bool { return f.packetsIn() > 50 })
	h := f.hubs.Get(key.String())
	rd, err := h.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	reset := errors.New("connection reset by the publisher's network")
	pw.CloseWithError(reset)
	if err := wait(t, done, 5*time.Second); !errors.Is(err, reset) {
		t.Fatalf("Serve: %v, want the source's error", err)
	}
	waitFor(t, "release at the OCM", 5*time.Second, func() bool { _, r, _ := f.ocm.counts(); return r == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		if _, err := rd.Next(ctx); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("player of the ended stream: %v, want io.EOF", err)
			}
			break
		}
	}
}

// When the stream is found owned by another origin after a lease loss
// (re-claim refused), the session lets its publisher go at once with the
// reason, and does not release a claim that is no longer its own.
func TestPublishOwnershipLost(t *testing.T) {
	f := newFixture(t)
	a := readFLV(t, mediatest.TestFLVSized(t, "320x240"))
	b, _ := flvBytes(t, true, 0, a)
	src, pw := pipeSource(t, b[:len(b)/3])
	done := f.serve(Request{Key: key, Protocol: "flv"}, src)
	waitFor(t, "packets in the hub", 5*time.Second, func() bool { return f.packetsIn() > 50 })
	// The lease expired and origin-9 claimed the stream meanwhile.
	f.ocm.setOwner(key.String(), "origin-9")
	f.owner.Reclaim(context.Background(), ocmclient.Session{NodeID: ocmSession.NodeID, LeaseID: 8})
	err := wait(t, done, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "origin-9") {
		t.Fatalf("Serve after the ownership was lost: %v, want the reason naming origin-9", err)
	}
	if _, werr := pw.Write(b[len(b)/3:]); !errors.Is(werr, io.ErrClosedPipe) {
		t.Fatalf("the publisher's connection was not closed: write %v", werr)
	}
	time.Sleep(100 * time.Millisecond) // a release would be sent right away
	if _, r, _ := f.ocm.counts(); r != 0 {
		t.Fatalf("released a stream now owned by origin-9 (%d releases)", r)
	}
}

// A kick through the clients API ends the session with the kick's cause.
func TestPublishKicked(t *testing.T) {
	f := newFixture(t)
	a := readFLV(t, mediatest.TestFLVSized(t, "320x240"))
	b, _ := flvBytes(t, true, 0, a)
	src, _ := pipeSource(t, b[:len(b)/3])
	done := f.serve(Request{Key: key, Protocol: "flv"}, src)
	waitFor(t, "packets in the hub", 5*time.Second, func() bool { return f.packetsIn() > 50 })
	if !f.clients.Kick(f.s.PublisherOf(key), clients.ErrKicked) {
		t.Fatal("publisher not found in the clients registry")
	}
	if err := wait(t, done, 5*time.Second); !errors.Is(err, clients.ErrKicked) {
		t.Fatalf("Serve after a kick: %v, want clients.ErrKicked", err)
	}
}

// A codec change while the HLS volume is stalled: ingest keeps flowing (the
// hub gets every packet at once), and when the volume recovers HLS goes on
// with the new codecs from a keyframe after a discontinuity.
func TestCodecChangeWithStalledHLS(t *testing.T) {
	f := newFixture(t)
	if err := os.MkdirAll(filepath.Join(f.hlsDir, "live"), 0o755); err != nil {
		t.Fatal(err)
	}
	resume := mediatest.StallFile(t, filepath.Join(f.hlsDir, "live", "s-0.ts"))
	a := readFLV(t, mediatest.TestFLVSized(t, "320x240"))
	bb := readFLV(t, mediatest.TestFLVSized(t, "640x360"))
	first := part{streams: bb.streams, pkts: bb.pkts[:len(bb.pkts)/2]}
	for len(first.pkts) < len(bb.pkts) && !(bb.streams[bb.pkts[len(first.pkts)].Idx].Type().IsVideo() && bb.pkts[len(first.pkts)].IsKeyFrame) {
		first.pkts = bb.pkts[:len(first.pkts)+1]
	}
	rest := part{streams: bb.streams, pkts: bb.pkts[len(first.pkts):]}
	stalled, base := flvBytes(t, true, 0, a, first)
	src, pw := pipeSource(t, stalled)
	done := f.serve(Request{Key: key, Protocol: "flv"}, src)

	want := int64(len(a.pkts) + len(first.pkts))
	start := time.Now()
	waitFor(t, "ingest to go on across the codec change with the volume stalled", 5*time.Second,
		func() bool { return f.packetsIn() == want })
	t.Logf("%d packets and a codec change ingested in %v with the HLS volume stalled", want, time.Since(start))
	if l := f.s.List(); len(l) != 1 || videoWidth(l[0].Streams) != 640 {
		t.Fatal("the session does not list the new codecs")
	}

	// The volume recovers; the rest of the stream follows GOP by GOP.
	resume()
	// GOP by GOP, as a live publisher sends them, so the only HLS drops
	// are the stall's.
	for len(rest.pkts) > 0 {
		n := 1
		for n < len(rest.pkts) && !(rest.streams[rest.pkts[n].Idx].Type().IsVideo() && rest.pkts[n].IsKeyFrame) {
			n++
		}
		var gop []byte
		gop, base = flvBytes(t, false, base, part{streams: rest.streams, pkts: rest.pkts[:n]})
		if _, err := pw.Write(gop); err != nil {
			t.Fatal(err)
		}
		rest.pkts = rest.pkts[n:]
		time.Sleep(100 * time.Millisecond)
	}
	pw.Close()
	if err := wait(t, done, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.s.WaitHLS(wctx); err != nil {
		t.Fatal(err)
	}
	pl, _ := os.ReadFile(filepath.Join(f.hlsDir, "live", "s.m3u8"))
	_, after, ok := strings.Cut(string(pl), "#EXT-X-DISCONTINUITY\n")
	var segs []string
	for _, l := range strings.Split(after, "\n") {
		if strings.HasSuffix(l, ".ts") {
			segs = append(segs, l)
		}
	}
	if !ok || len(segs) < 2 {
		t.Fatalf("want a discontinuity and the new codecs' segments after it:\n%s", pl)
	}
	ffprobe := proctest.Tool(t, "LIVECLUSTER_FFPROBE", "ffprobe")
	for _, seg := range segs {
		p := filepath.Join(f.hlsDir, "live", seg)
		out, err := exec.Command(ffprobe, "-v", "error", "-select_streams", "v", "-show_entries", "stream=width", "-of", "csv=p=0", p).CombinedOutput()
		if w := strings.Fields(string(out)); err != nil || len(w) == 0 || w[0] != "640" {
			t.Fatalf("segment %s: %v %s, want width 640", seg, err, out)
		}
	}
}

func videoWidth(streams []av.CodecData) int {
	for _, c := range streams {
		if v, ok := c.(h264parser.CodecData); ok {
			return v.Width()
		}
	}
	return 0
}
