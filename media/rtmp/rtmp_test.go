package rtmp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nareix/joy4/av"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/media/rtmp"
)

// nullPlay is the ffmpeg argument list that decodes url for d seconds.
// -enc_time_base:v -1 keeps the demuxer's 1/1000 time base: with the
// default 1/framerate encoder time base the null muxer reports "non
// monotonically increasing dts" whenever the first audio and video
// timestamps are half a frame apart, which depends only on the GOP a
// player joins at (it happens with a plain FLV file cut at such a GOP too).
func nullPlay(url string, d string) []string {
	return []string{"-v", "error", "-i", url, "-t", d, "-enc_time_base:v", "-1", "-f", "null", "-"}
}

func TestMain(m *testing.M) { mediatest.Main(m) }

// hubHandler is a minimal origin: publish into a hub, play from it.
type hubHandler struct {
	reg *hub.Registry
}

var errNotFound = errors.New("no such stream")

func (h *hubHandler) ServePublish(ctx context.Context, c *rtmp.Conn) error {
	k, _ := c.Request().Key()
	hb, _, err := h.reg.GetOrCreate(k.String())
	if err != nil {
		return err
	}
	if hb.Publishing() {
		return &rtmp.StatusError{Code: "NetStream.Publish.BadName", Description: "stream " + k.String() + " is already published"}
	}
	streams, err := c.Streams()
	if err != nil {
		return err
	}
	src, err := hb.Publish(streams, c.Metadata())
	if err != nil {
		return err
	}
	defer hb.Close()
	defer src.Close()
	for {
		pkt, err := c.ReadPacket()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := src.WritePacket(pkt); err != nil {
			return err
		}
	}
}

func (h *hubHandler) ServePlay(ctx context.Context, c *rtmp.Conn) error {
	k, _ := c.Request().Key()
	hb := h.reg.Get(k.String())
	if hb == nil {
		return fmt.Errorf("%w: %s", errNotFound, k)
	}
	rd, err := hb.NewReader()
	if err != nil {
		return err
	}
	defer rd.Close()
	if err := c.Accept(); err != nil {
		return err
	}
	return rd.CopyWire(ctx, c, c.WriteWire)
}

type testServer struct {
	addr string
	reg  *hub.Registry
	logs *logBuf
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startServer(t *testing.T, cfg rtmp.Config) *testServer {
	t.Helper()
	return startServerWith(t, cfg, nil)
}

// startServerWith starts a server that tune may change before it serves.
func startServerWith(t *testing.T, cfg rtmp.Config, tune func(*rtmp.Server)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: ln.Addr().String(), reg: hub.NewRegistry(hub.Config{}), logs: &logBuf{}}
	srv := &rtmp.Server{Handler: &hubHandler{reg: ts.reg}, Config: cfg,
		Logger: slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if tune != nil {
		tune(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		ts.reg.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", ts.logs.String())
		}
	})
	return ts
}

func (ts *testServer) url(name string) string { return "rtmp://" + ts.addr + "/live/" + name }

// publishFFmpeg pushes the test FLV in real time, looping.
func publishFFmpeg(t *testing.T, url string) *mediatest.Proc {
	t.Helper()
	ffmpeg := mediatest.Tool(t, "ffmpeg")
	flv := mediatest.TestFLV(t)
	return mediatest.Start(t, ffmpeg, "-v", "error", "-re", "-stream_loop", "-1", "-i", flv, "-c", "copy", "-f", "flv", url)
}

func waitPublishing(t *testing.T, ts *testServer, key string, p *mediatest.Proc) *hub.Hub {
	t.Helper()
	var hb *hub.Hub
	mediatest.Eventually(t, 15*time.Second, "publish of "+key, func() bool {
		select {
		case <-p.Done():
			t.Fatalf("ffmpeg publisher exited: %s", p.Stderr.String())
		default:
		}
		hb = ts.reg.Get(key)
		return hb != nil && hb.Publishing() && hb.Stats().PacketsIn > 0
	})
	return hb
}

// playClient plays url with our client and checks the start of the stream:
// codecs known before any packet, the first video packet a keyframe.
func playClient(t *testing.T, ctx context.Context, url string, videoFrames int) {
	t.Helper()
	c, err := rtmp.Dial(ctx, url, rtmp.Config{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if err := c.Play(); err != nil {
		t.Fatalf("play: %v", err)
	}
	streams, err := c.Streams()
	if err != nil {
		t.Fatalf("streams: %v", err)
	}
	if len(streams) != 2 {
		t.Fatalf("got %d streams, want 2 (h264+aac)", len(streams))
	}
	var types []av.CodecType
	vidx := -1
	for i, s := range streams {
		types = append(types, s.Type())
		if s.Type() == av.H264 {
			vidx = i
		}
	}
	if vidx < 0 {
		t.Fatalf("no h264 stream: %v", types)
	}
	if c.Metadata() == nil {
		t.Errorf("no onMetaData received")
	}
	n := 0
	var last time.Duration = -1
	for n < videoFrames {
		pkt, err := c.ReadPacket()
		if err != nil {
			t.Fatalf("read packet after %d video frames: %v", n, err)
		}
		if int(pkt.Idx) != vidx {
			continue
		}
		if n == 0 && !pkt.IsKeyFrame {
			t.Fatalf("first video frame is not a keyframe")
		}
		if pkt.Time < last {
			t.Fatalf("video timestamp went back: %v after %v", pkt.Time, last)
		}
		last = pkt.Time
		n++
	}
}

func TestFFmpegPublishPlay(t *testing.T) {
	if testing.Short() {
		t.Skip("ffmpeg test")
	}
	ts := startServer(t, rtmp.Config{})
	pub := publishFFmpeg(t, ts.url("s"))
	waitPublishing(t, ts, "default/live/s", pub)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Join mid-stream twice, at different points of the GOP.
	playClient(t, ctx, ts.url("s"), 45)
	time.Sleep(330 * time.Millisecond)
	playClient(t, ctx, ts.url("s"), 10)

	ffmpeg := mediatest.Tool(t, "ffmpeg")
	play := mediatest.Start(t, ffmpeg, nullPlay(ts.url("s"), "3")...)
	if err := play.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg play: %v: %s", err, play.Stderr.String())
	}
	if s := play.Stderr.String(); s != "" {
		t.Errorf("ffmpeg play stderr not empty: %s", s)
	}
	if strings.Contains(ts.logs.String(), "level=ERROR") {
		t.Errorf("server logged errors:\n%s", ts.logs.String())
	}
}

func TestClientPublishPlay(t *testing.T) {
	if testing.Short() {
		t.Skip("ffmpeg test")
	}
	ts := startServer(t, rtmp.Config{})
	// ffmpeg → server A; our client pulls from A and forwards to B (like an
	// edge); ffmpeg plays from B.
	ts2 := startServer(t, rtmp.Config{})
	pub := publishFFmpeg(t, ts.url("a"))
	waitPublishing(t, ts, "default/live/a", pub)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in, err := rtmp.Dial(ctx, ts.url("a"), rtmp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := in.Play(); err != nil {
		t.Fatal(err)
	}
	streams, err := in.Streams()
	if err != nil {
		t.Fatal(err)
	}
	out, err := rtmp.Dial(ctx, ts2.url("b?token=x"), rtmp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Publish(); err != nil {
		t.Fatal(err)
	}
	if err := out.WriteHeader(streams, in.Metadata()); err != nil {
		t.Fatal(err)
	}
	fwdCtx, stopFwd := context.WithCancel(ctx)
	fwdDone := make(chan error, 1)
	go func() {
		for fwdCtx.Err() == nil {
			pkt, err := in.ReadPacket()
			if err != nil {
				fwdDone <- err
				return
			}
			if err := out.WritePacket(pkt); err != nil {
				fwdDone <- err
				return
			}
		}
		fwdDone <- nil
	}()
	waitPublishing(t, ts2, "default/live/b", pub)
	ffmpeg := mediatest.Tool(t, "ffmpeg")
	play := mediatest.Start(t, ffmpeg, nullPlay(ts2.url("b"), "3")...)
	if err := play.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg play: %v: %s", err, play.Stderr.String())
	}
	if s := play.Stderr.String(); s != "" {
		t.Errorf("ffmpeg play stderr not empty: %s", s)
	}
	stopFwd()
	in.Close()
	if err := <-fwdDone; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Logf("forwarder ended: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("ffmpeg test")
	}
	ts := startServer(t, rtmp.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c, err := rtmp.Dial(ctx, ts.url("nosuch"), rtmp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Play()
	c.Close()
	var se *rtmp.StatusError
	if !errors.As(err, &se) || se.Code != "NetStream.Play.StreamNotFound" || !strings.Contains(se.Description, "no such stream") {
		t.Fatalf("play of a missing stream: %v", err)
	}

	ffmpeg := mediatest.Tool(t, "ffmpeg")
	p := mediatest.Start(t, ffmpeg, "-v", "error", "-i", ts.url("nosuch"), "-t", "1", "-f", "null", "-")
	if err := p.Wait(t, 15*time.Second); err == nil {
		t.Fatalf("ffmpeg played a missing stream")
	}
	if !strings.Contains(p.Stderr.String(), "no such stream") {
		t.Errorf("ffmpeg did not print the refusal: %q", p.Stderr.String())
	}

	// Connect with an invalid app is rejected with a description.
	p = mediatest.Start(t, ffmpeg, "-v", "error", "-i", "rtmp://"+ts.addr+"/bad%20app/s", "-t", "1", "-f", "null", "-")
	if err := p.Wait(t, 15*time.Second); err == nil {
		t.Fatalf("ffmpeg connected to an invalid app")
	}
	if !strings.Contains(p.Stderr.String(), "forbidden character") {
		t.Errorf("ffmpeg did not print the connect rejection: %q", p.Stderr.String())
	}

	// A second publisher of the same stream is refused with BadName.
	pub := publishFFmpeg(t, ts.url("dup"))
	waitPublishing(t, ts, "default/live/dup", pub)
	pub2 := mediatest.Start(t, ffmpeg, "-v", "error", "-re", "-i", mediatest.TestFLV(t), "-c", "copy", "-f", "flv", ts.url("dup"))
	if err := pub2.Wait(t, 15*time.Second); err == nil {
		t.Fatalf("second publisher accepted")
	}
	if !strings.Contains(pub2.Stderr.String(), "already published") {
		t.Errorf("ffmpeg did not print the publish refusal: %q", pub2.Stderr.String())
	}
}

// A publishing client hears nothing from the server for long stretches (our
// server sends a publisher no acknowledgements unless asked to): the read
// timeout must not end the publish. It did: every forwarded publish at an
// edge died ReadTimeout (30 s) after it started, so a moved forward lost its
// new leg 30 s after the move.
func TestPublishOutlivesReadTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("ffmpeg test")
	}
	ts := startServer(t, rtmp.Config{})
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	const readTimeout = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := rtmp.Dial(ctx, ts.url("quiet"), rtmp.Config{ReadTimeout: readTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Publish(); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteHeader(streams, nil); err != nil {
		t.Fatal(err)
	}
	// Write in real time for five read timeouts.
	start := time.Now()
	for i := 0; time.Since(start) < 5*readTimeout; i++ {
		pkt := pkts[i%len(pkts)]
		pkt.Time += time.Duration(i/len(pkts)) * pkts[len(pkts)-1].Time
		if err := c.WritePacket(pkt); err != nil {
			t.Fatalf("write after %v (read timeout %v): %v", time.Since(start).Round(time.Millisecond), readTimeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	hb := ts.reg.Get("default/live/quiet")
	if hb == nil || !hb.Publishing() {
		t.Fatalf("the server no longer has the publish after %v", time.Since(start).Round(time.Millisecond))
	}
}
