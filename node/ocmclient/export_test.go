package ocmclient

import (
	"context"
	"time"
)

// SetSleep replaces the pause between retries, for tests that observe it.
func SetSleep(c *Client, f func(ctx context.Context, d time.Duration) bool) { c.sleep = f }
