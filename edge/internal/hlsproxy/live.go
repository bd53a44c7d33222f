package hlsproxy

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/livecluster/livecluster/streamkey"
)

// This file is the edge's continuous playlist of one stream. The edge
// renumbers: whatever origin owns the stream and however that origin
// numbers its segments, a player through this edge sees one media sequence
// that only grows, segment names that never change meaning, and
// #EXT-X-DISCONTINUITY where the source changed (another owner, an origin
// that restarted its numbering, segments the edge never saw, or a
// discontinuity the origin marked itself).

// upPlaylist is a parsed origin media playlist.
type upPlaylist struct {
	mediaSeq int64
	segs     []upSeg
	ended    bool
}

type upSeg struct {
	dur  float64 // EXTINF seconds
	uri  string
	disc bool // #EXT-X-DISCONTINUITY before it
}

// parsePlaylist parses an HLS media playlist. It refuses what the edge
// cannot renumber: no #EXTM3U header, a master playlist, a malformed tag.
func parsePlaylist(b []byte) (*upPlaylist, error) {
	lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) != "#EXTM3U" {
		return nil, errors.New("playlist: no #EXTM3U header")
	}
	pl := &upPlaylist{}
	var dur float64
	var haveInf, disc bool
	for _, line := range lines[1:] {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "#EXT-X-STREAM-INF"):
			return nil, errors.New("playlist: a master playlist, want a media playlist")
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			n, err := strconv.ParseInt(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("playlist: bad %q", line)
			}
			pl.mediaSeq = n
		case strings.HasPrefix(line, "#EXTINF:"):
			v, _, _ := strings.Cut(strings.TrimPrefix(line, "#EXTINF:"), ",")
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, fmt.Errorf("playlist: bad %q", line)
			}
			dur, haveInf = f, true
		case line == "#EXT-X-DISCONTINUITY":
			disc = true
		case line == "#EXT-X-ENDLIST":
			pl.ended = true
		case strings.HasPrefix(line, "#"):
			// Other tags (VERSION, TARGETDURATION, DISCONTINUITY-SEQUENCE,
			// comments) are recomputed or not needed.
		default:
			if !haveInf {
				return nil, fmt.Errorf("playlist: segment %q without #EXTINF", line)
			}
			pl.segs = append(pl.segs, upSeg{dur: dur, uri: line, disc: disc})
			haveInf, disc = false, false
		}
	}
	return pl, nil
}

// edgeSeg is one segment of the edge's playlist.
type edgeSeg struct {
	seq  int64 // the edge's media sequence number, also in its name
	dur  float64
	disc bool
	src  string // origin URL + "#" + epoch: the segment cache key
}

// live is the edge's playlist state of one stream. Guarded by stream.mu.
type live struct {
	started  bool
	nextSeq  int64            // the edge number of the next new segment
	segs     []edgeSeg        // the playlist window plus Keep older ones
	discGone int64            // discontinuities that left segs
	node     string           // the source the last playlist came from
	lastUp   map[string]int64 // per origin node: its highest segment number mapped
	pendDisc bool             // the next new segment starts a discontinuity
	endSince time.Time        // when the source's playlist first showed ENDLIST (zero: live)
	window   int              // segments in the playlist
}

// maxNodes bounds lastUp: a stream has moved between this many origins at
// most before the oldest are forgotten (a forgotten origin that owns the
// stream again is treated as restarted: its segments are all new).
const maxNodes = 8

// merge adds the new segments of pl, fetched from node at epoch through
// playlistURL, and returns them. A segment is new when its origin number is
// above the highest one mapped from that node; when the node's numbering
// went back (it restarted, or disposed the stream and started over), all of
// its segments are new.
func (l *live) merge(node string, epoch int64, playlistURL *url.URL, pl *upPlaylist, window, keep int, now time.Time) []edgeSeg {
	if l.lastUp == nil {
		l.lastUp = map[string]int64{}
	}
	if !l.started {
		l.started, l.node, l.nextSeq = true, node, pl.mediaSeq
	}
	if node != l.node {
		l.pendDisc = true
		l.node = node
	}
	last, seen := l.lastUp[node]
	n := int64(len(pl.segs))
	from := pl.mediaSeq
	if seen && n > 0 {
		switch top := pl.mediaSeq + n - 1; {
		case top < last:
			l.pendDisc = true // the origin's numbering went back
		case pl.mediaSeq > last+1:
			l.pendDisc = true // segments the edge never saw
		default:
			from = last + 1
		}
	}
	var added []edgeSeg
	for i, s := range pl.segs {
		seq := pl.mediaSeq + int64(i)
		if seq < from {
			continue
		}
		u, err := playlistURL.Parse(s.uri)
		if err != nil {
			continue // an unusable URI: the segment is skipped, the gap marked
		}
		u.Fragment = strconv.FormatInt(epoch, 10)
		es := edgeSeg{seq: l.nextSeq, dur: s.dur, disc: s.disc || l.pendDisc, src: u.String()}
		l.pendDisc = false
		l.nextSeq++
		l.segs = append(l.segs, es)
		added = append(added, es)
		l.lastUp[node] = seq
	}
	if !seen && len(l.lastUp) > maxNodes {
		for k := range l.lastUp {
			if k != node {
				delete(l.lastUp, k)
				break
			}
		}
	}
	switch {
	case !pl.ended:
		l.endSince = time.Time{}
	case l.endSince.IsZero():
		l.endSince = now
	}
	l.window = max(window, len(pl.segs))
	for len(l.segs) > l.window+keep {
		if l.segs[0].disc {
			l.discGone++
		}
		l.segs = l.segs[1:]
	}
	return added
}

// find returns the segment with edge number seq.
func (l *live) find(seq int64) (edgeSeg, bool) {
	if len(l.segs) == 0 {
		return edgeSeg{}, false
	}
	i := seq - l.segs[0].seq
	if i < 0 || i >= int64(len(l.segs)) {
		return edgeSeg{}, false
	}
	return l.segs[i], true
}

// render writes the edge's playlist of key. ENDLIST is written once the
// source has shown it for endHold: an origin that loses its publisher to
// another origin ends its playlist, and a player must not stop for that.
func (l *live) render(key streamkey.Key, endHold time.Duration, now time.Time) (body []byte, target time.Duration) {
	shown := l.segs
	var discSeq int64 = l.discGone
	if len(shown) > l.window {
		for _, s := range shown[:len(shown)-l.window] {
			if s.disc {
				discSeq++
			}
		}
		shown = shown[len(shown)-l.window:]
	}
	maxDur := 0.0
	for _, s := range shown {
		maxDur = max(maxDur, s.dur)
	}
	// Rounded to the millisecond first, as the origin does, so 2.0004 is 2.
	t := max(int64(math.Ceil(math.Round(maxDur*1000)/1000)), 1)
	first := l.nextSeq
	if len(shown) > 0 {
		first = shown[0].seq
	}
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:3\n")
	fmt.Fprintf(&b, "#EXT-X-TARGETDURATION:%d\n", t)
	fmt.Fprintf(&b, "#EXT-X-MEDIA-SEQUENCE:%d\n", first)
	if discSeq > 0 {
		fmt.Fprintf(&b, "#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", discSeq)
	}
	for _, s := range shown {
		if s.disc {
			b.WriteString("#EXT-X-DISCONTINUITY\n")
		}
		fmt.Fprintf(&b, "#EXTINF:%.3f,\n%s-%d.ts%s\n", s.dur, key.Name, s.seq, key.Query())
	}
	if !l.endSince.IsZero() && now.Sub(l.endSince) >= endHold {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	return []byte(b.String()), time.Duration(t) * time.Second
}
