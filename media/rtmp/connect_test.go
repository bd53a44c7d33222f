package rtmp_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livecluster/livecluster/media/hub"
	"github.com/livecluster/livecluster/media/mediatest"
	"github.com/livecluster/livecluster/media/rtmp"
)

// Server.Connect sees each connect (app, query, tcUrl, an id) and refuses
// it with NetConnection.Connect.Rejected and its description; our client
// sends its URL query on the tcUrl so the connect can be judged by it.
func TestConnectCallback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []rtmp.ConnectInfo
	var ids []string
	reg := hub.NewRegistry(hub.Config{})
	defer reg.Close()
	srv := &rtmp.Server{Handler: &hubHandler{reg: reg},
		Connect: func(_ context.Context, c *rtmp.Conn, info rtmp.ConnectInfo) error {
			mu.Lock()
			seen, ids = append(seen, info), append(ids, c.ID())
			mu.Unlock()
			if strings.Contains(info.TcURL, "deny") || strings.Contains(info.Query, "deny") {
				return &rtmp.StatusError{Code: "ignored", Description: "go away, you are denied"}
			}
			return nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	addr := ln.Addr().String()

	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	_, err = rtmp.Dial(dctx, "rtmp://"+addr+"/live/s1?who=deny", rtmp.Config{})
	if err == nil || !strings.Contains(err.Error(), "go away, you are denied") || !strings.Contains(err.Error(), "NetConnection.Connect.Rejected") {
		t.Fatalf("refused connect: %v", err)
	}
	c, err := rtmp.Dial(dctx, "rtmp://"+addr+"/live/s1?who=ok&vhost=v1", rtmp.Config{})
	if err != nil {
		t.Fatalf("allowed connect: %v", err)
	}
	c.Close()
	mu.Lock()
	if len(seen) != 2 || seen[1].App != "live" || !strings.HasSuffix(seen[1].TcURL, "/live?who=ok&vhost=v1") ||
		ids[0] == "" || ids[0] == ids[1] {
		t.Errorf("connects seen %+v ids %q", seen, ids)
	}
	mu.Unlock()

	if testing.Short() {
		return
	}
	// ffmpeg with the query on the app: it reaches Connect, and ffmpeg
	// prints the description.
	ffmpeg := mediatest.Tool(t, "ffmpeg")
	p := mediatest.Start(t, ffmpeg, "-v", "error", "-i", "rtmp://"+addr+"/live?u=deny/s1", "-t", "1", "-f", "null", "-")
	if err := p.Wait(t, 15*time.Second); err == nil {
		t.Fatal("ffmpeg connected though refused")
	}
	if !strings.Contains(p.Stderr.String(), "go away, you are denied") {
		t.Errorf("ffmpeg did not print the rejection: %q", p.Stderr.String())
	}
}
