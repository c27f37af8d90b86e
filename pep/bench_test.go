package pep_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

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
