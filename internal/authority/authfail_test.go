package authority

import (
	"net/http"
	"strconv"
	"testing"
)

// TestAuthFailureLimit: a client address that keeps failing to
// authenticate is answered 429 (before any lookup) once its budget is
// spent, other addresses are unaffected, and the limit can be turned off.
func TestAuthFailureLimit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		burst   int
		limited bool
	}{
		{"limited", 0, true},
		{"off", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t,
				withTunables(func(tu *tunables) { tu.failureBurst = 5; tu.failureRate = 0.01 }),
				withConfig(func(c *Config) { c.AuthFailureBurst = tc.burst }))
			for i := 0; i < 5; i++ {
				resp, body := e.do(nil, "GET", "/v1/teams", "wardadm_bad"+strconv.Itoa(i), nil)
				wantProblem(t, resp, body, 401, slugUnauthorized)
			}
			resp, body := e.do(nil, "GET", "/v1/teams", e.adminToken, nil)
			if !tc.limited {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("limit off: %d %s", resp.StatusCode, body)
				}
				return
			}
			// Even the right token waits: the address is refused before
			// any credential is looked at.
			wantProblem(t, resp, body, 429, slugTooManyFailures)
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("no Retry-After")
			}
			// Another address has its own budget.
			req, _ := http.NewRequest("GET", "/v1/teams", nil)
			req.RemoteAddr = "192.0.2.7:4000"
			if e.a.failures.exhausted(req) {
				t.Fatal("another address is limited too")
			}
		})
	}
}
