package authority

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/bus"
)

// TestCredentialRevocationFeed: revoking an API key through the admin API
// reaches the bus (payload on ward.v1.revocations.credentials) and every
// watch stream (a signed credential-revocation event) at once.
func TestCredentialRevocationFeed(t *testing.T) {
	b := newMemBus()
	var mu sync.Mutex
	var got []byte
	if _, err := b.Subscribe(bus.SubjectCredentialRevocations, func(_ string, data []byte) {
		mu.Lock()
		got = append([]byte(nil), data...)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withBus(b))
	ws, _ := e.watchPastSnapshot()

	var key struct {
		ID     string `json:"id"`
		APIKey string `json:"api_key"`
	}
	e.admin("POST", "/v1/api-keys", map[string]any{"subject": "partner", "scopes": []string{"orders:read"}}, http.StatusCreated, &key)
	if !strings.HasPrefix(key.APIKey, "ward_") || !strings.HasPrefix(key.ID, "wk_") {
		t.Fatalf("created %+v", key)
	}
	e.admin("POST", "/v1/api-keys/"+key.ID+"/revoke", nil, http.StatusOK, nil)

	ev := ws.next(t, 5*time.Second)
	for ev.Kind != kindCredentialRevocation {
		ev = ws.next(t, 5*time.Second)
	}
	pub, _ := e.signingKeyOf()
	var p struct {
		Kind string `json:"kind"`
		ID   string `json:"id"`
	}
	verifyEvent(t, pub, ev, &p)
	if p.Kind != "apikey" || p.ID != key.ID {
		t.Fatalf("watch event %+v", p)
	}
	mu.Lock()
	defer mu.Unlock()
	var onBus struct {
		Kind string `json:"kind"`
		ID   string `json:"id"`
	}
	if err := json.Unmarshal(got, &onBus); err != nil || onBus.Kind != "apikey" || onBus.ID != key.ID {
		t.Fatalf("bus payload %q: %v", got, err)
	}
	// The revoked key introspects as inactive.
	var client struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	e.admin("POST", "/v1/oauth-clients", map[string]any{"name": "gateway"}, http.StatusCreated, &client)
	req, _ := http.NewRequest("POST", e.url+"/oauth2/introspect", strings.NewReader(url.Values{"token": {key.APIKey}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client.ClientID, client.ClientSecret)
	resp, err := e.client(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var in map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&in)
	if in["active"] != false {
		t.Fatalf("revoked key introspection %v", in)
	}
}
