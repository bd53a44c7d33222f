package drill

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/livecluster/livecluster/scripts/drills/internal/cluster"
)

// OriginEnv is the origin configuration of the drills: 1 s HLS segments
// (the test file has a keyframe every second), so HLS players start and
// switch within seconds.
var OriginEnv = map[string]string{"LIVECLUSTER_HLS_FRAGMENT": "1s"}

// URLs of stream app/name on a node (an edge or an origin).
type URLs struct{ RTMP, FLV, HLS string }

// StreamURLs returns the RTMP, HTTP-FLV and HLS URLs of app/name on k,
// by its address on the cluster's network.
func StreamURLs(ctx context.Context, k *cluster.Container, app, name string) (URLs, error) {
	ip, err := k.IP(ctx)
	if err != nil {
		return URLs{}, err
	}
	return URLs{
		RTMP: fmt.Sprintf("rtmp://%s:%d/%s/%s", ip, cluster.PortRTMP, app, name),
		FLV:  fmt.Sprintf("http://%s:%d/%s/%s.flv", ip, cluster.PortHTTP, app, name),
		HLS:  fmt.Sprintf("http://%s:%d/%s/%s.m3u8", ip, cluster.PortHTTP, app, name),
	}, nil
}

// WaitPlaylist polls an HLS playlist URL every 200 ms until it answers 200
// and lists at least segs segments. An HLS player that starts before that
// gets a 404 and gives up, as real players do.
func WaitPlaylist(ctx context.Context, url string, segs int) error {
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for {
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			n := strings.Count(string(b), "#EXTINF")
			if resp.StatusCode == http.StatusOK && n >= segs {
				return nil
			}
			last = fmt.Sprintf("%s, %d segments", resp.Status, n)
		} else {
			last = err.Error()
		}
		if Sleep(ctx, 200*time.Millisecond) != nil {
			return fmt.Errorf("playlist %s (last: %s): %w", url, last, ctx.Err())
		}
	}
}

// Ms is d in whole milliseconds, for figures.
func Ms(d time.Duration) int64 { return d.Milliseconds() }
