package authority

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/internal/store"
)

func TestInit(t *testing.T) {
	ctx := context.Background()
	k := newKMS(t)
	dir := t.TempDir()
	st, err := store.Open(ctx, dir+"/ward.db")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	if ok, err := Initialized(ctx, st); err != nil || ok {
		t.Fatalf("Initialized before Init = %v, %v", ok, err)
	}
	if _, err := New(ctx, Config{Store: st, KMS: k, PublicURL: "https://127.0.0.1:1"}); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("New before Init: %v, want ErrNotInitialized", err)
	}
	res, err := Init(ctx, st, k, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.TrustDomain.Name() != "ward.test" {
		t.Fatalf("default trust domain %s", res.TrustDomain)
	}
	if !strings.HasPrefix(res.AdminToken, adminTokenPrefix) || len(res.AdminToken) != len(adminTokenPrefix)+43 {
		t.Fatalf("admin token shape %q", res.AdminToken[:10])
	}
	if len(res.RootFingerprint) != 64 {
		t.Fatalf("fingerprint %q", res.RootFingerprint)
	}
	if ok, err := Initialized(ctx, st); err != nil || !ok {
		t.Fatalf("Initialized after Init = %v, %v", ok, err)
	}
	if _, err := Init(ctx, st, k, InitOptions{}); !errors.Is(err, ErrAlreadyInitialized) {
		t.Fatalf("second Init: %v", err)
	}

	// Only the token's hash is stored.
	toks, err := st.ListAdminTokens(ctx)
	if err != nil || len(toks) != 1 || toks[0].Roles[0] != roleAdmin {
		t.Fatalf("admin tokens %+v, %v", toks, err)
	}
	if !sameHash(toks[0].Hash, hashToken(res.AdminToken)) {
		t.Fatal("stored hash is not the token's SHA-256")
	}
	// Keys are sealed and bound to their row.
	cas, err := st.ListCAs(ctx)
	if err != nil || len(cas) != 2 {
		t.Fatalf("CAs %d, %v", len(cas), err)
	}
	for _, c := range cas {
		if _, err := k.Decrypt(ctx, c.KeyCiphertext, aadCA(c.ID)); err != nil {
			t.Fatalf("CA %s key does not open with its aad: %v", c.ID, err)
		}
		if _, err := k.Decrypt(ctx, c.KeyCiphertext, aadCA("other")); err == nil {
			t.Fatalf("CA %s key opens with another aad", c.ID)
		}
	}
	sealed, err := st.GetMeta(ctx, metaSigningKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Decrypt(ctx, sealed, aadSigningKey); err != nil {
		t.Fatal(err)
	}
	// A wrong KEK cannot load the authority.
	if _, err := New(ctx, Config{Store: st, KMS: newKMS(t), PublicURL: "https://127.0.0.1:1"}); err == nil {
		t.Fatal("New with a wrong KEK succeeded")
	}
}

func TestNewConfigErrors(t *testing.T) {
	k := newKMS(t)
	st, _ := initStore(t, t.TempDir(), k)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no store", Config{KMS: k, PublicURL: "https://x"}, "Store"},
		{"no kms", Config{Store: st, PublicURL: "https://x"}, "KMS"},
		{"no url", Config{Store: st, KMS: k}, "PublicURL"},
		{"bad url", Config{Store: st, KMS: k, PublicURL: "ftp://x"}, "PublicURL"},
		{"bad level", Config{Store: st, KMS: k, PublicURL: "https://x", SVIDTTL: map[string]time.Duration{"L4": time.Hour}}, "SVIDTTL"},
		{"ttl too long", Config{Store: st, KMS: k, PublicURL: "https://x", SVIDTTL: map[string]time.Duration{"L1": 25 * time.Hour}}, "SVIDTTL"},
		{"bad hostname", Config{Store: st, KMS: k, PublicURL: "https://x", Hostnames: []string{"a b"}}, "Hostnames"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want mention of %s", err, tc.want)
			}
		})
	}
}

func TestServingCertificate(t *testing.T) {
	e := newEnv(t)
	conn, err := tls.Dial("tcp", strings.TrimPrefix(e.url, "https://"), &tls.Config{RootCAs: e.roots()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	chain := conn.ConnectionState().PeerCertificates
	if len(chain) != 2 {
		t.Fatalf("chain length %d, want leaf + intermediate", len(chain))
	}
	id, _, err := x509svid.Verify(chain, e.a.cas.Load().bundle)
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != "spiffe://ward.test/ward/authority" {
		t.Fatalf("id %s", id)
	}
	leaf := chain[0]
	if err := leaf.VerifyHostname("localhost"); err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.GetCertificate(context.Background(), serialOf(leaf)); err != nil {
		t.Fatalf("serving certificate not persisted: %v", err)
	}

	// Renewed in-process past half its life: GetCertificate swaps it.
	old := e.a.serving.Load()
	e.offset.Store(int64(13 * time.Hour))
	defer e.offset.Store(0)
	if _, err := e.a.getCertificate(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "serving certificate renewal", func() bool { return e.a.serving.Load() != old })
}

func TestComponentCertificate(t *testing.T) {
	e := newEnv(t)
	c, err := e.a.ComponentCertificate("nats", []string{"nats.local"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 || c.Leaf == nil {
		t.Fatalf("chain %d leaf %v", len(c.Certificate), c.Leaf != nil)
	}
	certs := []*x509.Certificate{c.Leaf}
	inter, err := x509.ParseCertificate(c.Certificate[1])
	if err != nil {
		t.Fatal(err)
	}
	certs = append(certs, inter)
	id, _, err := x509svid.Verify(certs, e.a.cas.Load().bundle)
	if err != nil || id != spiffeid.RequireFromString("spiffe://ward.test/ward/nats") {
		t.Fatalf("id %v err %v", id, err)
	}
	if c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) > 24*time.Hour+time.Minute {
		t.Fatalf("lifetime %v", c.Leaf.NotAfter.Sub(c.Leaf.NotBefore))
	}
	if _, err := e.a.ComponentCertificate("Bad Name", nil, nil); err == nil {
		t.Fatal("invalid component name accepted")
	}
}

func TestAdminAuth(t *testing.T) {
	e := newEnv(t)
	e.createService("shop", "web", "L2")
	e.createService("pay", "ledger", "L3")

	mk := func(name string, roles ...string) string {
		var out struct {
			Token string `json:"token"`
			ID    string `json:"id"`
		}
		e.admin("POST", "/v1/admin-tokens", map[string]any{"name": name, "roles": roles}, http.StatusCreated, &out)
		return out.Token
	}
	security := mk("sec", "security")
	operator := mk("ops", "operator")
	shop := mk("shop-team", "team:shop")
	revoked := mk("gone", "admin")
	var list []adminTokenView
	e.admin("GET", "/v1/admin-tokens", nil, http.StatusOK, &list)
	var goneID string
	for _, tk := range list {
		if tk.Name == "gone" {
			goneID = tk.ID
		}
		if tk.Token != "" {
			t.Fatal("token value listed")
		}
	}
	e.admin("DELETE", "/v1/admin-tokens/"+goneID, nil, http.StatusOK, nil)

	for _, tc := range []struct {
		name   string
		token  string
		method string
		path   string
		body   any
		status int
		slug   string
	}{
		{"no token", "", "GET", "/v1/teams", nil, 401, slugUnauthorized},
		{"malformed token", "wardadm_short", "GET", "/v1/teams", nil, 401, slugUnauthorized},
		{"bootstrap token as admin", "wardbt_" + strings.Repeat("A", 43), "GET", "/v1/teams", nil, 401, slugUnauthorized},
		{"unknown token", "wardadm_" + strings.Repeat("A", 43), "GET", "/v1/teams", nil, 401, slugUnauthorized},
		{"revoked token", revoked, "GET", "/v1/teams", nil, 401, slugUnauthorized},
		{"security cannot create teams", security, "POST", "/v1/teams", map[string]string{"name": "x"}, 403, slugForbidden},
		{"security cannot rotate", security, "POST", "/v1/cas/rotate", map[string]string{"kind": "root"}, 403, slugForbidden},
		{"operator cannot revoke", operator, "POST", "/v1/services/web/revoke", nil, 403, slugForbidden},
		{"operator cannot mint admin tokens", operator, "POST", "/v1/admin-tokens", map[string]any{"name": "x", "roles": []string{"admin"}}, 403, slugForbidden},
		{"team cannot create teams", shop, "POST", "/v1/teams", map[string]string{"name": "x"}, 403, slugForbidden},
		{"team cannot create in other team", shop, "POST", "/v1/services", map[string]string{"name": "x", "team": "pay"}, 403, slugForbidden},
		{"team cannot see other team's service", shop, "GET", "/v1/services/ledger", nil, 404, slugNotFound},
		{"team cannot revoke", shop, "POST", "/v1/services/web/revoke", nil, 403, slugForbidden},
		{"team cannot list admin tokens", shop, "GET", "/v1/admin-tokens", nil, 403, slugForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(nil, tc.method, tc.path, tc.token, tc.body)
			wantProblem(t, resp, body, tc.status, tc.slug)
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}

	// What the roles may do.
	for _, tc := range []struct {
		name   string
		token  string
		method string
		path   string
		body   any
		status int
	}{
		{"operator creates team", operator, "POST", "/v1/teams", map[string]string{"name": "ops-team"}, 201},
		{"operator creates service", operator, "POST", "/v1/services", map[string]string{"name": "ops-svc", "team": "ops-team"}, 201},
		{"team creates own service", shop, "POST", "/v1/services", map[string]string{"name": "api", "team": "shop"}, 201},
		{"team reads own service", shop, "GET", "/v1/services/web", nil, 200},
		{"team mints bootstrap token", shop, "POST", "/v1/services/web/bootstrap-token", nil, 201},
		{"security reads", security, "GET", "/v1/services/ledger", nil, 200},
		{"security lists admin tokens", security, "GET", "/v1/admin-tokens", nil, 200},
		{"security revokes", security, "POST", "/v1/services/ledger/revoke", nil, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(nil, tc.method, tc.path, tc.token, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
		})
	}

	// A team token lists only its team.
	resp, body := e.do(nil, "GET", "/v1/services", shop, nil)
	var svcs []serviceView
	if resp.StatusCode != 200 || json.Unmarshal(body, &svcs) != nil {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for _, s := range svcs {
		if s.Team != "shop" {
			t.Fatalf("team token sees service %s of team %s", s.Name, s.Team)
		}
	}
	resp, body = e.do(nil, "GET", "/v1/teams", shop, nil)
	var teams []teamView
	if resp.StatusCode != 200 || json.Unmarshal(body, &teams) != nil || len(teams) != 1 || teams[0].Name != "shop" {
		t.Fatalf("team token lists teams %s", body)
	}
}

func TestAdminFlows(t *testing.T) {
	e := newEnv(t)
	var team teamView
	e.admin("POST", "/v1/teams", map[string]string{"name": "payments"}, http.StatusCreated, &team)
	if team.Name != "payments" || !strings.HasPrefix(team.CAID, "int-payments-") {
		t.Fatalf("team %+v", team)
	}
	var teams []teamView
	e.admin("GET", "/v1/teams", nil, http.StatusOK, &teams)
	if len(teams) != 1 || teams[0].CAID != team.CAID {
		t.Fatalf("teams %+v", teams)
	}
	// The team's intermediate is a CA with Team set, active, under the root.
	var cas []caView
	e.admin("GET", "/v1/cas", nil, http.StatusOK, &cas)
	found := false
	for _, c := range cas {
		if c.ID == team.CAID {
			found = c.Team == "payments" && c.State == store.CAStateActive && c.Kind == store.CAKindIntermediate && c.ParentID != ""
		}
	}
	if !found || len(cas) != 3 {
		t.Fatalf("cas %+v", cas)
	}

	var svc serviceView
	e.admin("POST", "/v1/services", map[string]string{"name": "ledger", "team": "payments", "level": "L3"}, http.StatusCreated, &svc)
	if svc.SPIFFEID != "spiffe://ward.test/svc/ledger" || svc.SVIDTTL != "15m0s" || !strings.HasPrefix(svc.BootstrapToken, bootstrapTokenPrefix) {
		t.Fatalf("service %+v", svc)
	}
	e.admin("POST", "/v1/services", map[string]string{"name": "quick", "team": "payments", "level": "L1", "svid_ttl": "3s"}, http.StatusCreated, &svc)
	if svc.SVIDTTL != "3s" {
		t.Fatalf("svid_ttl %q", svc.SVIDTTL)
	}
	svc = serviceView{}
	e.admin("GET", "/v1/services/ledger", nil, http.StatusOK, &svc)
	if svc.BootstrapToken != "" || svc.Level != "L3" {
		t.Fatalf("service %+v", svc)
	}
	var svcs []serviceView
	e.admin("GET", "/v1/services", nil, http.StatusOK, &svcs)
	if len(svcs) != 2 {
		t.Fatalf("services %+v", svcs)
	}
	var bt struct {
		BootstrapToken string `json:"bootstrap_token"`
	}
	e.admin("POST", "/v1/services/ledger/bootstrap-token", nil, http.StatusCreated, &bt)
	if !strings.HasPrefix(bt.BootstrapToken, bootstrapTokenPrefix) {
		t.Fatalf("token %+v", bt)
	}
	// Both tokens work.
	e.fetch(bt.BootstrapToken)

	// The last admin token cannot be revoked.
	var toks []adminTokenView
	e.admin("GET", "/v1/admin-tokens", nil, http.StatusOK, &toks)
	resp, body := e.do(nil, "DELETE", "/v1/admin-tokens/"+toks[0].ID, e.adminToken, nil)
	wantProblem(t, resp, body, 409, slugConflict)

	big := `{"name":"` + strings.Repeat("a", maxBodySize) + `"}`
	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   any
		status int
		slug   string
		detail string
	}{
		{"duplicate team", "POST", "/v1/teams", map[string]string{"name": "payments"}, 409, slugConflict, "exists"},
		{"duplicate service", "POST", "/v1/services", map[string]string{"name": "ledger", "team": "payments"}, 409, slugConflict, "exists"},
		{"unknown team", "POST", "/v1/services", map[string]string{"name": "x", "team": "nope"}, 404, slugNotFound, "team"},
		{"bad team name", "POST", "/v1/teams", map[string]string{"name": "Bad Name"}, 400, slugInvalidRequest, "name"},
		{"team name too long", "POST", "/v1/teams", map[string]string{"name": strings.Repeat("a", 64)}, 400, slugInvalidRequest, "name"},
		{"team name leading digit", "POST", "/v1/teams", map[string]string{"name": "1a"}, 400, slugInvalidRequest, "name"},
		{"empty team name", "POST", "/v1/teams", map[string]string{"name": ""}, 400, slugInvalidRequest, "name"},
		{"bad service name", "POST", "/v1/services", map[string]string{"name": "a_b", "team": "payments"}, 400, slugInvalidRequest, "name"},
		{"bad level", "POST", "/v1/services", map[string]string{"name": "y", "team": "payments", "level": "L9"}, 400, slugInvalidRequest, "level"},
		{"ttl over 24h", "POST", "/v1/services", map[string]string{"name": "z", "team": "payments", "svid_ttl": "25h"}, 400, slugInvalidRequest, "ttl"},
		{"ttl negative", "POST", "/v1/services", map[string]string{"name": "z", "team": "payments", "svid_ttl": "-1m"}, 400, slugInvalidRequest, "ttl"},
		{"ttl not a duration", "POST", "/v1/services", map[string]string{"name": "z", "team": "payments", "svid_ttl": "soon"}, 400, slugInvalidRequest, "ttl"},
		{"ttl below 1s", "POST", "/v1/services", map[string]string{"name": "z", "team": "payments", "svid_ttl": "10ms"}, 400, slugInvalidRequest, "ttl"},
		{"unknown field", "POST", "/v1/teams", `{"name":"x","owner":"me"}`, 400, slugInvalidRequest, "owner"},
		{"trailing data", "POST", "/v1/teams", `{"name":"x"}{}`, 400, slugInvalidRequest, "trailing"},
		{"not json", "POST", "/v1/teams", `name=x`, 400, slugInvalidRequest, "syntax"},
		{"wrong type", "POST", "/v1/teams", `{"name":5}`, 400, slugInvalidRequest, "name"},
		{"array body", "POST", "/v1/teams", `[]`, 400, slugInvalidRequest, ""},
		{"empty body", "POST", "/v1/teams", ``, 400, slugInvalidRequest, "required"},
		{"oversized body", "POST", "/v1/teams", big, 413, slugTooLarge, ""},
		{"unknown service", "GET", "/v1/services/nope", nil, 404, slugNotFound, ""},
		{"unknown service token", "POST", "/v1/services/nope/bootstrap-token", nil, 404, slugNotFound, ""},
		{"unknown role", "POST", "/v1/admin-tokens", map[string]any{"name": "x", "roles": []string{"root"}}, 400, slugInvalidRequest, "role"},
		{"no roles", "POST", "/v1/admin-tokens", map[string]any{"name": "x", "roles": []string{}}, 400, slugInvalidRequest, "roles"},
		{"role of unknown team", "POST", "/v1/admin-tokens", map[string]any{"name": "x", "roles": []string{"team:nope"}}, 404, slugNotFound, "team"},
		{"unknown admin token", "DELETE", "/v1/admin-tokens/adm-0000", nil, 404, slugNotFound, ""},
		{"unknown svid", "GET", "/v1/svids/abc", nil, 404, slugNotFound, ""},
		{"bad serial", "GET", "/v1/svids/xyz", nil, 400, slugInvalidRequest, "serial"},
		{"unknown endpoint", "GET", "/v1/nothing", nil, 404, "", ""},
		{"wrong method", "DELETE", "/v1/teams", nil, 405, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(nil, tc.method, tc.path, e.adminToken, tc.body)
			p := wantProblem(t, resp, body, tc.status, tc.slug)
			if !strings.Contains(strings.ToLower(p.Detail), tc.detail) {
				t.Fatalf("detail %q lacks %q", p.Detail, tc.detail)
			}
		})
	}
}

func TestHealthAndMetrics(t *testing.T) {
	e := newEnv(t)
	e.fetch(e.createService("shop", "web", "L1"))
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, body := e.do(nil, "GET", path, "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	resp, body := e.do(nil, "GET", "/metrics", "", nil)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	for _, m := range []string{`ward_authority_certificates_issued_total{kind="bootstrap"} 1`, "ward_authority_watchers 0", "ward_http_requests_total"} {
		if !strings.Contains(string(body), m) {
			t.Fatalf("metrics lack %q", m)
		}
	}
	// readyz reports a dead store.
	_ = e.st.Close()
	resp, body = e.do(nil, "GET", "/readyz", "", nil)
	wantProblem(t, resp, body, 503, "")
}
