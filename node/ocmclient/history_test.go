package ocmclient_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/livecluster/livecluster/node/ocmclient"
	"github.com/livecluster/livecluster/node/ocmclient/ocmtest"
	ocmv1 "github.com/livecluster/livecluster/proto/livecluster/ocm/v1"
	"github.com/livecluster/livecluster/streamkey"
)

func readHistory(t *testing.T, path string) []ocmclient.HistoryEvent {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []ocmclient.HistoryEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev ocmclient.HistoryEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("history line %q: %v", sc.Text(), err)
		}
		out = append(out, ev)
	}
	return out
}

// Every ownership call, the registration and the loss of the session are
// logged with their arguments, times and typed result.
func TestHistoryRecordsCalls(t *testing.T) {
	srv := ocmtest.Start(t)
	key := streamkey.Key{Vhost: "default", App: "live", Name: "h"}
	srv.OnClaim = func(r *ocmv1.ClaimStreamRequest) (*ocmv1.ClaimStreamResponse, error) {
		if r.GetNodeId() == "o1" {
			return &ocmv1.ClaimStreamResponse{Stream: &ocmv1.Stream{Key: r.GetKey(), OwnerNodeId: "o1", Epoch: 7}}, nil
		}
		return nil, ocmtest.Owned(&ocmv1.Stream{Key: r.GetKey(), OwnerNodeId: "o1", Epoch: 7})
	}
	srv.OnRelease = func(*ocmv1.ReleaseStreamRequest) (*ocmv1.ReleaseStreamResponse, error) {
		return nil, ocmtest.Status(codes.FailedPrecondition, ocmv1.ReasonStaleEpoch, "stale")
	}
	srv.OnLookup = func(*ocmv1.LookupStreamRequest) (*ocmv1.LookupStreamResponse, error) {
		return nil, ocmtest.Status(codes.Unavailable, "", "etcd down")
	}
	path := filepath.Join(t.TempDir(), "h.jsonl")
	t.Setenv(ocmclient.HistoryEnv, path)
	h, err := ocmclient.HistoryFromEnv()
	if err != nil || h == nil {
		t.Fatalf("HistoryFromEnv: %v, %v", h, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c1 := srv.Client(t, "o1", ocmclient.Options{History: h})
	c2 := srv.Client(t, "o2", ocmclient.Options{History: h})
	c1.Start(ctx)
	c2.Start(ctx)
	wait := func(c *ocmclient.Client) ocmclient.Session {
		for ctx.Err() == nil {
			if s, ok := c.Session(); ok {
				return s
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("no session")
		return ocmclient.Session{}
	}
	s1, s2 := wait(c1), wait(c2)
	before := time.Now().UnixNano()
	if _, err := c1.Claim(ctx, s1, ocmclient.ClaimRequest{Key: key}); err != nil {
		t.Fatal(err)
	}
	_, _ = c2.Claim(ctx, s2, ocmclient.ClaimRequest{Key: key})
	_ = c1.Release(ctx, s1, key, 3)
	_, _, _ = c2.Lookup(ctx, key)
	srv.Expire() // both sessions lost: the heartbeats (or session streams) find out
	for ctx.Err() == nil {
		if s, _ := c1.Session(); s.LeaseID != s1.LeaseID {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Err(); err != nil {
		t.Fatal(err)
	}

	evs := readHistory(t, path)
	find := func(node, op string) *ocmclient.HistoryEvent {
		for i := range evs {
			if evs[i].Node == node && evs[i].Op == op {
				return &evs[i]
			}
		}
		t.Fatalf("no %s by %s in %+v", op, node, evs)
		return nil
	}
	if r := find("o1", ocmclient.HistRegister); r.Lease != s1.LeaseID || r.Result != ocmclient.HistOK {
		t.Errorf("register = %+v, want lease %d ok", r, s1.LeaseID)
	}
	c := find("o1", ocmclient.HistClaim)
	if c.Result != ocmclient.HistOK || c.OutOwner != "o1" || c.OutEpoch != 7 || c.Lease != s1.LeaseID || c.Key != key.String() {
		t.Errorf("claim = %+v", c)
	}
	if c.Call < before || c.Return < c.Call {
		t.Errorf("claim times %d..%d, want from %d on and in order", c.Call, c.Return, before)
	}
	if o := find("o2", ocmclient.HistClaim); o.Result != ocmclient.HistOwned || o.OutOwner != "o1" || o.OutEpoch != 7 {
		t.Errorf("refused claim = %+v", o)
	}
	if r := find("o1", ocmclient.HistRelease); r.Result != ocmclient.HistStale || r.Epoch != 3 {
		t.Errorf("release = %+v", r)
	}
	if l := find("o2", ocmclient.HistLookup); l.Result != ocmclient.HistUnknown || l.Err == "" {
		t.Errorf("lookup = %+v", l)
	}
	if l := find("o1", ocmclient.HistSessionLost); l.Lease != s1.LeaseID {
		t.Errorf("session lost = %+v, want lease %d", l, s1.LeaseID)
	}
}

// Without the variable there is no log and nothing fails.
func TestHistoryOff(t *testing.T) {
	t.Setenv(ocmclient.HistoryEnv, "")
	h, err := ocmclient.HistoryFromEnv()
	if h != nil || err != nil {
		t.Fatalf("HistoryFromEnv = %v, %v; want nil, nil", h, err)
	}
	h.Record(ocmclient.HistoryEvent{Op: "claim"}) // a nil log records nothing
	t.Setenv(ocmclient.HistoryEnv, filepath.Join(t.TempDir(), "no", "such", "dir", "h.jsonl"))
	if _, err := ocmclient.HistoryFromEnv(); err == nil {
		t.Fatal("HistoryFromEnv with an unwritable path: no error")
	}
}
