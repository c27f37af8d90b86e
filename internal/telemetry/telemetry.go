// Package telemetry holds what every ward server exposes to operators:
// structured logs, Prometheus metrics and health probes.
//
//	logger, err := telemetry.NewLogger(os.Stderr, "info", "json")
//	reg := telemetry.NewRegistry()
//	mux := http.NewServeMux()
//	telemetry.Mount(mux, reg, store.Ping) // GET /metrics, /healthz, /readyz
//	mux.Handle("POST /v1/svid", telemetry.HTTPMetrics(reg, "svid", svidHandler))
package telemetry

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Errors returned by NewLogger for a bad setting.
var (
	ErrLogLevel  = errors.New("telemetry: unknown log level")
	ErrLogFormat = errors.New("telemetry: unknown log format")
)

// NewLogger returns a structured logger writing to w (nil means os.Stderr).
//
// level is one of debug, info, warn (or warning) and error, case-insensitive;
// "" means info. format is "json" (the default when "") or "text". A bad value
// yields an error wrapping ErrLogLevel or ErrLogFormat that names it.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	if w == nil {
		w = os.Stderr
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(strings.TrimSpace(format)) {
	case "", "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("%w %q (want json or text)", ErrLogFormat, format)
	}
}

// ParseLevel parses a log level as NewLogger does.
func ParseLevel(level string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(level)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	default:
		return 0, fmt.Errorf("%w %q (want debug, info, warn or error)", ErrLogLevel, level)
	}
}
