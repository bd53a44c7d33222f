package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"syscall"
)

// QuietErrorLog returns a *log.Logger for http.Server.ErrorLog (or any
// library that takes a *log.Logger) that forwards every line to logger at
// debug level. http.Server reports a peer that connects and closes, resets,
// or fails a TLS handshake with "EOF" on its error log; those are load
// balancer health checks and port scans, not errors, and must not page
// anyone.
func QuietErrorLog(logger *slog.Logger) *log.Logger {
	return log.New(quietWriter{logger}, "", 0)
}

type quietWriter struct{ l *slog.Logger }

func (q quietWriter) Write(p []byte) (int, error) {
	q.l.Log(context.Background(), slog.LevelDebug, strings.TrimRight(string(p), "\n"), "source", "http.Server")
	return len(p), nil
}

// slogPrintln adapts slog to promhttp's Logger interface.
type slogPrintln struct{ l *slog.Logger }

func (s slogPrintln) Println(v ...any) {
	s.l.Warn("metrics handler error", "err", strings.TrimRight(fmt.Sprintln(v...), "\n"))
}

// IsBenignConnError reports whether err is the normal end of a connection
// that a server should log at debug level at most: EOF (a TCP health check
// that connects and closes), a reset or broken pipe (a player that went
// away), a timeout, or a listener closed by the drain.
func IsBenignConnError(err error) bool {
	if err == nil {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, context.Canceled) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// Some layers flatten the error to text.
	msg := err.Error()
	return strings.Contains(msg, "connection reset by peer") || strings.Contains(msg, "broken pipe") ||
		strings.HasSuffix(msg, ": EOF")
}

// ConnErrorLevel is the level to log a connection-ending error at: debug
// for benign ones (IsBenignConnError), warn otherwise.
func ConnErrorLevel(err error) slog.Level {
	if IsBenignConnError(err) {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}
