package telemetry

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Names of the HTTP metrics recorded by HTTPMetrics.
const (
	MetricHTTPRequests = "ward_http_requests_total"
	MetricHTTPDuration = "ward_http_request_duration_seconds"
)

// httpDurationBuckets reach below a millisecond: issuing an SVID or answering
// OCSP takes well under one.
var httpDurationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewRegistry returns a Prometheus registry holding the Go runtime and process
// collectors. Each server builds its own registry (no global state), so tests
// can run many servers in one process.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// HTTPMetrics wraps next so that each request is counted in
// ward_http_requests_total{handler,code,method} and timed in
// ward_http_request_duration_seconds{handler}, with handler = name.
//
// Many handlers may be wrapped against the same registry: the metrics are
// registered once and shared. Methods outside the standard set are recorded
// as "unknown", so clients cannot grow the label space. The wrapped
// ResponseWriter keeps http.Flusher and friends (streaming still works). A
// nil reg returns next unchanged. HTTPMetrics panics if reg already holds
// different metrics under these names, like prometheus.MustRegister.
func HTTPMetrics(reg prometheus.Registerer, name string, next http.Handler) http.Handler {
	if reg == nil {
		return next
	}
	requests := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricHTTPRequests,
		Help: "HTTP requests served, by handler, status code and method.",
	}, []string{"handler", "code", "method"}))
	duration := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricHTTPDuration,
		Help:    "Time to serve an HTTP request, by handler.",
		Buckets: httpDurationBuckets,
	}, []string{"handler"}))

	labels := prometheus.Labels{"handler": name}
	h := promhttp.InstrumentHandlerCounter(requests.MustCurryWith(labels), next)
	return promhttp.InstrumentHandlerDuration(duration.MustCurryWith(labels), h)
}

// register registers c, or returns the collector already registered under the
// same description.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(fmt.Sprintf("telemetry: registering HTTP metrics: %v", err))
}
