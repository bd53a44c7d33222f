// Package hlsplaylist parses the parts of an HLS playlist (RFC 8216) that a
// live player needs: a master playlist's variants, or a media playlist's
// target duration, media sequence, segments and end marker.
package hlsplaylist

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Segment is one media segment of a media playlist.
type Segment struct {
	Seq           int64 // media sequence number
	URI           string
	Duration      time.Duration
	Discontinuity bool // preceded by #EXT-X-DISCONTINUITY
}

// Playlist is a parsed master or media playlist.
type Playlist struct {
	Master   bool
	Variants []string // master: variant URIs, in order

	TargetDuration time.Duration
	MediaSequence  int64
	Segments       []Segment
	EndList        bool
}

// Parse parses a playlist. It fails on a missing #EXTM3U, a media playlist
// without #EXT-X-TARGETDURATION, a malformed number, an #EXTINF or
// #EXT-X-STREAM-INF with no URI after it, or a playlist mixing both kinds.
func Parse(b []byte) (*Playlist, error) {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	p := &Playlist{}
	first := true
	var (
		pendingInf   *time.Duration
		pendingVar   bool
		discontinued bool
		haveTarget   bool
		media        bool
		line         int
	)
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if first {
			if s != "#EXTM3U" {
				return nil, errors.New("not an HLS playlist: first line is not #EXTM3U")
			}
			first = false
			continue
		}
		if s == "" {
			continue
		}
		if !strings.HasPrefix(s, "#") {
			switch {
			case pendingVar:
				p.Variants = append(p.Variants, s)
				pendingVar = false
			case pendingInf != nil:
				p.Segments = append(p.Segments, Segment{
					Seq: p.MediaSequence + int64(len(p.Segments)), URI: s,
					Duration: *pendingInf, Discontinuity: discontinued,
				})
				pendingInf, discontinued = nil, false
			default:
				return nil, fmt.Errorf("line %d: URI %q without #EXTINF or #EXT-X-STREAM-INF", line, s)
			}
			continue
		}
		tag, val, _ := strings.Cut(s, ":")
		switch tag {
		case "#EXT-X-STREAM-INF":
			pendingVar = true
			p.Master = true
		case "#EXT-X-TARGETDURATION":
			n, err := strconv.ParseFloat(val, 64)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("line %d: bad #EXT-X-TARGETDURATION %q", line, val)
			}
			p.TargetDuration = seconds(n)
			haveTarget, media = true, true
		case "#EXT-X-MEDIA-SEQUENCE":
			if len(p.Segments) > 0 {
				return nil, fmt.Errorf("line %d: #EXT-X-MEDIA-SEQUENCE after the first segment", line)
			}
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("line %d: bad #EXT-X-MEDIA-SEQUENCE %q", line, val)
			}
			p.MediaSequence = n
			media = true
		case "#EXTINF":
			d, _, _ := strings.Cut(val, ",")
			n, err := strconv.ParseFloat(strings.TrimSpace(d), 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("line %d: bad #EXTINF duration %q", line, d)
			}
			dur := seconds(n)
			pendingInf = &dur
			media = true
		case "#EXT-X-DISCONTINUITY":
			discontinued = true
		case "#EXT-X-ENDLIST":
			p.EndList = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read playlist: %w", err)
	}
	switch {
	case first:
		return nil, errors.New("not an HLS playlist: empty")
	case p.Master && media:
		return nil, errors.New("playlist has both variants and segments")
	case pendingVar:
		return nil, errors.New("#EXT-X-STREAM-INF without a URI")
	case pendingInf != nil:
		return nil, errors.New("#EXTINF without a URI")
	case p.Master:
		return p, nil
	case !haveTarget:
		return nil, errors.New("media playlist without #EXT-X-TARGETDURATION")
	}
	return p, nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
