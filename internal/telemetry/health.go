package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wardsec/ward/internal/problem"
)

// ReadyTimeout bounds one call of the ready function behind /readyz.
const ReadyTimeout = 5 * time.Second

// Mount registers the operator endpoints on mux:
//
//   - GET /metrics: reg in the Prometheus exposition format (nil reg: a
//     fresh NewRegistry).
//   - GET /healthz: 200 {"status":"ok"} while the process serves HTTP.
//   - GET /readyz: 200 {"status":"ok"} when ready returns nil (a nil ready
//     is always ready), else 503 application/problem+json of type
//     https://ward.dev/problems/not-ready.
//
// ready runs with the request's context bounded by ReadyTimeout. Its error is
// logged with slog.Default, not sent: the probe is unauthenticated. To choose
// what the client sees, return a *problem.Problem (its status is forced to
// 503).
func Mount(mux *http.ServeMux, reg *prometheus.Registry, ready func(context.Context) error) {
	if reg == nil {
		reg = NewRegistry()
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:            reg,
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeOK(w)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
			err := ready(ctx)
			cancel()
			if err != nil {
				writeNotReady(w, r, err)
				return
			}
		}
		writeOK(w)
	})
}

func writeOK(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

func writeNotReady(w http.ResponseWriter, r *http.Request, err error) {
	slog.WarnContext(r.Context(), "telemetry: not ready", "err", err)
	p := problem.New(http.StatusServiceUnavailable, "not-ready", "Not ready", "a dependency is not ready")
	var custom *problem.Problem
	if errors.As(err, &custom) {
		c := *custom
		c.Status = http.StatusServiceUnavailable
		p = &c
	}
	w.Header().Set("Cache-Control", "no-store")
	problem.Write(w, p)
}
