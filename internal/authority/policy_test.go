package authority

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/wardsec/ward/internal/policy"
	"github.com/wardsec/ward/pdp"
)

func policySource(t *testing.T) policy.Source {
	t.Helper()
	src, err := policy.LoadDir("../policy/testdata/whoami")
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// bundleOf verifies a bundle JWS with the authority's signing key.
func policyBundleOf(t *testing.T, e *gatewayEnv, jws []byte) pdp.Bundle {
	t.Helper()
	pub, _ := e.signingKeyOf()
	obj, err := jose.ParseSignedCompact(string(jws), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	if typ := obj.Signatures[0].Protected.ExtraHeaders[jose.HeaderType]; typ != pdp.JWSType {
		t.Fatalf("typ %v", typ)
	}
	payload, err := obj.Verify(pub)
	if err != nil {
		t.Fatal(err)
	}
	var b pdp.Bundle
	if err := json.Unmarshal(payload, &b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPolicyAdministration(t *testing.T) {
	e := newGatewayEnv(t)
	orders := e.clients["orders"]
	gw := e.client(e.gw.tlsCert())

	// No version yet: workloads hear no-policy.
	resp, body := e.do(orders, "GET", "/v1/policy/bundle", "", nil)
	wantProblem(t, resp, body, http.StatusNotFound, slugNoPolicy)
	resp, body = e.do(gw, "GET", "/v1/policy/bundle", "", nil)
	wantProblem(t, resp, body, http.StatusNotFound, slugNoPolicy)

	// A push that passes.
	src := policySource(t)
	var pushed struct {
		Version int64          `json:"version"`
		Active  bool           `json:"active"`
		Report  *policy.Report `json:"report"`
	}
	e.admin("POST", "/v1/policy/domains/orders/versions", pushRequest{Source: src}, http.StatusCreated, &pushed)
	if pushed.Version != 1 || !pushed.Active || pushed.Report.Policies != 2 || len(pushed.Report.Cases) != 3 {
		t.Fatalf("push: %+v", pushed)
	}

	// The service fetches its signed bundle; the ETag saves a refetch.
	resp, body = e.do(orders, "GET", "/v1/policy/bundle", "", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") != `"orders.1"` {
		t.Fatalf("bundle: %d %q %s", resp.StatusCode, resp.Header.Get("ETag"), body)
	}
	b := policyBundleOf(t, e, body)
	if b.Domain != "orders" || b.Revision != 1 || b.Active.Version != 1 || b.Issuer != "spiffe://ward.test/ward/authority" || b.Shadow != nil {
		t.Fatalf("bundle %+v", b)
	}
	req, _ := http.NewRequest("GET", e.url+"/v1/policy/bundle", nil)
	req.Header.Set("If-None-Match", `"orders.1"`)
	r304, err := orders.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r304.Body.Close()
	if r304.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", r304.StatusCode)
	}

	// Refused pushes change nothing.
	for _, tc := range []struct {
		name   string
		change func(*policy.Source)
		want   string
	}{
		{"failing test", func(s *policy.Source) {
			s.Policies[0].Text = strings.Replace(s.Policies[0].Text, `"suspended"`, `"acme"`, 1)
		}, "expected allow, got deny"},
		{"schema violation", func(s *policy.Source) {
			s.Policies[0].Text += "\npermit(principal, action == Action::\"read\", resource) when { principal.age > 3 };"
		}, "violates the schema"},
		{"syntax error", func(s *policy.Source) { s.Policies[0].Text += "\npermit(" }, "whoami.cedar:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := policySource(t)
			tc.change(&s)
			resp, body := e.do(nil, "POST", "/v1/policy/domains/orders/versions", e.adminToken, pushRequest{Source: s})
			wantProblem(t, resp, body, http.StatusUnprocessableEntity, slugPolicyRejected)
			var p struct {
				Errors []string `json:"errors"`
			}
			_ = json.Unmarshal(body, &p)
			if len(p.Errors) == 0 || !strings.Contains(strings.Join(p.Errors, "\n"), tc.want) {
				t.Fatalf("errors %q, want %q", p.Errors, tc.want)
			}
		})
	}
	var hist struct {
		Active   int64         `json:"active"`
		Versions []versionView `json:"versions"`
	}
	e.admin("GET", "/v1/policy/domains/orders/versions", nil, http.StatusOK, &hist)
	if hist.Active != 1 || len(hist.Versions) != 1 {
		t.Fatalf("history after refused pushes: %+v", hist)
	}

	// Other teams may not push; the edge domain needs admin or security.
	var tok struct {
		Token string `json:"token"`
	}
	e.admin("POST", "/v1/teams", map[string]string{"name": "other"}, http.StatusCreated, nil)
	e.admin("POST", "/v1/admin-tokens", map[string]any{"name": "other-team", "roles": []string{"team:other"}}, http.StatusCreated, &tok)
	resp, body = e.do(nil, "POST", "/v1/policy/domains/orders/versions", tok.Token, pushRequest{Source: src})
	wantProblem(t, resp, body, http.StatusForbidden, slugForbidden)
	resp, body = e.do(nil, "POST", "/v1/policy/domains/edge/versions", tok.Token, pushRequest{Source: src})
	wantProblem(t, resp, body, http.StatusForbidden, slugForbidden)
	var shop struct {
		Token string `json:"token"`
	}
	e.admin("POST", "/v1/admin-tokens", map[string]any{"name": "shop-team", "roles": []string{"team:shop"}}, http.StatusCreated, &shop)
	resp, body = e.do(nil, "POST", "/v1/policy/domains/orders/versions", shop.Token, pushRequest{Source: src, Shadow: true})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("own team's shadow push: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(nil, "POST", "/v1/policy/domains/nosuch/versions", e.adminToken, pushRequest{Source: src})
	wantProblem(t, resp, body, http.StatusNotFound, slugNotFound)

	// The shadow candidate rides in the bundle; the active one is unchanged.
	_, body = e.do(orders, "GET", "/v1/policy/bundle", "", nil)
	if b := policyBundleOf(t, e, body); b.Revision != 2 || b.Active.Version != 1 || b.Shadow == nil || b.Shadow.Version != 2 {
		t.Fatalf("bundle with shadow %+v", b)
	}

	// Rollback republishes version 1 as version 3.
	var rb versionView
	e.admin("POST", "/v1/policy/domains/orders/rollback", map[string]int64{"to": 1}, http.StatusCreated, &rb)
	if rb.Version != 3 || rb.RollbackOf != 1 || rb.Kind != "rollback" || !rb.Active {
		t.Fatalf("rollback %+v", rb)
	}
	var v1 versionView
	e.admin("GET", "/v1/policy/domains/orders/versions/1", nil, http.StatusOK, &v1)
	if v1.Source == nil || len(v1.Source.Policies) != 1 || v1.Digest != rb.Digest {
		t.Fatalf("version 1 %+v", v1)
	}

	// check explains a decision.
	var ex policy.Explanation
	e.admin("POST", "/v1/policy/domains/orders/check", policy.Case{Principal: `User::"bob"`, Action: `Action::"read"`, Resource: `whoami::"/"`,
		Entities: []policy.EntityDoc{{UID: `User::"bob"`, Attrs: map[string]any{"tenant": "suspended"}}}}, http.StatusOK, &ex)
	if ex.Allowed || ex.Version != 3 || len(ex.Decided) != 1 || ex.Decided[0].ID != "suspended-tenant" {
		t.Fatalf("check %+v", ex)
	}

	// Instances report; status counts them.
	resp, body = e.do(orders, "POST", "/v1/policy/status", "", pdp.Status{Domain: "orders", Instance: "orders-1", Version: 3, Revision: 3})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("report: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(orders, "POST", "/v1/policy/status", "", pdp.Status{Domain: "payments", Instance: "x"})
	wantProblem(t, resp, body, http.StatusForbidden, slugForbidden)
	var st struct {
		Current   int            `json:"current"`
		Total     int            `json:"total"`
		ByVersion map[string]int `json:"by_version"`
	}
	e.admin("GET", "/v1/policy/domains/orders/status", nil, http.StatusOK, &st)
	if st.Total != 1 || st.Current != 1 || st.ByVersion["3"] != 1 {
		t.Fatalf("status %+v", st)
	}

	// "edge" is not a service name.
	resp, body = e.do(nil, "POST", "/v1/services", e.adminToken, map[string]string{"name": "edge", "team": "shop", "level": "L1"})
	wantProblem(t, resp, body, http.StatusBadRequest, slugInvalidRequest)
}
