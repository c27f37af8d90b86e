package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wardsec/ward/internal/problem"
)

func TestNewRegistry(t *testing.T) {
	mfs, err := NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"go_goroutines", "process_start_time_seconds"} {
		if !names[want] {
			t.Errorf("registry lacks %s", want)
		}
	}
}

func TestHTTPMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	mux := http.NewServeMux()
	mux.Handle("POST /v1/svid", HTTPMetrics(reg, "svid", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	})))
	// A second handler on the same registry shares the metrics.
	mux.Handle("GET /v1/watch", HTTPMetrics(reg, "watch", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(http.Flusher); !ok {
			t.Error("wrapped ResponseWriter lost http.Flusher")
		}
		w.WriteHeader(http.StatusBadRequest)
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for range 3 {
		do(t, http.MethodPost, srv.URL+"/v1/svid")
	}
	do(t, http.MethodGet, srv.URL+"/v1/watch")

	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{name: "svid", labels: map[string]string{"handler": "svid", "code": "201", "method": "post"}, want: 3},
		{name: "watch", labels: map[string]string{"handler": "watch", "code": "400", "method": "get"}, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := find(t, reg, MetricHTTPRequests, tt.labels)
			if got := m.GetCounter().GetValue(); got != tt.want {
				t.Fatalf("%s%v = %v, want %v", MetricHTTPRequests, tt.labels, got, tt.want)
			}
			h := find(t, reg, MetricHTTPDuration, map[string]string{"handler": tt.labels["handler"]})
			if got := h.GetHistogram().GetSampleCount(); got != uint64(tt.want) {
				t.Fatalf("%s count = %v, want %v", MetricHTTPDuration, got, tt.want)
			}
		})
	}
}

func TestHTTPMetricsNilRegistry(t *testing.T) {
	next := http.NotFoundHandler()
	if h := HTTPMetrics(nil, "x", next); h == nil {
		t.Fatal("nil handler")
	}
}

func TestHTTPMetricsConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricHTTPRequests, Help: "not ours"}))
	defer func() {
		if recover() == nil {
			t.Fatal("no panic on a conflicting metric")
		}
	}()
	HTTPMetrics(reg, "x", http.NotFoundHandler())
}

func TestMount(t *testing.T) {
	errDB := errors.New("store: ping: dial tcp 10.0.0.7:5432: connection refused")
	var readyErr error
	reg := NewRegistry()
	mux := http.NewServeMux()
	Mount(mux, reg, func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("ready called without a deadline")
		}
		return readyErr
	})
	mux.Handle("GET /v1/bundle", HTTPMetrics(reg, "bundle", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	do(t, http.MethodGet, srv.URL+"/v1/bundle")

	tests := []struct {
		name       string
		method     string
		path       string
		readyErr   error
		wantStatus int
		wantCT     string
		wantBody   []string
		notInBody  []string
	}{
		{name: "healthz", method: "GET", path: "/healthz", wantStatus: 200, wantCT: "application/json", wantBody: []string{`{"status":"ok"}`}},
		{name: "healthz HEAD", method: "HEAD", path: "/healthz", wantStatus: 200},
		{name: "healthz POST", method: "POST", path: "/healthz", wantStatus: 405},
		{name: "ready", method: "GET", path: "/readyz", wantStatus: 200, wantCT: "application/json", wantBody: []string{`{"status":"ok"}`}},
		{
			name: "not ready", method: "GET", path: "/readyz", readyErr: errDB,
			wantStatus: 503, wantCT: problem.ContentType,
			wantBody:  []string{`"type":"https://ward.dev/problems/not-ready"`, `"status":503`},
			notInBody: []string{"10.0.0.7", "connection refused"},
		},
		{
			name: "not ready with problem", method: "GET", path: "/readyz",
			readyErr:   problem.New(500, "ca-unavailable", "CA unavailable", "no active intermediate"),
			wantStatus: 503, wantCT: problem.ContentType,
			wantBody: []string{`"type":"https://ward.dev/problems/ca-unavailable"`, `"status":503`, "no active intermediate"},
		},
		{
			name: "metrics", method: "GET", path: "/metrics", wantStatus: 200, wantCT: "text/plain",
			wantBody: []string{"go_goroutines", `ward_http_requests_total{code="200",handler="bundle",method="get"} 1`, "ward_http_request_duration_seconds_bucket"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			readyErr = tt.readyErr
			resp, body := do(t, tt.method, srv.URL+tt.path)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tt.wantCT) {
				t.Fatalf("Content-Type = %q, want %q", ct, tt.wantCT)
			}
			for _, s := range tt.wantBody {
				if !strings.Contains(body, s) {
					t.Errorf("body lacks %s:\n%s", s, body)
				}
			}
			for _, s := range tt.notInBody {
				if strings.Contains(body, s) {
					t.Errorf("body leaks %q: %s", s, body)
				}
			}
			if tt.wantCT == problem.ContentType {
				var p problem.Problem
				if err := json.Unmarshal([]byte(body), &p); err != nil {
					t.Fatalf("problem body: %v", err)
				}
			}
		})
	}
}

func TestMountNilRegistryAndReady(t *testing.T) {
	mux := http.NewServeMux()
	Mount(mux, nil, nil)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
		if resp, body := do(t, "GET", srv.URL+path); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
}

func do(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// find returns the metric of family name whose labels include want.
func find(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			return m
		}
	}
	t.Fatalf("no %s%v", name, want)
	return nil
}
