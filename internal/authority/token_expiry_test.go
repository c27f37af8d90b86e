package authority

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBootstrapTokenExpiry: a bootstrap token created with a TTL works
// until then and is refused with a 401 problem naming the expiry after;
// one without a TTL stays valid until revoked; bad TTLs are 400s.
func TestBootstrapTokenExpiry(t *testing.T) {
	e := newEnv(t)
	e.createService("shop", "web", "L1")
	var svc struct {
		BootstrapToken string    `json:"bootstrap_token"`
		ExpiresAt      time.Time `json:"bootstrap_token_expires_at"`
	}
	e.admin("POST", "/v1/services", map[string]string{"name": "api", "team": "shop", "bootstrap_token_ttl": "1h"}, http.StatusCreated, &svc)
	if d := time.Until(svc.ExpiresAt); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("expires_at %v", svc.ExpiresAt)
	}
	var extra struct {
		BootstrapToken string    `json:"bootstrap_token"`
		ExpiresAt      time.Time `json:"expires_at"`
	}
	e.admin("POST", "/v1/services/web/bootstrap-token", map[string]string{"ttl": "2h"}, http.StatusCreated, &extra)
	var forever struct {
		BootstrapToken string `json:"bootstrap_token"`
	}
	e.admin("POST", "/v1/services/web/bootstrap-token", nil, http.StatusCreated, &forever)

	e.fetch(svc.BootstrapToken) // valid now
	e.offset.Store(int64(90 * time.Minute))
	resp, body := e.do(nil, "POST", "/v1/svid", svc.BootstrapToken, map[string]string{"csr": csrPEM(t, newKey(t), "", nil)})
	wantProblem(t, resp, body, 401, slugUnauthorized)
	if !strings.Contains(string(body), "expired") {
		t.Fatalf("expired token answer: %s", body)
	}
	e.fetch(extra.BootstrapToken) // 2h: still valid
	e.offset.Store(int64(3 * time.Hour))
	resp, body = e.do(nil, "POST", "/v1/svid", extra.BootstrapToken, map[string]string{"csr": csrPEM(t, newKey(t), "", nil)})
	wantProblem(t, resp, body, 401, slugUnauthorized)
	e.fetch(forever.BootstrapToken) // no TTL: valid until revoked

	for _, tc := range []struct {
		name, path string
		body       map[string]string
	}{
		{"service ttl not a duration", "/v1/services", map[string]string{"name": "x", "team": "shop", "bootstrap_token_ttl": "soon"}},
		{"service ttl too long", "/v1/services", map[string]string{"name": "y", "team": "shop", "bootstrap_token_ttl": "9000h"}},
		{"token ttl negative", "/v1/services/web/bootstrap-token", map[string]string{"ttl": "-1h"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(nil, "POST", tc.path, e.adminToken, tc.body)
			wantProblem(t, resp, body, 400, slugInvalidRequest)
		})
	}
}
