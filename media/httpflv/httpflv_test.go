package httpflv_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nareix/joy4/av"
	"github.com/nareix/joy4/format/flv/flvio"

	"github.com/livecluster/livecluster/media/httpflv"
	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/streamkey"
)

func TestMain(m *testing.M) { mediatest.Main(m) }

type fixture struct {
	reg *hub.Registry
	srv *httptest.Server
}

func newFixture(t *testing.T, cfg hub.Config) *fixture {
	reg := hub.NewRegistry(cfg)
	h := &httpflv.Handler{Lookup: func(ctx context.Context, k streamkey.Key) (*hub.Hub, error) {
		if hb := reg.Get(k.String()); hb != nil {
			return hb, nil
		}
		return nil, httpflv.ErrNotFound
	}}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		reg.Close()
		srv.Close()
	})
	return &fixture{reg: reg, srv: srv}
}

// publish feeds the test FLV into hub key in real time until the test ends.
func (f *fixture) publish(t *testing.T, key string) (*hub.Hub, []av.Packet) {
	t.Helper()
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	hb, _, err := f.reg.GetOrCreate(key)
	if err != nil {
		t.Fatal(err)
	}
	src, err := hb.Publish(streams, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		mediatest.Feed(ctx, src, pkts, 1, 0)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return hb, pkts
}

func TestFFmpegAndProbe(t *testing.T) {
	if testing.Short() {
		t.Skip("ffmpeg test")
	}
	f := newFixture(t, hub.Config{})
	f.publish(t, "default/live/s")
	time.Sleep(1200 * time.Millisecond) // join in the middle of the second GOP
	url := f.srv.URL + "/live/s.flv"

	ffprobe := mediatest.Tool(t, "ffprobe")
	pr := mediatest.Start(t, "sh", "-c", ffprobe+" -v error -show_entries stream=codec_name -of csv=p=0 '"+url+"' >&2")
	if err := pr.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffprobe: %v %s", err, pr.Stderr.String())
	}
	if got := strings.Fields(pr.Stderr.String()); strings.Join(got, ",") != "h264,aac" {
		t.Fatalf("ffprobe streams %q, want h264,aac", got)
	}

	ffmpeg := mediatest.Tool(t, "ffmpeg")
	play := mediatest.Start(t, ffmpeg, "-v", "error", "-i", url, "-t", "3", "-enc_time_base:v", "-1", "-f", "null", "-")
	if err := play.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v %s", err, play.Stderr.String())
	}
	if s := play.Stderr.String(); s != "" {
		t.Fatalf("ffmpeg stderr: %s", s)
	}
}

// TestTagOrder checks the wire for players joining mid-GOP: FLV header,
// metadata, both sequence headers, then the latest keyframe before the join
// (the GOP cache's start, at its own timestamp) and nothing older, then the
// live stream.
func TestTagOrder(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	for _, cut := range []time.Duration{200 * time.Millisecond, 1450 * time.Millisecond, 2700 * time.Millisecond} {
		f := newFixture(t, hub.Config{})
		hb, _, _ := f.reg.GetOrCreate("default/live/s")
		src, err := hb.Publish(streams, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Write up to the join point; the latest keyframe before it is
		// where the player must start.
		var keyTS time.Duration = -1
		n := 0
		for _, p := range pkts {
			if p.Time >= cut {
				break
			}
			if streams[p.Idx].Type().IsVideo() && p.IsKeyFrame {
				keyTS = p.Time
			}
			if err := src.WritePacket(p); err != nil {
				t.Fatal(err)
			}
			n++
		}
		// A missing tag fails the test instead of hanging it.
		client := &http.Client{Timeout: 10 * time.Second}
		resp, err := client.Get(f.srv.URL + "/live/s.flv")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Content-Type") != "video/x-flv" {
			t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
		}
		br := bufio.NewReader(resp.Body)
		hdr := make([]byte, 13)
		if _, err := io.ReadFull(br, hdr); err != nil {
			t.Fatal(err)
		}
		if string(hdr[:3]) != "FLV" {
			t.Fatalf("no FLV header: %q", hdr)
		}
		// A packet after the join must arrive too: the player is live.
		live := pkts[n]
		if err := src.WritePacket(live); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		var order []string
		firstKey := time.Duration(-1)
		for {
			tag, ts, err := flvio.ReadTag(br, buf)
			if err != nil {
				t.Fatalf("cut %v: after %v: %v", cut, order, err)
			}
			at := time.Duration(ts) * time.Millisecond
			kind := ""
			switch {
			case tag.Type == flvio.TAG_SCRIPTDATA:
				kind = "meta"
			case tag.Type == flvio.TAG_VIDEO && tag.AVCPacketType == flvio.AVC_SEQHDR:
				kind = "vseq"
			case tag.Type == flvio.TAG_AUDIO && tag.AACPacketType == flvio.AAC_SEQHDR:
				kind = "aseq"
			case tag.Type == flvio.TAG_VIDEO && tag.FrameType == flvio.FRAME_KEY:
				kind = "key"
			case tag.Type == flvio.TAG_VIDEO:
				kind = "inter"
			default:
				kind = "audio"
			}
			order = append(order, kind)
			if kind == "key" && firstKey < 0 {
				firstKey = at
			}
			if len(order) > 3 && firstKey >= 0 && at < firstKey {
				t.Fatalf("cut %v: %s tag at %v after the keyframe at %v: older than the join's GOP", cut, kind, at, firstKey)
			}
			if at == live.Time.Truncate(time.Millisecond) && len(order) > 3 && kind != "meta" {
				break // the live packet arrived
			}
		}
		resp.Body.Close()
		got := strings.Join(order, ",")
		firstVideo := ""
		for _, o := range order[3:] {
			if o == "key" || o == "inter" {
				firstVideo = o
				break
			}
		}
		if !strings.HasPrefix(got, "meta,vseq,aseq,") || firstVideo != "key" {
			t.Fatalf("cut %v: tag order %s: want meta, sequence headers, then a keyframe first", cut, got)
		}
		if firstKey != keyTS {
			t.Fatalf("cut %v: first keyframe at %v, want the latest keyframe before the join at %v", cut, firstKey, keyTS)
		}
		t.Logf("joined at %v: started at the keyframe at %v", cut, firstKey)
	}
}

func TestDialReader(t *testing.T) {
	f := newFixture(t, hub.Config{})
	hb, _ := f.publish(t, "default/live/s")
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := httpflv.Dial(ctx, f.srv.URL+"/live/s.flv", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	streams, err := c.Streams()
	if err != nil || len(streams) != 2 {
		t.Fatalf("streams %v %v", streams, err)
	}
	video := 0
	for video < 20 {
		pkt, err := c.ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		if streams[pkt.Idx].Type() == av.H264 {
			if video == 0 && !pkt.IsKeyFrame {
				t.Fatal("first video packet is not a keyframe")
			}
			video++
		}
	}
	// The stream ending ends the response.
	hb.Close()
	for {
		if _, err = c.ReadPacket(); err != nil {
			break
		}
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("after hub close: %v, want EOF", err)
	}
}

func TestNotFoundAndBadNames(t *testing.T) {
	f := newFixture(t, hub.Config{})
	for path, want := range map[string]int{
		"/live/none.flv":       404,
		"/live/a%2F..%2Fb.flv": 400,
		"/live/..flv":          404, // name "." is refused below; ".." with ".flv" is name "."
		"/live/a%00b.flv":      400,
		"/live/s.mp4":          400,
		"/" + strings.Repeat("a", 200) + "/s.flv": 400,
	} {
		resp, err := http.Get(f.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if path == "/live/..flv" {
			want = 400
		}
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	_, err := httpflv.Dial(context.Background(), f.srv.URL+"/live/none.flv", nil)
	if !errors.Is(err, httpflv.ErrNotFound) {
		t.Errorf("Dial of missing stream: %v", err)
	}
}

// TestStalledReader attaches a client that never reads its socket next to a
// healthy one, publishes as fast as possible, and checks that the healthy
// reader got every packet promptly while the stalled one was skipped or
// dropped by the hub.
func TestStalledReader(t *testing.T) {
	f := newFixture(t, hub.Config{QueueBytes: 1 << 20, QueuePackets: 2048, MergeWindow: 20 * time.Millisecond})
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	hb, _, _ := f.reg.GetOrCreate("default/live/s")
	src, err := hb.Publish(streams, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Stalled: a tiny receive buffer, request sent, nothing ever read.
	d := net.Dialer{Control: nil}
	stalled, err := d.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(stalled, "GET /live/s.flv HTTP/1.1\r\nHost: x\r\n\r\n")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	healthy, err := httpflv.Dial(ctx, f.srv.URL+"/live/s.flv", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer healthy.Close()
	mediatest.Eventually(t, 5*time.Second, "two readers", func() bool { return hb.NumReaders() == 2 })

	const loops = 8
	type recv struct {
		n   int
		err error
	}
	got := make(chan recv, 1)
	var lastArrival time.Time
	go func() {
		if _, err := healthy.Streams(); err != nil {
			got <- recv{0, err}
			return
		}
		n := 0
		for {
			_, err := healthy.ReadPacket()
			if err != nil {
				got <- recv{n, err}
				return
			}
			n++
			lastArrival = time.Now()
			if n == loops*len(pkts) {
				got <- recv{n, nil}
				return
			}
		}
	}()
	start := time.Now()
	// 8 copies of the 12 s stream at 16x real time: ~6 s of wall time,
	// about 1.1 MB/s, 6.8 MB in all: more than the stalled socket's kernel
	// buffers and its 1 MiB queue can absorb, while a healthy reader under
	// -race on a busy 2-core machine still keeps up with ~1 s of slack.
	sent, err := mediatest.Feed(ctx, src, pkts, 16, loops)
	if err != nil {
		t.Fatal(err)
	}
	pubDone := time.Now()
	var r recv
	select {
	case r = <-got:
	case <-time.After(20 * time.Second):
		t.Fatalf("healthy reader did not receive everything; stats %+v", hb.Stats())
	}
	if r.err != nil || r.n != sent {
		t.Fatalf("healthy reader got %d of %d packets: %v (stats %+v)", r.n, sent, r.err, hb.Stats())
	}
	lag := lastArrival.Sub(pubDone)
	st := hb.Stats()
	t.Logf("published %d packets in %v; healthy reader done %v after the last write; stats %+v",
		sent, pubDone.Sub(start).Round(time.Millisecond), lag.Round(time.Millisecond), st)
	if lag > time.Second {
		t.Errorf("healthy reader lagged %v behind the publisher", lag)
	}
	if st.Skipped == 0 && st.Dropped == 0 {
		t.Errorf("stalled reader was neither skipped nor dropped: %+v", st)
	}
}

// headerWrapper is what the edge and the origin wrap the handler's
// ResponseWriter with: a header set when the response starts, and a count
// of the bytes written.
type headerWrapper struct {
	http.ResponseWriter
	n int64
}

func (h *headerWrapper) PrepareHeader(code int) {
	h.Header().Set("X-Test-Owner", fmt.Sprintf("code-%d", code))
}
func (h *headerWrapper) CountBytes(n int64)          { atomic.AddInt64(&h.n, n) }
func (h *headerWrapper) Unwrap() http.ResponseWriter { return h.ResponseWriter }
func (h *headerWrapper) count() int64                { return atomic.LoadInt64(&h.n) }

// The response is written on the hijacked connection: a wrapper's headers
// still reach the player, and its byte count sees every byte.
func TestHijackedResponseHeadersAndCount(t *testing.T) {
	reg := hub.NewRegistry(hub.Config{MergeWindow: 20 * time.Millisecond})
	fh := &httpflv.Handler{Lookup: func(ctx context.Context, k streamkey.Key) (*hub.Hub, error) {
		if hb := reg.Get(k.String()); hb != nil {
			return hb, nil
		}
		return nil, httpflv.ErrNotFound
	}}
	wrappers := make(chan *headerWrapper, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := &headerWrapper{ResponseWriter: w}
		wrappers <- hw
		fh.ServeHTTP(hw, r)
	}))
	defer srv.Close()
	defer reg.Close()
	f := &fixture{reg: reg, srv: srv}
	f.publish(t, "default/live/s")

	resp, err := http.Get(srv.URL + "/live/s.flv")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get("X-Test-Owner"); got != "code-200" {
		t.Fatalf("X-Test-Owner = %q, want code-200 (headers %v)", got, resp.Header)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "video/x-flv" {
		t.Fatalf("Content-Type = %q", ct)
	}
	c, err := httpflv.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Streams(); err != nil {
		t.Fatal(err)
	}
	hw := <-wrappers
	for range 50 {
		if _, err := c.ReadPacket(); err != nil {
			t.Fatal(err)
		}
	}
	mediatest.Eventually(t, 5*time.Second, "bytes counted", func() bool { return hw.count() > 10_000 })
}
