package authority

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"testing"
	"time"
)

func TestAgentEntries(t *testing.T) {
	e := newCatalogEnv(t)
	e.service("shop", "orders", "L1")
	var tok struct {
		Token string `json:"token"`
	}
	e.admin("POST", "/v1/components/agent/bootstrap-token", map[string]string{"ttl": "1h", "host": "node-1"}, http.StatusCreated, &tok)
	agent := e.client(e.fetch(tok.Token).tlsCert())
	orders := e.clients["orders"]

	// Bad entries.
	for _, tc := range []struct {
		body   map[string]any
		status int
		slug   string
	}{
		{map[string]any{"service": "orders"}, 400, slugInvalidRequest},
		{map[string]any{"service": "orders", "path": "relative/bin"}, 400, slugInvalidRequest},
		{map[string]any{"service": "orders", "uid": -1}, 400, slugInvalidRequest},
		{map[string]any{"service": "orders", "uid": 1, "host": "Not A Host"}, 400, slugInvalidRequest},
		{map[string]any{"service": "nosuch", "uid": 1}, 404, slugNotFound},
	} {
		resp, body := e.do(nil, "POST", "/v1/agent/entries", e.adminToken, tc.body)
		wantProblem(t, resp, body, tc.status, tc.slug)
	}
	// Another team's token may not register orders' workloads.
	e.admin("POST", "/v1/teams", map[string]string{"name": "other"}, http.StatusCreated, nil)
	var other struct {
		Token string `json:"token"`
	}
	e.admin("POST", "/v1/admin-tokens", map[string]any{"name": "o", "roles": []string{"team:other"}}, http.StatusCreated, &other)
	resp, body := e.do(nil, "POST", "/v1/agent/entries", other.Token, map[string]any{"service": "orders", "uid": 1})
	wantProblem(t, resp, body, http.StatusForbidden, slugForbidden)

	csr := func() string {
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, newKey(t))
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	// No entry yet: the agent gets nothing.
	resp, body = e.do(agent, "POST", "/v1/agent/svid", "", map[string]string{"service": "orders", "csr": csr()})
	wantProblem(t, resp, body, http.StatusForbidden, slugForbidden)
	// An entry for another host does not count.
	e.admin("POST", "/v1/agent/entries", map[string]any{"service": "orders", "uid": 1000, "host": "node-2"}, http.StatusCreated, nil)
	resp, body = e.do(agent, "POST", "/v1/agent/svid", "", map[string]string{"service": "orders", "csr": csr()})
	wantProblem(t, resp, body, http.StatusForbidden, slugForbidden)
	var entry entryView
	e.admin("POST", "/v1/agent/entries", map[string]any{"service": "orders", "uid": 1000, "path": "/usr/bin/orders"}, http.StatusCreated, &entry)
	resp, body = e.do(agent, "POST", "/v1/agent/svid", "", map[string]string{"service": "orders", "csr": csr()})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("entitled SVID: %d %s", resp.StatusCode, body)
	}
	if s := parseSVIDResponse(t, body, nil); s.resp.SPIFFEID != "spiffe://ward.test/svc/orders" {
		t.Fatalf("issued %s", s.resp.SPIFFEID)
	}
	// The agent sees its host's entries and the ones for every host.
	resp, body = e.do(agent, "GET", "/v1/agent/workload-entries", "", nil)
	var mine []entryView
	if resp.StatusCode != 200 || json.Unmarshal(body, &mine) != nil || len(mine) != 1 || mine[0].Path != "/usr/bin/orders" {
		t.Fatalf("agent entries: %d %s", resp.StatusCode, body)
	}
	// A service is not an agent.
	resp, body = e.do(orders, "POST", "/v1/agent/svid", "", map[string]string{"service": "orders", "csr": csr()})
	wantProblem(t, resp, body, http.StatusForbidden, slugForbiddenIdentity)
	// JWT-SVIDs: for entitled services, with an audience.
	resp, body = e.do(agent, "POST", "/v1/agent/jwt-svid", "", map[string]any{"service": "orders", "audience": []string{}})
	wantProblem(t, resp, body, http.StatusBadRequest, slugInvalidRequest)
	resp, body = e.do(agent, "POST", "/v1/agent/jwt-svid", "", map[string]any{"service": "orders", "audience": []string{"billing"}})
	var jwt struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &jwt) != nil || jwt.Token == "" || time.Until(jwt.ExpiresAt) > 6*time.Minute {
		t.Fatalf("JWT-SVID: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(nil, "GET", "/v1/jwt-svid/keys", "", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("keys: %d %s", resp.StatusCode, body)
	}
	// Delete.
	e.admin("DELETE", "/v1/agent/entries/"+entry.ID, nil, http.StatusOK, nil)
	resp, body = e.do(agent, "POST", "/v1/agent/svid", "", map[string]string{"service": "orders", "csr": csr()})
	wantProblem(t, resp, body, http.StatusForbidden, slugForbidden)
}
