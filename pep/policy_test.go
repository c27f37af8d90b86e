package pep_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/pdp"
	"github.com/wardsec/ward/pep"
)

// stubPDP answers with a fixed decision and remembers the input.
type stubPDP struct {
	d   pdp.Decision
	err error
	in  *pdp.Input
}

func (s *stubPDP) Decide(_ context.Context, in *pdp.Input) (pdp.Decision, error) {
	s.in = in
	return s.d, s.err
}

type recorder struct{ events []audit.Event }

func (r *recorder) Write(e audit.Event) { r.events = append(r.events, e) }

func TestPolicyDecisions(t *testing.T) {
	cases := []struct {
		name   string
		pdp    *stubPDP
		status int
		slug   string
		reason string
	}{
		{"permit", &stubPDP{d: pdp.Decision{Allowed: true, Enforced: true, Version: 3, Reason: pdp.ReasonPermit, Policies: []string{"read"}}}, 200, "", pep.ReasonGranted},
		{"no policy in the domain", &stubPDP{d: pdp.Decision{Allowed: true, Reason: pdp.ReasonNoPolicy}}, 200, "", pep.ReasonGranted},
		{"forbid", &stubPDP{d: pdp.Decision{Enforced: true, Version: 4, Reason: pdp.ReasonForbid, Policies: []string{"no-bob"}}}, 403, "policy-denied", pep.ReasonPolicyDenied},
		{"not ready", &stubPDP{err: pdp.ErrNotReady}, 503, "policy-unavailable", pep.ReasonPolicyUnavailable},
		{"provider failed", &stubPDP{d: pdp.Decision{Enforced: true, Reason: pdp.ReasonEntities}, err: pdp.ErrEntities}, 403, "policy-denied", pep.ReasonPolicyDenied},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{}
			p, err := pep.New(pep.Config{Guard: newFakeChecker(grant{webID, "orders", "read"}), Routes: ordersRoutes, PeerID: peerFromContext, PDP: c.pdp, Audit: rec})
			if err != nil {
				t.Fatal(err)
			}
			var seen pep.Decision
			h := p.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen, _ = pep.DecisionFromContext(r.Context()) }))
			req := withPeer(httptest.NewRequest("GET", "/orders/42", nil), webID)
			req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d: %s", w.Code, c.status, w.Body)
			}
			if c.slug != "" {
				var pd problemDoc
				if err := json.Unmarshal(w.Body.Bytes(), &pd); err != nil || pd.Type != "https://ward.dev/problems/"+c.slug {
					t.Fatalf("problem %+v: %s", pd, w.Body)
				}
			} else if seen.Policy == nil || seen.Policy.Version != c.pdp.d.Version || seen.Reason != c.reason {
				t.Fatalf("decision in context %+v", seen)
			}
			in := c.pdp.in
			if in == nil || in.Caller != webID || in.Resource != "orders" || in.Action != "read" || in.ResourceID != "42" || in.CorrelationID != "4bf92f3577b34da6a3ce929d0e0e4736" {
				t.Fatalf("PDP input %+v", in)
			}
			if len(rec.events) != 1 || rec.events[0].Reason != c.reason {
				t.Fatalf("audit %+v", rec.events)
			}
			if c.pdp.d.Enforced && (rec.events[0].PolicyVersion == "" || rec.events[0].Extra["policies"] == nil) && c.pdp.d.Version != 0 {
				t.Fatalf("audit lacks the policy: %+v", rec.events[0])
			}
		})
	}
}

func TestResourceIDs(t *testing.T) {
	s := &stubPDP{d: pdp.Decision{Allowed: true}}
	routes := []pep.Route{
		{Pattern: "GET /orders/{id}/items", Resource: "orders", Action: "read"},
		{Pattern: "GET /files/{path...}", Resource: "files", Action: "read", IDParam: "path"},
		{Pattern: "GET /users/{uid}/x/{other}", Resource: "users", Action: "read", IDParam: "uid"},
		{Pattern: "GET /status", Resource: "status", Action: "read", Attributes: map[string]string{"classification": "public"}},
	}
	var grants []grant
	for _, r := range routes {
		grants = append(grants, grant{webID, r.Resource, r.Action})
	}
	p, err := pep.New(pep.Config{Guard: newFakeChecker(grants...), Routes: routes, PeerID: peerFromContext, PDP: s})
	if err != nil {
		t.Fatal(err)
	}
	h := p.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for path, want := range map[string]string{"/orders/7/items": "7", "/files/a/b/c": "a/b/c", "/users/u1/x/u2": "u1", "/status": "/status"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, withPeer(httptest.NewRequest("GET", path, nil), webID))
		if w.Code != 200 || s.in.ResourceID != want {
			t.Fatalf("%s: status %d, resource ID %q, want %q", path, w.Code, s.in.ResourceID, want)
		}
		if path == "/status" && s.in.ResourceAttrs["classification"] != "public" {
			t.Fatalf("route attributes not passed: %+v", s.in.ResourceAttrs)
		}
	}
}
