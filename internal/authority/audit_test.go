package authority

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/wardsec/ward/audit"
)

type memRecorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (m *memRecorder) Write(e audit.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, e)
}

func (m *memRecorder) kinds() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for _, e := range m.events {
		out[e.Kind]++
	}
	return out
}

// TestAuditEvents: the authority records issuance, revocation, token and
// admin events, never a secret.
func TestAuditEvents(t *testing.T) {
	rec := &memRecorder{}
	e := newEnv(t, withConfig(func(c *Config) { c.Audit = rec }))
	s := e.fetch(e.createService("shop", "web", "L2"))
	e.admin("POST", "/v1/svids/"+s.serial()+"/revoke", nil, http.StatusOK, nil)
	var client struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	e.admin("POST", "/v1/oauth-clients", map[string]any{"name": "billing", "grant_types": []string{"client_credentials"}, "scopes": []string{"a"}}, http.StatusCreated, &client)
	req, _ := http.NewRequest("POST", e.url+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client.ID, client.Secret)
	resp, err := e.client(nil).Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("token: %v %v", resp, err)
	}
	resp.Body.Close()
	e.admin("POST", "/v1/oauth-clients/"+client.ID+"/revoke", nil, http.StatusOK, nil)

	k := rec.kinds()
	for _, want := range []string{audit.KindSVIDIssued, audit.KindSVIDRevoked, audit.KindTokenIssued, audit.KindTokenRevoked, "admin.post"} {
		if k[want] == 0 {
			t.Errorf("no %s event: %v", want, k)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ev := range rec.events {
		s := ev.Caller + ev.User + ev.Reason + ev.Resource
		for _, v := range ev.Extra {
			if str, ok := v.(string); ok {
				s += str
			}
		}
		if strings.Contains(s, client.Secret) || strings.Contains(s, "wardbt_") || strings.Contains(s, "wardadm_") {
			t.Fatalf("secret in an audit event: %+v", ev)
		}
		if ev.Kind == "admin.post" && (ev.User == "" || ev.Resource == "") {
			t.Errorf("admin event without who or what: %+v", ev)
		}
	}
}
