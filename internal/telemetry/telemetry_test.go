package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	tests := []struct {
		name          string
		level, format string
		wantErr       error
		wantDebug     bool
		wantJSON      bool
	}{
		{name: "defaults", wantJSON: true},
		{name: "debug json", level: "debug", format: "json", wantDebug: true, wantJSON: true},
		{name: "upper case", level: "DEBUG", format: "TEXT", wantDebug: true},
		{name: "warning", level: "warning", format: "text"},
		{name: "error", level: "error", wantJSON: true},
		{name: "bad level", level: "verbose", wantErr: ErrLogLevel},
		{name: "bad format", format: "xml", wantErr: ErrLogFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			logger, err := NewLogger(&buf, tt.level, tt.format)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "telemetry: ") {
					t.Fatalf("error %q does not name the package", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := logger.Enabled(t.Context(), slog.LevelDebug); got != tt.wantDebug {
				t.Fatalf("debug enabled = %v, want %v", got, tt.wantDebug)
			}
			logger.Error("boom", "k", "v")
			var m map[string]any
			isJSON := json.Unmarshal(buf.Bytes(), &m) == nil
			if isJSON != tt.wantJSON {
				t.Fatalf("output %q: json = %v, want %v", buf.String(), isJSON, tt.wantJSON)
			}
			if !strings.Contains(buf.String(), "boom") {
				t.Fatalf("output %q lacks message", buf.String())
			}
		})
	}
}

func TestNewLoggerBadLevelNamesValue(t *testing.T) {
	_, err := NewLogger(nil, "loud", "")
	if err == nil || !strings.Contains(err.Error(), `"loud"`) {
		t.Fatalf("err = %v, want it to name the bad value", err)
	}
}
