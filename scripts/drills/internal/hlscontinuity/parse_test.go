package hlscontinuity

import "testing"

func TestParse(t *testing.T) {
	seq, discs := parse(`#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:41
#EXT-X-DISCONTINUITY-SEQUENCE:1
#EXTINF:1.000,
hls-41.ts
#EXT-X-DISCONTINUITY
#EXTINF:1.000,
hls-42.ts
#EXTINF:1.000,
hls-43.ts
`)
	if seq != 41 || len(discs) != 1 || discs[0] != "hls-42.ts" {
		t.Fatalf("parse = %d %v, want 41 [hls-42.ts]", seq, discs)
	}
}
