package player

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/livecluster/livecluster/scripts/loadgen/internal/flvtag"
	"github.com/livecluster/livecluster/scripts/loadgen/internal/stats"
)

// playFLV plays HTTP-FLV: one GET, then FLV tags until ctx ends.
func playFLV(ctx context.Context, rawURL string, cfg Config, run *stats.Run, c *stats.Client) error {
	client := httpClient(&run.Bytes, cfg.Stall, 0)
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return fail("connect", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fail("connect", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return httpError(resp, "GET "+rawURL)
	}
	c.Connected()
	r, err := flvtag.NewReader(resp.Body)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fail("ended", err)
		}
		return fail("parse", err)
	}
	r.Prefix = cfg.BodyPrefix
	m := media{lenSize: 4}
	for {
		t, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fail("ended", fmt.Errorf("server closed the stream: %w", err))
			}
			return fail("read", err)
		}
		m.tag(t, c)
	}
}
