package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/livecluster/livecluster/scripts/drills/internal/cluster"
)

// ErrNoOwner: the OCM says the stream is not owned (404).
var ErrNoOwner = errors.New("stream not owned")

// Owner asks the OCM's JSON API who owns default/<app>/<name>: the owner's
// node id and the epoch. ErrNoOwner when nobody does.
func Owner(ctx context.Context, ocm *cluster.Container, app, name string) (string, int64, error) {
	addr, err := ocm.Addr(ctx, cluster.PortAdmin)
	if err != nil {
		return "", 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/v1/streams/default/"+app+"/"+name, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("owner of %s/%s: %w", app, name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusNotFound {
		return "", 0, ErrNoOwner
	}
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("owner of %s/%s: %s: %s", app, name, resp.Status, b)
	}
	var v struct {
		Stream struct {
			OwnerNodeID string      `json:"ownerNodeId"`
			Epoch       json.Number `json:"epoch"`
		} `json:"stream"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return "", 0, fmt.Errorf("owner of %s/%s: %w in %s", app, name, err, b)
	}
	epoch, _ := strconv.ParseInt(v.Stream.Epoch.String(), 10, 64)
	return v.Stream.OwnerNodeID, epoch, nil
}

// WaitOwner polls Owner every 50 ms until want(owner) holds and returns
// that owner and when it was first seen.
func WaitOwner(ctx context.Context, ocm *cluster.Container, app, name string, want func(string) bool) (string, time.Time, error) {
	var last error
	for {
		o, _, err := Owner(ctx, ocm, app, name)
		if err == nil && want(o) {
			return o, time.Now(), nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("owner %s", o)
		}
		if Sleep(ctx, 50*time.Millisecond) != nil {
			return "", time.Time{}, fmt.Errorf("waiting for the owner of %s/%s (last: %v): %w", app, name, last, ctx.Err())
		}
	}
}
