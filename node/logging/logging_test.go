package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestLevelReloadsLive(t *testing.T) {
	var buf bytes.Buffer
	var lv slog.LevelVar
	lv.Set(slog.LevelInfo)
	l := New(&buf, &lv, slog.String("node", "n1")).With("component", "x")
	l.Debug("hidden")
	lv.Set(slog.LevelDebug)
	l.Debug("shown")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines: %q", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m["msg"] != "shown" || m["node"] != "n1" || m["component"] != "x" || m["level"] != "DEBUG" {
		t.Fatalf("unexpected record %v", m)
	}
}
