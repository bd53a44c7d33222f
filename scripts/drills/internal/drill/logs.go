package drill

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/livecluster/livecluster/scripts/drills/internal/cluster"
)

// LogLine is one JSON log line of a node: its time, message and fields.
type LogLine struct {
	Time   time.Time
	Msg    string
	Fields map[string]any
}

// Logs returns k's JSON log lines at or after since whose message is one
// of msgs (every line when msgs is empty). The containers share the
// host's clock, so their times compare with the drill's.
func Logs(ctx context.Context, k *cluster.Container, since time.Time, msgs ...string) ([]LogLine, error) {
	b, err := k.Logs(ctx)
	if err != nil {
		return nil, err
	}
	var out []LogLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		ts, _ := m["time"].(string)
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || t.Before(since) {
			continue
		}
		msg, _ := m["msg"].(string)
		if len(msgs) > 0 && !contains(msgs, msg) {
			continue
		}
		out = append(out, LogLine{Time: t, Msg: msg, Fields: m})
	}
	return out, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
