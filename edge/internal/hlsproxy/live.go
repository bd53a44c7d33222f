package hlsproxy

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/livecluster/livecluster/streamkey"
)

// This file is the edge's continuous playlist of one stream. The edge keeps
// the origins' segment numbers (they grow across owner changes, see
// media/hls StartSeq), so every edge gives the same bytes the same number;
// a player through it sees one media sequence that only grows, segment
// names that never change meaning, and #EXT-X-DISCONTINUITY where the
// source changed (another owner, segments the edge never saw, or a
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
	seq  int64 // the origin's number, also in its name
	dur  float64
	disc bool
	src  string // origin URL + "#" + epoch: the segment cache key
}

// live is the edge's playlist state of one stream. Guarded by stream.mu.
type live struct {
	started bool
	last    int64 // the highest number taken
	// segs are the taken segments in ascending numbers: the playlist is
	// the last run without a gap (at most window of it), the older ones
	// stay fetchable for players holding an earlier playlist.
	segs     []edgeSeg
	discGone int64  // discontinuities that left segs
	node     string // the source the last playlist came from
	epoch    int64
	pendDisc bool      // the next new segment starts a discontinuity
	endSince time.Time // when the source's playlist first showed ENDLIST (zero: live)
	window   int       // segments in the playlist
}

// merge adds the new segments of pl, fetched from node at epoch through
// playlistURL, and returns them. The edge keeps the origin's numbers, which
// origins keep growing across owner changes (media/hls StartSeq), so every
// edge names the same bytes with the same number whenever it polled. A
// segment is new when its number is above the highest one taken; one at or
// below it (an owner that numbered below its predecessor, which StartSeq
// rules out unless the stream moved again within media/hls.MinTenure, or a
// stale playlist) is skipped, so the media sequence never goes back. A new
// segment that is not last+1 (an owner change, segments the edge never saw)
// cannot join the playlist, whose numbers are MEDIA-SEQUENCE + index: the
// playlist moves on to it, marked with #EXT-X-DISCONTINUITY, as is the
// first segment of a new source and wherever the origin marked one.
func (l *live) merge(node string, epoch int64, playlistURL *url.URL, pl *upPlaylist, window, keep int, now time.Time) []edgeSeg {
	if l.started && (node != l.node || epoch != l.epoch) {
		l.pendDisc = true
	}
	l.node, l.epoch = node, epoch
	var added []edgeSeg
	for i, s := range pl.segs {
		seq := pl.mediaSeq + int64(i)
		if l.started && seq <= l.last {
			continue
		}
		u, err := playlistURL.Parse(s.uri)
		if err != nil {
			l.pendDisc = true // an unusable URI: the segment is skipped, the gap marked
			continue
		}
		u.Fragment = strconv.FormatInt(epoch, 10)
		gap := l.started && seq != l.last+1
		es := edgeSeg{seq: seq, dur: s.dur, disc: s.disc || l.pendDisc || gap, src: u.String()}
		l.started, l.pendDisc, l.last = true, false, seq
		l.segs = append(l.segs, es)
		added = append(added, es)
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

// find returns the segment numbered seq.
func (l *live) find(seq int64) (edgeSeg, bool) {
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].seq >= seq })
	if i == len(l.segs) || l.segs[i].seq != seq {
		return edgeSeg{}, false
	}
	return l.segs[i], true
}

// shown returns the index in segs of the playlist's first segment: the
// last window segments, from the last gap on.
func (l *live) shown() int {
	from := max(len(l.segs)-l.window, 0)
	for i := len(l.segs) - 1; i > from; i-- {
		if l.segs[i].seq != l.segs[i-1].seq+1 {
			return i
		}
	}
	return from
}

// render writes the edge's playlist of key. ENDLIST is written once the
// source has shown it for endHold: an origin that loses its publisher to
// another origin ends its playlist, and a player must not stop for that.
func (l *live) render(key streamkey.Key, endHold time.Duration, now time.Time) (body []byte, target time.Duration) {
	from := l.shown()
	shown := l.segs[from:]
	discSeq := l.discGone
	for _, s := range l.segs[:from] {
		if s.disc {
			discSeq++
		}
	}
	maxDur := 0.0
	for _, s := range shown {
		maxDur = max(maxDur, s.dur)
	}
	// Rounded to the millisecond first, as the origin does, so 2.0004 is 2.
	t := max(int64(math.Ceil(math.Round(maxDur*1000)/1000)), 1)
	first := l.last + 1
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
