package authority

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/wardsec/ward/internal/route"
)

// gatewayEnv is a catalogue with a provider "orders" that declares what
// it provides, and a gateway SVID from a component token.
type gatewayEnv struct {
	*catalogEnv
	gw *svid
}

func newGatewayEnv(t *testing.T) *gatewayEnv {
	c := newCatalogEnv(t)
	c.service("shop", "orders", "L2")
	c.declare("orders", "service: orders\nversion: 1.0.0\nprovides:\n  - resource: orders\n    actions: [read, write]\n  - resource: refunds\n    actions: [create]\n", http.StatusOK)
	var tok struct {
		Token    string `json:"token"`
		SPIFFEID string `json:"spiffe_id"`
	}
	c.admin("POST", "/v1/components/gateway/bootstrap-token", map[string]string{"ttl": "1h"}, http.StatusCreated, &tok)
	if tok.SPIFFEID != "spiffe://ward.test/ward/gateway" {
		t.Fatalf("spiffe_id %q", tok.SPIFFEID)
	}
	return &gatewayEnv{catalogEnv: c, gw: c.fetch(tok.Token)}
}

func TestComponentTokens(t *testing.T) {
	e := newGatewayEnv(t)
	if got := e.gw.certs[0].URIs[0].String(); got != "spiffe://ward.test/ward/gateway" {
		t.Fatalf("gateway SVID %s", got)
	}
	if life := e.gw.certs[0].NotAfter.Sub(e.gw.certs[0].NotBefore); life > time.Hour+time.Minute {
		t.Fatalf("gateway SVID lives %v", life)
	}
	// Renewal by the gateway itself.
	resp, body := e.renew(e.client(e.gw.tlsCert()), e.gw)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("renew: %d %s", resp.StatusCode, body)
	}
	if r := parseSVIDResponse(t, body, nil); r.resp.SPIFFEID != "spiffe://ward.test/ward/gateway" || r.serial() == e.gw.serial() {
		t.Fatalf("renewed %+v", r.resp)
	}
	// A CSR asking for another identity is refused.
	resp, body = e.do(e.client(e.gw.tlsCert()), "POST", "/v1/svid/renew", "", map[string]string{"csr": csrPEM(t, newKey(t), "spiffe://ward.test/svc/orders", nil)})
	wantProblem(t, resp, body, http.StatusForbidden, slugForbiddenIdentity)

	// Unknown components, bad TTLs.
	resp, body = e.do(nil, "POST", "/v1/components/nats/bootstrap-token", e.adminToken, nil)
	wantProblem(t, resp, body, http.StatusNotFound, slugNotFound)
	resp, body = e.do(nil, "POST", "/v1/components/gateway/bootstrap-token", e.adminToken, map[string]string{"ttl": "1s"})
	wantProblem(t, resp, body, http.StatusBadRequest, slugInvalidRequest)

	// Revoked and listed.
	var tok struct {
		ID, Token string
	}
	e.admin("POST", "/v1/components/gateway/bootstrap-token", nil, http.StatusCreated, &tok)
	e.admin("POST", "/v1/components/bootstrap-tokens/"+tok.ID+"/revoke", nil, http.StatusOK, nil)
	resp, body = e.do(nil, "POST", "/v1/svid", tok.Token, map[string]string{"csr": csrPEM(t, newKey(t), "", nil)})
	wantProblem(t, resp, body, http.StatusUnauthorized, slugUnauthorized)
	var list []map[string]any
	e.admin("GET", "/v1/components/bootstrap-tokens", nil, http.StatusOK, &list)
	if len(list) != 2 || strings.Contains(mustJSON(t, list), tok.Token) {
		t.Fatalf("token list %v", list)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// jwkOf is the registration body of a public Ed25519 key.
func jwkOf(t *testing.T, pub ed25519.PublicKey) map[string]any {
	t.Helper()
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(pub),
		"kid": base64.RawURLEncoding.EncodeToString(tp), "alg": "EdDSA", "use": "sig"}
}

func TestPassportKeys(t *testing.T) {
	e := newGatewayEnv(t)
	gwc := e.client(e.gw.tlsCert())
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	soon := time.Now().Add(24 * time.Hour).UTC()
	reg := func(c *http.Client, jwk any, notAfter time.Time) (*http.Response, []byte) {
		return e.do(c, "POST", "/v1/passport/keys", "", map[string]any{"jwk": jwk, "not_after": notAfter})
	}
	// Only the gateway may register.
	resp, body := reg(e.clients["orders"], jwkOf(t, pub), soon)
	wantProblem(t, resp, body, http.StatusForbidden, slugForbiddenIdentity)
	resp, body = reg(nil, jwkOf(t, pub), soon)
	wantProblem(t, resp, body, http.StatusUnauthorized, slugUnauthorized)

	// Bad keys.
	wrongKid := jwkOf(t, pub)
	wrongKid["kid"] = "k1"
	private := jwkOf(t, pub)
	private["d"] = base64.RawURLEncoding.EncodeToString(priv.Seed())
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecJWK, _ := json.Marshal(jose.JSONWebKey{Key: &ec.PublicKey, KeyID: "ec", Algorithm: "ES256"})
	noAlg := jwkOf(t, pub)
	delete(noAlg, "alg")
	for name, c := range map[string]struct {
		jwk any
		at  time.Time
	}{
		"kid not the thumbprint": {wrongKid, soon},
		"private key":            {private, soon},
		"not Ed25519":            {json.RawMessage(ecJWK), soon},
		"no alg":                 {noAlg, soon},
		"not_after past":         {jwkOf(t, pub), time.Now().Add(-time.Minute)},
		"not_after too far":      {jwkOf(t, pub), time.Now().Add(49 * time.Hour)},
		"not a JWK":              {"x", soon},
	} {
		resp, body := reg(gwc, c.jwk, c.at)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}

	// A good key: published, pushed, idempotent.
	ws, _ := e.watchPastSnapshot()
	resp, body = reg(gwc, jwkOf(t, pub), soon)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d %s", resp.StatusCode, body)
	}
	ev := ws.next(t, 5*time.Second)
	if ev.Kind != kindPassportKeys || !strings.Contains(string(ev.Payload), jwkOf(t, pub)["kid"].(string)) {
		t.Fatalf("event %s %s", ev.Kind, ev.Payload)
	}
	if resp, _ := reg(gwc, jwkOf(t, pub), soon.Add(time.Hour)); resp.StatusCode != http.StatusOK {
		t.Fatalf("re-register: %d", resp.StatusCode)
	}
	resp, body = e.do(nil, "GET", "/v1/passport/keys", "", nil)
	var set jose.JSONWebKeySet
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/jwk-set+json" || json.Unmarshal(body, &set) != nil || len(set.Keys) != 1 {
		t.Fatalf("key set: %d %s", resp.StatusCode, body)
	}
	if k, ok := set.Keys[0].Key.(ed25519.PublicKey); !ok || !k.Equal(pub) || !set.Keys[0].IsPublic() {
		t.Fatalf("published key %+v", set.Keys[0])
	}

	// Expired keys are not published; at most 64 unexpired.
	short, _, _ := ed25519.GenerateKey(rand.Reader)
	if resp, body := reg(gwc, jwkOf(t, short), time.Now().Add(1500*time.Millisecond)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("short key: %d %s", resp.StatusCode, body)
	}
	time.Sleep(1600 * time.Millisecond)
	_, body = e.do(nil, "GET", "/v1/passport/keys", "", nil)
	if strings.Contains(string(body), jwkOf(t, short)["kid"].(string)) || !strings.Contains(string(body), jwkOf(t, pub)["kid"].(string)) {
		t.Fatalf("key set after expiry: %s", body)
	}
	for i := range 63 {
		p, _, _ := ed25519.GenerateKey(rand.Reader)
		if resp, body := reg(gwc, jwkOf(t, p), soon); resp.StatusCode != http.StatusCreated {
			t.Fatalf("key %d: %d %s", i, resp.StatusCode, body)
		}
	}
	p, _, _ := ed25519.GenerateKey(rand.Reader)
	resp, body = reg(gwc, jwkOf(t, p), soon)
	wantProblem(t, resp, body, http.StatusConflict, slugConflict)
}

func TestRoutes(t *testing.T) {
	e := newGatewayEnv(t)
	gwc := e.client(e.gw.tlsCert())
	good := func() map[string]any {
		return map[string]any{"prefix": "/orders", "service": "orders", "upstream": "https://127.0.0.1:9001"}
	}
	with := func(k string, v any) map[string]any { r := good(); r[k] = v; return r }

	// Validation.
	for name, c := range map[string]struct {
		body   any
		status int
	}{
		"relative prefix":       {with("prefix", "orders"), 400},
		"dot segment":           {with("prefix", "/a/../b"), 400},
		"double slash":          {with("prefix", "/a//b"), 400},
		"query in prefix":       {with("prefix", "/a?x=1"), 400},
		"long prefix":           {with("prefix", "/"+strings.Repeat("a", 300)), 400},
		"http upstream":         {with("upstream", "http://127.0.0.1:9001"), 400},
		"upstream without port": {with("upstream", "https://orders.internal"), 400},
		"upstream with path":    {with("upstream", "https://h:1/x"), 400},
		"upstream userinfo":     {with("upstream", "https://u:p@h:1"), 400},
		"bad host":              {with("host", "exa mple.com"), 400},
		"unknown credential":    {with("credentials", []string{"cookie"}), 400},
		"no credential":         {with("credentials", []string{}), 400},
		"bad scope":             {with("scopes", []string{"a b"}), 400},
		"negative rate":         {with("rate", map[string]any{"per_second": -1}), 400},
		"short timeout":         {with("timeout", "10ms"), 400},
		"unknown field":         {with("upstreams", "x"), 400},
		"unknown service":       {with("service", "nope"), 404},
		"unprovided resource":   {with("exposes", []map[string]any{{"resource": "stock", "actions": []string{"read"}}}), 409},
		"unprovided action":     {with("exposes", []map[string]any{{"resource": "orders", "actions": []string{"delete"}}}), 409},
	} {
		resp, body := e.do(nil, "PUT", "/v1/routes/r1", e.adminToken, c.body)
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d, want %d: %s", name, resp.StatusCode, c.status, body)
		}
	}
	resp, body := e.do(nil, "PUT", "/v1/routes/Bad_Name", e.adminToken, good())
	wantProblem(t, resp, body, http.StatusBadRequest, slugInvalidRequest)

	// Only admin or security may set routes: an operator token may not.
	var op struct{ Token string }
	e.admin("POST", "/v1/admin-tokens", map[string]any{"name": "op", "roles": []string{"operator"}}, http.StatusCreated, &op)
	resp, body = e.do(nil, "PUT", "/v1/routes/r1", op.Token, good())
	wantProblem(t, resp, body, http.StatusForbidden, slugForbidden)

	// Only the gateway reads the table.
	resp, body = e.do(e.clients["orders"], "GET", "/v1/gateway/routes", "", nil)
	wantProblem(t, resp, body, http.StatusForbidden, slugForbiddenIdentity)

	// Set: exposes everything by default, records the grants, and the
	// gateway's stream hears of it (a service's does not).
	gws, err := e.watch(gwc, "")
	if err != nil {
		t.Fatal(err)
	}
	defer gws.close()
	gws.next(t, 5*time.Second)
	svcWatch, _ := e.watchPastSnapshot()
	var rt route.Route
	e.admin("PUT", "/v1/routes/r1", good(), http.StatusCreated, &rt)
	if len(rt.Exposes) != 2 || rt.Version < 1 || rt.Timeout != "30s" || len(rt.Credentials) != 4 {
		t.Fatalf("stored route %+v", rt)
	}
	gateway := "spiffe://ward.test/ward/gateway"
	granted := func() map[string][]string {
		out := map[string][]string{}
		for _, c := range e.list("orders").Consumers {
			if c.ID == gateway {
				for _, g := range c.Grants {
					out[g.Resource] = g.Actions
				}
			}
		}
		return out
	}
	if g := granted(); !slices.Equal(g["orders"], []string{"read", "write"}) || !slices.Equal(g["refunds"], []string{"create"}) {
		t.Fatalf("gateway grants after set: %v", g)
	}
	sawRoutes := false
	for range 5 {
		if ev := gws.next(t, 5*time.Second); ev.Kind == kindRoutes {
			sawRoutes = true
			break
		}
	}
	if !sawRoutes {
		t.Fatal("the gateway's stream got no routes event")
	}
	var table struct {
		Version int64         `json:"version"`
		Routes  []route.Route `json:"routes"`
	}
	resp, body = e.do(gwc, "GET", "/v1/gateway/routes", "", nil)
	if resp.StatusCode != 200 || json.Unmarshal(body, &table) != nil || len(table.Routes) != 1 || table.Version != rt.Version {
		t.Fatalf("gateway table: %d %s", resp.StatusCode, body)
	}

	// Replace: narrower exposure, narrower grants.
	e.admin("PUT", "/v1/routes/r1", with("exposes", []map[string]any{{"resource": "orders", "actions": []string{"read"}}}), http.StatusOK, &rt)
	if g := granted(); !slices.Equal(g["orders"], []string{"read"}) || g["refunds"] != nil {
		t.Fatalf("gateway grants after replace: %v", g)
	}
	// A second route may not take the same host and prefix.
	resp, body = e.do(nil, "PUT", "/v1/routes/r2", e.adminToken, good())
	wantProblem(t, resp, body, http.StatusConflict, slugConflict)
	var listed []route.Route
	e.admin("GET", "/v1/routes", nil, http.StatusOK, &listed)
	if len(listed) != 1 || listed[0].Name != "r1" {
		t.Fatalf("routes %+v", listed)
	}

	// Delete: the grants are withdrawn.
	e.admin("DELETE", "/v1/routes/r1", nil, http.StatusOK, nil)
	if g := granted(); len(g) != 0 {
		t.Fatalf("gateway grants after delete: %v", g)
	}
	resp, body = e.do(nil, "DELETE", "/v1/routes/r1", e.adminToken, nil)
	wantProblem(t, resp, body, http.StatusNotFound, slugNotFound)

	// The service's stream never saw a routes event.
	deadline := time.After(300 * time.Millisecond)
	for {
		select {
		case ev := <-svcWatch.events:
			if ev.Kind == kindRoutes {
				t.Fatal("a service's stream got a routes event")
			}
			continue
		case <-deadline:
		}
		break
	}
}

func FuzzRouteValidation(f *testing.F) {
	f.Add("r", "", "/orders", "https://127.0.0.1:9001", "read", "30s")
	f.Add("r", "api.example.com", "/a/../b", "https://[::1]:1", "a b", "5m")
	f.Add("x", "x", "/%zz", "https://h:99999", "", "")
	f.Fuzz(func(t *testing.T, name, host, prefix, upstream, scope, timeout string) {
		rs := route.Route{Name: name, Host: host, Prefix: prefix, Upstream: upstream, Scopes: []string{scope}, Timeout: timeout}
		if err := validateRoute(&rs); err == nil {
			if !strings.HasPrefix(rs.Prefix, "/") || strings.Contains(rs.Prefix, "//") || !strings.HasPrefix(rs.Upstream, "https://") {
				t.Fatalf("accepted %+v", rs)
			}
		}
	})
}

// An agent token may be bound to a host: its SVID is
// spiffe://<td>/ward/agent/<host>, renewable; hosts are one DNS label and
// only agents take them.
func TestHostBoundAgentToken(t *testing.T) {
	e := newEnv(t)
	var out struct {
		Token    string `json:"token"`
		SPIFFEID string `json:"spiffe_id"`
	}
	e.admin("POST", "/v1/components/agent/bootstrap-token", map[string]string{"host": "node-17"}, http.StatusCreated, &out)
	if out.SPIFFEID != "spiffe://ward.test/ward/agent/node-17" {
		t.Fatalf("spiffe_id %s", out.SPIFFEID)
	}
	s := e.fetch(out.Token)
	if got := s.certs[0].URIs[0].String(); got != "spiffe://ward.test/ward/agent/node-17" {
		t.Fatalf("SVID %s", got)
	}
	if resp, body := e.renew(e.client(s.tlsCert()), s); resp.StatusCode != http.StatusCreated {
		t.Fatalf("renew: %d %s", resp.StatusCode, body)
	}
	for _, c := range []struct {
		component string
		body      map[string]string
	}{
		{"gateway", map[string]string{"host": "node-17"}},
		{"agent", map[string]string{"host": "Node_17"}},
		{"agent", map[string]string{"host": "a.b"}},
		{"agent", map[string]string{"host": strings.Repeat("a", 64)}},
	} {
		resp, body := e.do(nil, "POST", "/v1/components/"+c.component+"/bootstrap-token", e.adminToken, c.body)
		wantProblem(t, resp, body, http.StatusBadRequest, slugInvalidRequest)
	}
}
