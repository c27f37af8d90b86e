package pep_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/pep"
)

// readOnly stands in for a *guard.Guard whose access list grants web the
// action read on orders.
type readOnly struct{}

func (readOnly) Check(_ context.Context, caller spiffeid.ID, resource, action string) error {
	if caller.String() != "spiffe://ward.test/svc/web" {
		return guard.ErrUnknownCaller
	}
	if resource != "orders" || action != "read" {
		return guard.ErrActionNotAllowed
	}
	return nil
}

func ExamplePEP_Middleware() {
	p, err := pep.New(pep.Config{
		Guard: readOnly{}, // guard.NewForSource(ctx, src, src.AuthorityURL(), guard.Config{...})
		Routes: []pep.Route{
			{Pattern: "GET /orders/{id}", Resource: "orders", Action: "read"},
			{Pattern: "POST /orders", Resource: "orders", Action: "write"},
		},
		// Leave PeerID nil behind identity's Source.Middleware; this
		// example has no TLS, so it names the caller itself.
		PeerID: func(*http.Request) (spiffeid.ID, error) {
			return spiffeid.RequireFromString("spiffe://ward.test/svc/web"), nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	orders := http.NewServeMux()
	orders.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		d, _ := pep.DecisionFromContext(r.Context())
		fmt.Fprintf(w, "order %s for %s (%s)", r.PathValue("id"), d.Caller, d.Reason)
	})
	handler := p.Middleware(orders)

	for _, req := range []*http.Request{
		httptest.NewRequest("GET", "/orders/17", nil),
		httptest.NewRequest("POST", "/orders", nil),
		httptest.NewRequest("GET", "/admin", nil),
	} {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		fmt.Println(req.Method, req.URL.Path, rec.Code)
		if rec.Code == http.StatusOK {
			fmt.Println(rec.Body)
		}
	}
	// Output:
	// GET /orders/17 200
	// order 17 for spiffe://ward.test/svc/web (granted)
	// POST /orders 403
	// GET /admin 403
}
