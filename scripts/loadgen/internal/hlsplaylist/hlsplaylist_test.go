package hlsplaylist

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	tests := []struct {
		name    string
		in      string
		want    *Playlist
		wantErr string
	}{
		{
			name: "live media playlist",
			in: "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n" +
				"#EXTINF:2.000,\ns-7.ts\n#EXTINF:1.966,\ns-8.ts\n",
			want: &Playlist{TargetDuration: sec(2), MediaSequence: 7, Segments: []Segment{
				{Seq: 7, URI: "s-7.ts", Duration: sec(2)}, {Seq: 8, URI: "s-8.ts", Duration: sec(1.966)},
			}},
		},
		{
			name: "ended, CRLF, BOM, blank lines, unknown tags, discontinuity",
			in: "\xef\xbb\xbf#EXTM3U\r\n\r\n#EXT-X-TARGETDURATION:4\r\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00Z\r\n" +
				"#EXTINF:4,title\r\na.ts\r\n#EXT-X-DISCONTINUITY\r\n#EXTINF:3.5\r\nhttp://h/b.ts\r\n#EXT-X-ENDLIST\r\n",
			want: &Playlist{TargetDuration: sec(4), EndList: true, Segments: []Segment{
				{Seq: 0, URI: "a.ts", Duration: sec(4)},
				{Seq: 1, URI: "http://h/b.ts", Duration: sec(3.5), Discontinuity: true},
			}},
		},
		{
			name: "empty live playlist (no segments yet)",
			in:   "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:0\n",
			want: &Playlist{TargetDuration: sec(6)},
		},
		{
			name: "master playlist keeps variant order",
			in: "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=2000000,RESOLUTION=1280x720\nhi/index.m3u8\n" +
				"#EXT-X-STREAM-INF:BANDWIDTH=500000\nlo/index.m3u8\n",
			want: &Playlist{Master: true, Variants: []string{"hi/index.m3u8", "lo/index.m3u8"}},
		},
		{name: "empty body", in: "", wantErr: "empty"},
		{name: "not a playlist", in: "<html>404</html>\n", wantErr: "#EXTM3U"},
		{name: "no target duration", in: "#EXTM3U\n#EXTINF:2,\na.ts\n", wantErr: "TARGETDURATION"},
		{name: "bad target duration", in: "#EXTM3U\n#EXT-X-TARGETDURATION:x\n", wantErr: "TARGETDURATION"},
		{name: "negative media sequence", in: "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:-1\n", wantErr: "MEDIA-SEQUENCE"},
		{name: "media sequence after a segment", in: "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n#EXT-X-MEDIA-SEQUENCE:3\n", wantErr: "after the first segment"},
		{name: "bad EXTINF", in: "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:abc,\na.ts\n", wantErr: "EXTINF"},
		{name: "EXTINF without URI", in: "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n", wantErr: "without a URI"},
		{name: "URI without EXTINF", in: "#EXTM3U\n#EXT-X-TARGETDURATION:2\na.ts\n", wantErr: "without #EXTINF"},
		{name: "variant without URI", in: "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n", wantErr: "without a URI"},
		{name: "mixed master and media", in: "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n#EXT-X-TARGETDURATION:2\n", wantErr: "both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse: err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
