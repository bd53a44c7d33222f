package rtmp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/nareix/joy4/av"

	"github.com/livecluster/livecluster/media/mediatest"
)

// arrivalHandler tells the time each packet of a publish was read.
type arrivalHandler struct{ got chan time.Time }

func (h arrivalHandler) ServePublish(ctx context.Context, c *Conn) error {
	if _, err := c.Streams(); err != nil {
		return err
	}
	for {
		if _, err := c.ReadPacket(); err != nil {
			return nil
		}
		h.got <- time.Now()
	}
}

func (arrivalHandler) ServePlay(context.Context, *Conn) error { return errors.New("no play") }

// socketLowat reads the receive low-water mark of the socket under rc.
func socketLowat(t *testing.T, rc *readCounter) int {
	t.Helper()
	raw, err := rc.Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT)
	}); err != nil || gerr != nil {
		t.Fatalf("getsockopt SO_RCVLOWAT: %v %v", err, gerr)
	}
	return v
}

// While a paced publisher's reader waits for its window, its socket's
// receive low-water mark is above what a window brings (arrivals do not
// wake the process), and it is back at 1 before any read that may block:
// a publisher that pauses and then sends one small packet has it read at
// once, not when 16 KiB have piled up (or the read timeout).
func TestPublishReadWindowLowat(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	var small av.Packet // an audio packet: far below the mark
	found := false
	for _, p := range pkts {
		if streams[p.Idx].Type().IsAudio() {
			small, found = p, true
			break
		}
	}
	if !found {
		t.Fatal("no audio packet in the test stream")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln, conns: make(chan *readCounter, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan time.Time, 1000)
	srv := &Server{Handler: arrivalHandler{got: got}, Logger: slog.New(slog.DiscardHandler)} // default window, 50 ms
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, cl) }()
	defer func() { cancel(); <-served }()

	c, err := Dial(ctx, "rtmp://"+ln.Addr().String()+"/live/s", Config{})
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
	rc := <-cl.conns

	// Sending: sample the mark between packets.
	high, samples := 0, 0
	for i := range 60 {
		if err := c.WritePacket(small); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			time.Sleep(2500 * time.Microsecond)
			samples++
			if v := socketLowat(t, rc); v == publishReadBuffer {
				high++
			} else if v > 1 { // a new socket reads 0 here, which Linux takes as 1
				t.Fatalf("packet %d: SO_RCVLOWAT %d, want 0, 1 or %d", i, v, publishReadBuffer)
			}
		}
	}
	// The reader sleeps nearly all of every window.
	if high < samples/3 {
		t.Errorf("SO_RCVLOWAT raised in %d of %d samples while the publisher sent", high, samples)
	} else {
		t.Logf("SO_RCVLOWAT raised in %d of %d samples while the publisher sent", high, samples)
	}

	// A pause of several windows: the reader finds the socket empty and
	// waits for data. Then one small packet.
	time.Sleep(300 * time.Millisecond)
	for len(got) > 0 {
		<-got
	}
	sent := time.Now()
	if err := c.WritePacket(small); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-got:
		if d := at.Sub(sent); d > 500*time.Millisecond {
			t.Errorf("a packet after a pause was read %v after it was sent", d)
		} else {
			t.Logf("a packet after a pause was read %v after it was sent", d.Round(time.Millisecond))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a packet sent after a pause was not read within 3 s")
	}
}
