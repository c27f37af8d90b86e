package pep_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/pdp"
	"github.com/wardsec/ward/pep"
)

// discard is a ResponseWriter that allocates nothing.
type discard struct{ h http.Header }

func (d discard) Header() http.Header       { return d.h }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// allowAll is a Checker that allows everything: the benchmark measures
// the PEP, not the guard (guard has its own BenchmarkAllowed).
type allowAll struct{}

func (allowAll) Check(context.Context, spiffeid.ID, string, string) error { return nil }

// BenchmarkMiddleware compares an allowed request through the PEP (peer
// from the context, route lookup in a table of 50 routes, guard call,
// decision in the context) with the bare handler, and with a middleware
// that only passes one context value (the request copy every such
// middleware pays).
func BenchmarkMiddleware(b *testing.B) {
	routes := []pep.Route{{Pattern: "GET /orders/{id}", Resource: "orders", Action: "read"}}
	for i := range 49 {
		routes = append(routes, pep.Route{Pattern: fmt.Sprintf("GET /r%d/{id}/items/{item}", i), Resource: fmt.Sprintf("r%d", i), Action: "read"})
	}
	p, err := pep.New(pep.Config{Guard: allowAll{}, Routes: routes, PeerID: peerFromContext})
	if err != nil {
		b.Fatal(err)
	}
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	// What any middleware that passes a value to the handler costs.
	withValue := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bare.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, webID)))
	})
	req := withPeer(httptest.NewRequest("GET", "/orders/17", nil), webID)
	w := discard{h: http.Header{}}
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{
		{name: "bare", h: bare},
		{name: "context-value", h: withValue},
		{name: "pep", h: p.Middleware(bare)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.h.ServeHTTP(w, req)
			}
		})
	}
}

// BenchmarkFullCheck is the whole in-process check of a request from the
// gateway: mTLS peer from the context, route lookup, access-list check,
// cached passport verification, Cedar decision over 1,000 policies with
// ward's entity model, and the decision in the context. It reports the
// median and 99th percentile of single checks (DESIGN.md: p50 ≤ 5 µs).
func BenchmarkFullCheck(b *testing.B) {
	s, v := passportFixture(b)
	raw := mint(b, s, time.Now(), 60)
	if _, err := v.Verify(context.Background(), raw); err != nil {
		b.Fatal(err)
	}
	var text strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&text, "permit(principal in Role::\"r%d\", action == Action::\"a%d\", resource is res%d) when { context.tenant == principal.tenant };\n", i%200, i%10, i%50)
	}
	text.WriteString(`permit(principal, action == Action::"read", resource is orders) when { context.tenant == "acme" };` + "\n")
	set, err := pdp.NewSet(pdp.Content{Version: 1, Policies: []pdp.File{{Name: "bench.cedar", Text: text.String()}}})
	if err != nil {
		b.Fatal(err)
	}
	p, err := pep.New(pep.Config{Guard: allowAll{}, Routes: ordersRoutes, PeerID: peerFromContext, Passports: v, PDP: pdp.NewFixed("orders", set)})
	if err != nil {
		b.Fatal(err)
	}
	allowed := false
	h := p.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { allowed = true }))
	req := withPeer(httptest.NewRequest("GET", "/orders/17", nil), webID)
	req.Header.Set("Ward-Passport", raw)
	w := discard{h: http.Header{}}
	h.ServeHTTP(w, req)
	if !allowed {
		b.Fatal("the request was refused")
	}
	lat := make([]time.Duration, 0, 1<<20)
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		h.ServeHTTP(w, req)
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(t0))
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}
