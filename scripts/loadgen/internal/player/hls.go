package player

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/livecluster/livecluster/scripts/loadgen/internal/hlsplaylist"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stats"
)

// maxPlaylist bounds a playlist body.
const maxPlaylist = 1 << 20

// liveEdgeSegments is how many segments from the end of a live playlist a
// player starts, as hls.js and ffmpeg do (3).
const liveEdgeSegments = 3

// playHLS plays HLS as a live player does: it follows a master playlist's
// first variant, reloads the media playlist as cfg.HLSReload says (by
// default as RFC 8216 asks and hls.js and ffmpeg do: reloadWait), fetches
// each new segment once and in order, and stops after #EXT-X-ENDLIST once
// everything listed was fetched.
//
// Media progress is the end of the last segment fetched, so the client is
// late when more than the threshold of wall time passed since its first
// segment arrived beyond the media it has: the stall a real player would show.
func playHLS(ctx context.Context, rawURL string, cfg Config, run *stats.Run, c *stats.Client) error {
	client := httpClient(&run.Bytes, cfg.Stall, cfg.RequestTimeout)
	defer client.CloseIdleConnections()
	u, err := url.Parse(rawURL)
	if err != nil {
		return fail("connect", err)
	}
	loaded := time.Now() // when the playlist in pl started loading
	pl, err := fetchPlaylist(ctx, client, u)
	if err != nil {
		return err
	}
	if pl.Master {
		if len(pl.Variants) == 0 {
			return fail("parse", errors.New("master playlist without variants"))
		}
		if u, err = u.Parse(pl.Variants[0]); err != nil {
			return fail("parse", fmt.Errorf("variant URI: %w", err))
		}
		loaded = time.Now()
		if pl, err = fetchPlaylist(ctx, client, u); err != nil {
			return err
		}
		if pl.Master {
			return fail("parse", errors.New("variant is a master playlist too"))
		}
	}
	c.Connected()
	var (
		next    int64 = -1 // media sequence of the next segment to fetch
		lastSeq int64 = -1 // media sequence of the previous playlist
		// the last segment fetched: a jump right after it at a
		// discontinuity is the numbering's, not the player falling behind
		lastFetched int64 = -2
		media       time.Duration
		prevEnd     int64 = -1 // media sequence after the previous playlist's last segment
	)
	for {
		if pl.MediaSequence < lastSeq {
			return fail("hls_seq_back", fmt.Errorf("media sequence went from %d to %d", lastSeq, pl.MediaSequence))
		}
		lastSeq = pl.MediaSequence
		end := pl.MediaSequence + int64(len(pl.Segments))
		if next < 0 {
			next = max(pl.MediaSequence, end-liveEdgeSegments)
		}
		if next < pl.MediaSequence && len(pl.Segments) > 0 && pl.Segments[0].Discontinuity && next == lastFetched+1 {
			// The numbering jumped forward at a discontinuity (a new owner
			// origin numbers above the old one, docs/edge.md "HLS"): the
			// numbers in between never existed, nothing was missed.
			next = pl.MediaSequence
		}
		if next < pl.MediaSequence {
			run.Error(HLS, "hls_behind", fmt.Errorf("segment %d left the playlist (now %d..%d) before it was fetched", next, pl.MediaSequence, end-1))
			next = pl.MediaSequence
		}
		for _, s := range pl.Segments {
			if s.Seq < next {
				continue
			}
			su, err := u.Parse(s.URI)
			if err != nil {
				return fail("parse", fmt.Errorf("segment URI: %w", err))
			}
			if err := fetchSegment(ctx, client, su); err != nil {
				return err
			}
			if media == 0 {
				c.Media(0, false) // the clock starts at the first segment's start
			}
			media += s.Duration
			c.Media(media, true) // a segment starts with a keyframe
			next, lastFetched = s.Seq+1, s.Seq
		}
		if pl.EndList && next >= end {
			return nil
		}
		wait := reloadWait(pl, end > prevEnd, cfg.HLSReload)
		prevEnd = end
		if cfg.HLSReload == ReloadHalf {
			loaded = time.Now() // as before: the wait starts after the segments
		}
		if d := time.Until(loaded.Add(wait)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return nil
		}
		loaded = time.Now()
		if pl, err = fetchPlaylist(ctx, client, u); err != nil {
			return err
		}
		if pl.Master {
			return fail("parse", errors.New("media playlist turned into a master playlist"))
		}
	}
}

// reloadWait is how long after it started loading pl a player loads the
// playlist again. changed: pl is the first playlist or lists a segment the
// previous one did not. mode ReloadHalf: half the target duration always.
// ReloadRFC (RFC 8216 section 6.3.4; hls.js computeReloadInterval, ffmpeg's
// hls demuxer): after a changed playlist the target duration, or the last
// segment's duration when shorter; after an unchanged one half the target
// duration. Never less than 100 ms.
func reloadWait(pl *hlsplaylist.Playlist, changed bool, mode string) time.Duration {
	wait := pl.TargetDuration / 2
	if mode != ReloadHalf && changed {
		wait = pl.TargetDuration
		if n := len(pl.Segments); n > 0 && pl.Segments[n-1].Duration > 0 && pl.Segments[n-1].Duration < wait {
			wait = pl.Segments[n-1].Duration
		}
	}
	return max(wait, 100*time.Millisecond)
}

func get(ctx context.Context, client *http.Client, u *url.URL) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fail("connect", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fail("connect", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, httpError(resp, "GET "+u.String())
	}
	return resp, nil
}

func fetchPlaylist(ctx context.Context, client *http.Client, u *url.URL) (*hlsplaylist.Playlist, error) {
	resp, err := get(ctx, client, u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPlaylist+1))
	if err != nil {
		return nil, fail("read", fmt.Errorf("read playlist %s: %w", u, err))
	}
	if len(b) > maxPlaylist {
		return nil, fail("parse", fmt.Errorf("playlist %s exceeds %d bytes", u, maxPlaylist))
	}
	pl, err := hlsplaylist.Parse(b)
	if err != nil {
		return nil, fail("parse", fmt.Errorf("playlist %s: %w", u, err))
	}
	return pl, nil
}

func fetchSegment(ctx context.Context, client *http.Client, u *url.URL) error {
	resp, err := get(ctx, client, u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fail("read", fmt.Errorf("read segment %s: %w", u, err))
	}
	return nil
}
