package hlsproxy

import (
	"bytes"
	"net/url"
	"testing"
	"time"

	"github.com/livecluster/livecluster/streamkey"
)

// FuzzPlaylist: an origin's media playlist of any bytes is refused or
// merged into the edge's continuous playlist; the edge's playlist then
// keeps its promises: media sequence numbers only grow, every segment
// line is an edge name, and rendering never panics.
func FuzzPlaylist(f *testing.F) {
	f.Add([]byte("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.000,\ns-7.ts\n#EXTINF:2.0,\ns-8.ts\n"))
	f.Add([]byte("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-DISCONTINUITY\n#EXTINF:1,\na.ts\n#EXT-X-ENDLIST\n"))
	f.Add([]byte("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:9223372036854775807\n#EXTINF:1e308,\nx.ts\n"))
	f.Add([]byte("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n"))
	f.Add([]byte("#EXTM3U\r\n#EXTINF:NaN,\r\n../../etc/passwd\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pl, err := parsePlaylist(b)
		if err != nil {
			return
		}
		base, _ := url.Parse("http://origin-0:8080/live/s.m3u8")
		key := streamkey.Key{Vhost: streamkey.DefaultVhost, App: "live", Name: "s"}
		var l live
		now := time.Unix(1e9, 0)
		var lastFirst int64 = -1
		for i, node := range []string{"origin-0", "origin-0", "origin-1"} {
			l.merge(node, int64(i+1), base, pl, 6, 2, now)
			body, _ := l.render(key, time.Second, now)
			if len(l.segs) > 0 {
				if l.segs[0].seq < lastFirst {
					t.Fatalf("edge media sequence went back: %d after %d", l.segs[0].seq, lastFirst)
				}
				lastFirst = l.segs[0].seq
			}
			if !bytes.HasPrefix(body, []byte("#EXTM3U")) {
				t.Fatalf("rendered playlist has no header:\n%s", body)
			}
			now = now.Add(2 * time.Second)
		}
	})
}
