package pep_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/pep"
)

var (
	webID   = spiffeid.RequireFromString("spiffe://ward.test/svc/web")
	shopID  = spiffeid.RequireFromString("spiffe://ward.test/svc/shop")
	otherID = spiffeid.RequireFromString("spiffe://ward.test/svc/other")
	brokeID = spiffeid.RequireFromString("spiffe://ward.test/svc/broke")
)

// grant is one (caller, resource, action) triple.
type grant struct {
	caller           spiffeid.ID
	resource, action string
}

// fakeChecker allows the grants it holds and answers like a guard
// otherwise; err, when set, is returned for every call.
type fakeChecker struct {
	grants map[grant]bool
	err    error

	mu    sync.Mutex
	calls []grant
}

func newFakeChecker(grants ...grant) *fakeChecker {
	c := &fakeChecker{grants: map[grant]bool{}}
	for _, g := range grants {
		c.grants[g] = true
	}
	return c
}

func (c *fakeChecker) Check(_ context.Context, caller spiffeid.ID, resource, action string) error {
	c.mu.Lock()
	c.calls = append(c.calls, grant{caller, resource, action})
	c.mu.Unlock()
	switch {
	case c.err != nil:
		return c.err
	case caller == brokeID:
		return errors.New("guard: refresh failed: connection refused")
	case c.grants[grant{caller, resource, action}]:
		return nil
	}
	for g := range c.grants {
		if g.caller == caller {
			return fmt.Errorf("%w: %s %s", guard.ErrActionNotAllowed, resource, action)
		}
	}
	return fmt.Errorf("%w: %s", guard.ErrUnknownCaller, caller)
}

func (c *fakeChecker) callCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

var ordersRoutes = []pep.Route{
	{Pattern: "GET /orders/{id}", Resource: "orders", Action: "read"},
	{Pattern: "GET /orders/export", Resource: "orders", Action: "export"},
	{Pattern: "POST /orders", Resource: "orders", Action: "write"},
	{Pattern: "GET /health", Resource: "health", Action: "read"},
}

type peerKey struct{}

// peerFromContext is the test's Config.PeerID: the caller set with
// withPeer, as identity's Middleware would.
func peerFromContext(r *http.Request) (spiffeid.ID, error) {
	if id, ok := r.Context().Value(peerKey{}).(spiffeid.ID); ok {
		return id, nil
	}
	return spiffeid.ID{}, pep.ErrNoPeer
}

func withPeer(r *http.Request, id spiffeid.ID) *http.Request {
	if id.IsZero() {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), peerKey{}, id))
}

// problemDoc is a decoded RFC 9457 answer.
type problemDoc struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		method     string
		target     string
		caller     spiffeid.ID
		guardErr   error // returned for every check when set
		status     int
		problem    string   // slug of the problem type, "" for a served request
		reason     string   // Decision.Reason
		resource   string   // Decision.Resource
		action     string   // Decision.Action
		detail     []string // substrings of the problem detail
		retryAfter string
		checked    bool // the guard was asked
	}{
		{name: "granted", method: "GET", target: "/orders/17", caller: webID, status: 200,
			reason: pep.ReasonGranted, resource: "orders", action: "read", checked: true},
		{name: "HEAD matches a GET route", method: "HEAD", target: "/orders/17", caller: webID, status: 200,
			reason: pep.ReasonGranted, resource: "orders", action: "read", checked: true},
		{name: "more specific pattern wins", method: "GET", target: "/orders/export", caller: shopID, status: 200,
			reason: pep.ReasonGranted, resource: "orders", action: "export", checked: true},
		{name: "action not allowed", method: "POST", target: "/orders", caller: webID, status: 403, problem: "access-denied",
			reason: pep.ReasonActionNotAllowed, resource: "orders", action: "write", checked: true,
			detail: []string{webID.String(), `"write"`, `"orders"`}},
		{name: "unknown caller", method: "GET", target: "/orders/17", caller: otherID, status: 403, problem: "access-denied",
			reason: pep.ReasonUnknownCaller, resource: "orders", action: "read", checked: true,
			detail: []string{otherID.String(), `"read"`, `"orders"`}},
		{name: "no access list", method: "GET", target: "/orders/17", caller: webID, guardErr: fmt.Errorf("wrapped: %w", guard.ErrNoAccessList),
			status: 503, problem: "no-access-list", reason: pep.ReasonNoAccessList, resource: "orders", action: "read", retryAfter: "5", checked: true},
		{name: "guard failure fails closed", method: "GET", target: "/orders/17", caller: brokeID, status: 503, problem: "guard-unavailable",
			reason: pep.ReasonGuardUnavailable, resource: "orders", action: "read", checked: true},
		{name: "context canceled fails closed", method: "GET", target: "/orders/17", caller: webID, guardErr: context.Canceled,
			status: 503, problem: "guard-unavailable", reason: pep.ReasonGuardUnavailable, resource: "orders", action: "read", checked: true},
		{name: "no route for path", method: "GET", target: "/admin", caller: webID, status: 403, problem: "no-route", reason: pep.ReasonNoRoute},
		{name: "no route for method", method: "DELETE", target: "/orders/17", caller: webID, status: 403, problem: "no-route", reason: pep.ReasonNoRoute},
		{name: "unclean path matches no route", method: "GET", target: "/health/../orders/17", caller: webID, status: 403, problem: "no-route", reason: pep.ReasonNoRoute},
		{name: "no peer", method: "GET", target: "/orders/17", status: 401, problem: "unauthenticated", reason: pep.ReasonNoPeer},
		{name: "no peer and no route", method: "GET", target: "/admin", status: 401, problem: "unauthenticated", reason: pep.ReasonNoPeer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checker := newFakeChecker(
				grant{webID, "orders", "read"},
				grant{shopID, "orders", "export"},
			)
			checker.err = tc.guardErr
			var logs bytes.Buffer
			p, err := pep.New(pep.Config{
				Guard:  checker,
				Routes: ordersRoutes,
				PeerID: peerFromContext,
				Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			var (
				served bool
				got    pep.Decision
				gotOK  bool
			)
			h := p.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				served = true
				got, gotOK = pep.DecisionFromContext(r.Context())
				w.WriteHeader(http.StatusOK)
			}))
			req := httptest.NewRequest(tc.method, tc.target, nil)
			req.Header.Set("Authorization", "Bearer secret-token")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, withPeer(req, tc.caller))

			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.status, rec.Body)
			}
			if checked := checker.callCount() > 0; checked != tc.checked {
				t.Errorf("guard asked: %v, want %v", checked, tc.checked)
			}
			if tc.problem == "" {
				if !served || !gotOK {
					t.Fatalf("served %v, decision in context %v", served, gotOK)
				}
				want := pep.Decision{Caller: tc.caller, Resource: tc.resource, Action: tc.action, Allowed: true, Reason: tc.reason}
				if got != want {
					t.Fatalf("decision %+v, want %+v", got, want)
				}
				if logs.Len() != 0 {
					t.Errorf("allowed request logged: %s", logs.String())
				}
				return
			}
			if served {
				t.Fatal("a refused request reached the handler")
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			if ra := rec.Header().Get("Retry-After"); ra != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", ra, tc.retryAfter)
			}
			var pd problemDoc
			if err := json.Unmarshal(rec.Body.Bytes(), &pd); err != nil {
				t.Fatalf("problem body: %v: %s", err, rec.Body)
			}
			if pd.Type != "https://ward.dev/problems/"+tc.problem || pd.Status != tc.status || pd.Title == "" || pd.Detail == "" {
				t.Errorf("problem %+v, want type %s", pd, tc.problem)
			}
			for _, s := range tc.detail {
				if !strings.Contains(pd.Detail, s) {
					t.Errorf("detail %q does not name %s", pd.Detail, s)
				}
			}
			checkDenialLog(t, logs.Bytes(), tc.caller, tc.resource, tc.action, tc.reason)
		})
	}
}

// checkDenialLog asserts one Info record naming the decision and nothing
// from the request's headers.
func checkDenialLog(t *testing.T, logs []byte, caller spiffeid.ID, resource, action, reason string) {
	t.Helper()
	if bytes.Contains(logs, []byte("secret-token")) {
		t.Errorf("a header value was logged: %s", logs)
	}
	var rec map[string]any
	if err := json.Unmarshal(logs, &rec); err != nil {
		t.Fatalf("want one JSON log record, got %q: %v", logs, err)
	}
	want := map[string]any{"level": "INFO", "reason": reason}
	if !caller.IsZero() {
		want["caller"] = caller.String()
	}
	if resource != "" {
		want["resource"], want["action"] = resource, action
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("log %s = %v, want %v (record %v)", k, rec[k], v, rec)
		}
	}
}

func TestNewInvalid(t *testing.T) {
	t.Parallel()
	checker := newFakeChecker()
	tests := []struct {
		name   string
		cfg    pep.Config
		substr string
	}{
		{name: "no guard", cfg: pep.Config{Routes: ordersRoutes}, substr: "Config.Guard is required"},
		{name: "no routes", cfg: pep.Config{Guard: checker}, substr: "Config.Routes is empty"},
		{name: "empty pattern", cfg: routes(pep.Route{Pattern: "", Resource: "a", Action: "read"}), substr: "Routes[0]"},
		{name: "no leading slash", cfg: routes(pep.Route{Pattern: "GET orders", Resource: "a", Action: "read"}), substr: "Routes[0]"},
		{name: "bad wildcard", cfg: routes(pep.Route{Pattern: "GET /orders/{id", Resource: "a", Action: "read"}), substr: "Routes[0]"},
		{name: "duplicate wildcard", cfg: routes(pep.Route{Pattern: "GET /{a}/{a}", Resource: "a", Action: "read"}), substr: "Routes[0]"},
		{name: "bad method", cfg: routes(pep.Route{Pattern: "G(ET /x", Resource: "a", Action: "read"}), substr: "Routes[0]"},
		{name: "invalid pattern after valid ones", cfg: routes(ordersRoutes[0], pep.Route{Pattern: "GET /x/{", Resource: "a", Action: "read"}), substr: "Routes[1]: parsing"},
		{name: "duplicate pattern", cfg: routes(
			pep.Route{Pattern: "GET /a", Resource: "a", Action: "read"},
			pep.Route{Pattern: "GET /b", Resource: "a", Action: "read"},
			pep.Route{Pattern: "GET /a", Resource: "a", Action: "write"},
		), substr: `Routes[2] "GET /a" conflicts with Routes[0] "GET /a"`},
		{name: "conflicting wildcards", cfg: routes(
			pep.Route{Pattern: "GET /a/{x}", Resource: "a", Action: "read"},
			pep.Route{Pattern: "GET /{y}/b", Resource: "a", Action: "read"},
		), substr: `Routes[1] "GET /{y}/b" conflicts with Routes[0] "GET /a/{x}"`},
		{name: "method and path each more specific", cfg: routes(
			pep.Route{Pattern: "GET /", Resource: "a", Action: "read"},
			pep.Route{Pattern: "/admin/", Resource: "a", Action: "all"},
		), substr: `Routes[1] "/admin/" conflicts with Routes[0] "GET /"`},
		{name: "HEAD / next to GET subtrees", cfg: routes(
			pep.Route{Pattern: "GET /", Resource: "a", Action: "read"},
			pep.Route{Pattern: "HEAD /", Resource: "a", Action: "read"},
			pep.Route{Pattern: "GET /admin/", Resource: "a", Action: "all"},
		), substr: `Routes[2] "GET /admin/" conflicts with Routes[1] "HEAD /"`},
		{name: "upper-case resource", cfg: routes(pep.Route{Pattern: "GET /", Resource: "Orders", Action: "read"}), substr: `"Orders" is not a valid resource`},
		{name: "empty action", cfg: routes(pep.Route{Pattern: "GET /", Resource: "orders"}), substr: `"" is not a valid action`},
		{name: "action with a dot", cfg: routes(pep.Route{Pattern: "GET /", Resource: "orders", Action: "re.ad"}), substr: `"re.ad" is not a valid action`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := pep.New(tc.cfg)
			if !errors.Is(err, pep.ErrInvalidConfig) {
				t.Fatalf("New = %v, %v; want ErrInvalidConfig", p, err)
			}
			if !strings.Contains(err.Error(), tc.substr) || !strings.HasPrefix(err.Error(), "pep: ") {
				t.Fatalf("error %q does not contain %q", err, tc.substr)
			}
		})
	}

	// Patterns that only overlap, with one more specific, are fine.
	if _, err := pep.New(routes(
		pep.Route{Pattern: "GET /", Resource: "whoami", Action: "read"},
		pep.Route{Pattern: "GET /admin/", Resource: "admin", Action: "all"},
		pep.Route{Pattern: "GET /admin/{$}", Resource: "admin", Action: "read"},
		pep.Route{Pattern: "example.org/", Resource: "vhost", Action: "read"},
	)); err != nil {
		t.Fatalf("overlapping but ordered patterns: %v", err)
	}
}

func routes(rs ...pep.Route) pep.Config {
	return pep.Config{Guard: newFakeChecker(), Routes: rs}
}

// TestDefaultPeerID: without Config.PeerID the caller is the URI SAN of
// the TLS client certificate (when identity's Middleware did not put one
// in the context).
func TestDefaultPeerID(t *testing.T) {
	t.Parallel()
	p, err := pep.New(pep.Config{Guard: newFakeChecker(grant{webID, "orders", "read"}), Routes: ordersRoutes})
	if err != nil {
		t.Fatal(err)
	}
	var caller spiffeid.ID
	h := p.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := pep.DecisionFromContext(r.Context())
		caller = d.Caller
	}))
	tests := []struct {
		name   string
		tls    *tls.ConnectionState
		status int
	}{
		{name: "SVID", tls: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{testCert(t, webID.URL())}}, status: 200},
		{name: "certificate without URI SAN", tls: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{testCert(t, nil)}}, status: 401},
		{name: "TLS without client certificate", tls: &tls.ConnectionState{}, status: 401},
		{name: "plain HTTP", status: 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			caller = spiffeid.ID{}
			req := httptest.NewRequest("GET", "/orders/1", nil)
			req.TLS = tc.tls
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status == 200 && caller != webID {
				t.Fatalf("caller %v, want %v", caller, webID)
			}
		})
	}
}

// testCert is a self-signed certificate with uri as its only URI SAN
// (none when nil).
func testCert(t *testing.T, uri *url.URL) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
	}
	if uri != nil {
		tmpl.URIs = []*url.URL{uri}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestDecisionFromContextEmpty(t *testing.T) {
	t.Parallel()
	if d, ok := pep.DecisionFromContext(context.Background()); ok || d != (pep.Decision{}) {
		t.Fatalf("got %+v, %v", d, ok)
	}
}
