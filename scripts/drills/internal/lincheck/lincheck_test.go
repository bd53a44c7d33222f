package lincheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livecluster/livecluster/node/ocmclient"
)

const k = "default/live/s"

func reg(node string, lease, call, ret int64) ocmclient.HistoryEvent {
	return ocmclient.HistoryEvent{Node: node, Op: ocmclient.HistRegister, Lease: lease, Call: call, Return: ret, Result: ocmclient.HistOK}
}

func claim(node string, lease, call, ret int64, result, owner string, epoch int64) ocmclient.HistoryEvent {
	return ocmclient.HistoryEvent{Node: node, Op: ocmclient.HistClaim, Key: k, Lease: lease, Call: call, Return: ret,
		Result: result, OutOwner: owner, OutEpoch: epoch}
}

func release(node string, lease, epoch, call, ret int64, result string) ocmclient.HistoryEvent {
	return ocmclient.HistoryEvent{Node: node, Op: ocmclient.HistRelease, Key: k, Lease: lease, Epoch: epoch, Call: call, Return: ret, Result: result}
}

func lost(node string, lease, at int64) ocmclient.HistoryEvent {
	return ocmclient.HistoryEvent{Node: node, Op: ocmclient.HistSessionLost, Lease: lease, Call: at, Return: at, Result: ocmclient.HistOK}
}

func check(t *testing.T, evs []ocmclient.HistoryEvent) Result {
	t.Helper()
	html := filepath.Join(t.TempDir(), "lin.html")
	res, err := Check(evs, 10*time.Second, html)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != "Ok" {
		if _, err := os.Stat(html); err != nil || res.HTML != html {
			t.Errorf("verdict %s but no visualization: %v", res.Verdict, err)
		}
	}
	return res
}

func TestLinearizableHistories(t *testing.T) {
	for name, evs := range map[string][]ocmclient.HistoryEvent{
		"claim, refused, release, claim": {
			reg("o1", 1, 0, 5), reg("o2", 2, 0, 5),
			claim("o1", 1, 10, 20, ocmclient.HistOK, "o1", 100),
			claim("o2", 2, 15, 25, ocmclient.HistOwned, "o1", 100),
			release("o1", 1, 100, 30, 40, ocmclient.HistOK),
			release("o1", 1, 100, 41, 42, ocmclient.HistNotFound),
			claim("o2", 2, 35, 50, ocmclient.HistOK, "o2", 104), // concurrent with the release
			release("o1", 1, 100, 60, 61, ocmclient.HistStale),
		},
		// o1's lease expires while it is cut off; o2 claims before o1 finds out.
		"lease expiry seen late": {
			reg("o1", 1, 0, 5), reg("o2", 2, 0, 5),
			claim("o1", 1, 10, 20, ocmclient.HistOK, "o1", 100),
			claim("o2", 2, 30, 31, ocmclient.HistOK, "o2", 120),
			lost("o1", 1, 50),
			claim("o1", 1, 60, 61, ocmclient.HistSessionGone, "", 0),
			reg("o1", 3, 62, 63),
			claim("o1", 3, 70, 71, ocmclient.HistOwned, "o2", 120),
		},
		// An answer lost in an outage: the claim did apply, learnt later.
		"unknown claim applied": {
			reg("o1", 1, 0, 5),
			claim("o1", 1, 10, 20, ocmclient.HistUnknown, "", 0),
			claim("o1", 1, 30, 40, ocmclient.HistOwned, "o1", 100),
			release("o1", 1, 100, 50, 60, ocmclient.HistOK),
		},
		"killed owner never finds out": {
			reg("o1", 1, 0, 5), reg("o2", 2, 0, 5),
			claim("o1", 1, 10, 20, ocmclient.HistOK, "o1", 100),
			claim("o2", 2, 30, 31, ocmclient.HistOwned, "o1", 100),
			claim("o2", 2, 40, 41, ocmclient.HistOK, "o2", 130),
		},
	} {
		t.Run(name, func(t *testing.T) {
			if res := check(t, evs); res.Verdict != "Ok" {
				t.Fatalf("verdict %s (bad keys %v), want Ok", res.Verdict, res.BadKeys)
			}
		})
	}
}

func TestNonLinearizableHistories(t *testing.T) {
	for name, evs := range map[string][]ocmclient.HistoryEvent{
		// Two owners at once: o2 claims while o1's lease is alive (o1's
		// later call with it is answered, not refused as session lost).
		"two owners": {
			reg("o1", 1, 0, 5), reg("o2", 2, 0, 5),
			claim("o1", 1, 10, 20, ocmclient.HistOK, "o1", 100),
			claim("o2", 2, 30, 31, ocmclient.HistOK, "o2", 110),
			claim("o1", 1, 40, 41, ocmclient.HistOwned, "o2", 110),
		},
		"epoch goes back": {
			reg("o1", 1, 0, 5), reg("o2", 2, 0, 5),
			claim("o1", 1, 10, 20, ocmclient.HistOK, "o1", 100),
			release("o1", 1, 100, 21, 22, ocmclient.HistOK),
			claim("o2", 2, 30, 31, ocmclient.HistOK, "o2", 90),
		},
		"claim with a lease already seen lost": {
			reg("o1", 1, 0, 5),
			lost("o1", 1, 8),
			claim("o1", 1, 10, 20, ocmclient.HistOK, "o1", 100),
		},
		// o1 proves its lease alive on another key after o2 took s over.
		"two owners, the proof on another key": {
			reg("o1", 1, 0, 5), reg("o2", 2, 0, 5),
			claim("o1", 1, 10, 20, ocmclient.HistOK, "o1", 100),
			claim("o2", 2, 30, 31, ocmclient.HistOK, "o2", 110),
			{Node: "o1", Op: ocmclient.HistHeartbeat, Lease: 1, Call: 40, Return: 41, Result: ocmclient.HistOK},
		},
		"stale owner named after a release": {
			reg("o1", 1, 0, 5), reg("o2", 2, 0, 5),
			claim("o1", 1, 10, 20, ocmclient.HistOK, "o1", 100),
			release("o1", 1, 100, 21, 22, ocmclient.HistOK),
			claim("o2", 2, 30, 31, ocmclient.HistOwned, "o1", 100),
		},
	} {
		t.Run(name, func(t *testing.T) {
			if res := check(t, evs); res.Verdict != "Illegal" || len(res.BadKeys) != 1 {
				t.Fatalf("verdict %s, bad keys %v; want Illegal for %s", res.Verdict, res.BadKeys, k)
			}
		})
	}
}

func TestReadRejectsGarbage(t *testing.T) {
	if _, err := Read(strings.NewReader("{\"node\":\"o1\"}\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("Read: %v, want an error naming line 2", err)
	}
}
