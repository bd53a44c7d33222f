// Package logging builds the JSON slog logger every binary writes to stdout.
// The level lives in a slog.LevelVar so a config reload changes it live.
package logging

import (
	"io"
	"log/slog"
)

// New returns a JSON logger writing to w at the level held by level. Change
// the level later with level.Set; the logger and every logger derived from
// it (With, WithGroup) follow.
func New(w io.Writer, level *slog.LevelVar, attrs ...slog.Attr) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(h.WithAttrs(attrs))
}

// Discard returns a logger that drops everything (for tests and tools).
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
