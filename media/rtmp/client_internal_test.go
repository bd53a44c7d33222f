package rtmp

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/mediatest"
)

// endingHandler accepts a publish, reads some packets and ends it with an
// error, as an origin does when it loses the stream's ownership.
type endingHandler struct{ after int }

var errHandedOver = errors.New("stream default/live/s was handed over to origin origin-1")

func (h endingHandler) ServePublish(ctx context.Context, c *Conn) error {
	if _, err := c.Streams(); err != nil {
		return err
	}
	for range h.after {
		if _, err := c.ReadPacket(); err != nil {
			return err
		}
	}
	return errHandedOver
}

func (endingHandler) ServePlay(context.Context, *Conn) error { return errors.New("no play") }

// A publishing client whose server ends the publish with an error learns
// the server's words from its failing write, and Close returns only after
// the goroutine reading the server's messages ended.
func TestPublishClientGetsServerErrorAndCloseWaits(t *testing.T) {
	streams, pkts := mediatest.ReadFLV(t, mediatest.TestFLV(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := &Server{Handler: endingHandler{after: 50}}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()

	c, err := Dial(ctx, "rtmp://"+ln.Addr().String()+"/live/s", Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteHeader(streams, nil); err != nil {
		t.Fatal(err)
	}
	var werr error
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; werr == nil && time.Now().Before(deadline); i++ {
		werr = c.WritePacket(pkts[i%len(pkts)])
		if i >= 50 {
			time.Sleep(time.Millisecond) // the server stopped reading; do not fill buffers blindly
		}
	}
	var se *StatusError
	if !errors.As(werr, &se) || !strings.Contains(se.Description, errHandedOver.Error()) || se.Code != "NetStream.Failed" {
		t.Fatalf("write after the server ended the publish: %v; want the server's onStatus error (NetStream.Failed: %s)", werr, errHandedOver)
	}
	c.Close()
	select {
	case <-c.drainDone:
	default:
		t.Fatal("Close returned while the publish drain goroutine still runs")
	}
}

// Close of a publishing client whose server says nothing waits for the
// drain goroutine too.
func TestPublishClientCloseWaitsForDrain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := &Server{Handler: endingHandler{after: 1 << 30}}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	c, err := Dial(ctx, "rtmp://"+ln.Addr().String()+"/live/s", Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case <-c.drainDone:
	default:
		t.Fatal("Close returned while the publish drain goroutine still runs")
	}
}
