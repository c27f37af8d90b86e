package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// trustingClient is an HTTPS client that trusts the dev CA bundle.
func (d *devEnv) trustingClient(t *testing.T) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(d.vars["WARD_CA_BUNDLE"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("empty CA bundle")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// introspect asks the authority about token, authenticating as the client.
func introspect(t *testing.T, hc *http.Client, base, clientID, secret, token string) map[string]any {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("introspect: %d %s", resp.StatusCode, body)
	}
	out := map[string]any{}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestTokenServiceEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startDev(t, t.TempDir())
	base := d.vars["WARD_AUTHORITY"]
	hc := d.trustingClient(t)

	var created struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal([]byte(d.mustWard("client", "create", "billing", "--scope", "orders:read orders:write", "-o", "json")), &created); err != nil {
		t.Fatal(err)
	}
	if created.ClientID == "" || created.ClientSecret == "" {
		t.Fatalf("client create: %+v", created)
	}

	// x/oauth2's client-credentials flow, unchanged.
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
	cc := clientcredentials.Config{ClientID: created.ClientID, ClientSecret: created.ClientSecret,
		TokenURL: base + "/oauth2/token", Scopes: []string{"orders:read"}}
	tok, err := cc.Token(ctx)
	if err != nil {
		t.Fatalf("client credentials: %v", err)
	}
	if tok.TokenType != "Bearer" || tok.AccessToken == "" || time.Until(tok.Expiry) <= 0 {
		t.Fatalf("token %+v", tok)
	}

	// go-oidc verifies the signature against /.well-known/jwks.json.
	ks := oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), hc), base+"/.well-known/jwks.json")
	payload, err := ks.VerifySignature(context.Background(), tok.AccessToken)
	if err != nil {
		t.Fatalf("go-oidc: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims["iss"] != base || claims["client_id"] != created.ClientID || claims["scope"] != "orders:read" || claims["jti"] == nil {
		t.Fatalf("claims %v", claims)
	}

	// Delegation: a gateway client exchanges the token and acts for its subject.
	var gw struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal([]byte(d.mustWard("client", "create", "gateway", "--grant", "urn:ietf:params:oauth:grant-type:token-exchange",
		"--audience", "orders", "-o", "json")), &gw); err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {tok.AccessToken},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "audience": {"orders"}}
	req0, _ := http.NewRequest("POST", base+"/oauth2/token", strings.NewReader(form.Encode()))
	req0.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req0.SetBasicAuth(url.QueryEscape(gw.ClientID), url.QueryEscape(gw.ClientSecret))
	resp0, err := hc.Do(req0)
	if err != nil {
		t.Fatal(err)
	}
	var exchanged struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp0.Body).Decode(&exchanged)
	resp0.Body.Close()
	if resp0.StatusCode != http.StatusOK || exchanged.AccessToken == "" {
		t.Fatalf("token exchange: %d", resp0.StatusCode)
	}
	delegated := introspect(t, hc, base, gw.ClientID, gw.ClientSecret, exchanged.AccessToken)
	if act, _ := delegated["act"].(map[string]any); delegated["sub"] != "client:billing" || act["sub"] != "client:gateway" || delegated["aud"] != "orders" {
		t.Fatalf("delegated token introspection: %v", delegated)
	}

	// Introspection: active, then inactive within a second of revocation.
	if got := introspect(t, hc, base, created.ClientID, created.ClientSecret, tok.AccessToken); got["active"] != true || got["client_id"] != created.ClientID {
		t.Fatalf("introspection %v", got)
	}
	req, _ := http.NewRequest("POST", base+"/oauth2/revoke", strings.NewReader(url.Values{"token": {tok.AccessToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(created.ClientID), url.QueryEscape(created.ClientSecret))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	revoked := time.Now()
	waitFor(t, time.Second, "introspection reports the revoked token inactive", func() bool {
		return introspect(t, hc, base, created.ClientID, created.ClientSecret, tok.AccessToken)["active"] == false
	})
	t.Logf("inactive %v after revocation", time.Since(revoked).Round(time.Millisecond))

	// Forced key rotation: new tokens use a new key that go-oidc finds in
	// the JWKS; tokens of the old key stay valid.
	old, err := cc.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out := d.mustWard("keys", "rotate"); !strings.Contains(out, "retiring") || !strings.Contains(out, "active") {
		t.Fatalf("keys rotate:\n%s", out)
	}
	fresh, err := (&clientcredentials.Config{ClientID: created.ClientID, ClientSecret: created.ClientSecret, TokenURL: base + "/oauth2/token"}).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Split(fresh.AccessToken, ".")[0] == strings.Split(old.AccessToken, ".")[0] {
		t.Fatal("the token header (kid) did not change after keys rotate")
	}
	if _, err := oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), hc), base+"/.well-known/jwks.json").VerifySignature(context.Background(), fresh.AccessToken); err != nil {
		t.Fatalf("go-oidc after rotation: %v", err)
	}
	if got := introspect(t, hc, base, created.ClientID, created.ClientSecret, old.AccessToken); got["active"] != true {
		t.Fatalf("token of the retiring key: %v", got)
	}

	// API keys: created once, introspected, revoked.
	var key struct {
		ID     string `json:"id"`
		APIKey string `json:"api_key"`
	}
	if err := json.Unmarshal([]byte(d.mustWard("apikey", "create", "--subject", "partner-42", "--scope", "orders:read", "--ttl", "24h", "-o", "json")), &key); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key.APIKey, "ward_") {
		t.Fatalf("api key %q", key.APIKey)
	}
	if got := introspect(t, hc, base, created.ClientID, created.ClientSecret, key.APIKey); got["active"] != true || got["sub"] != "partner-42" {
		t.Fatalf("api key introspection %v", got)
	}
	d.mustWard("apikey", "revoke", key.ID)
	if got := introspect(t, hc, base, created.ClientID, created.ClientSecret, key.APIKey); got["active"] != false {
		t.Fatalf("revoked api key introspection %v", got)
	}
	if out := d.mustWard("apikey", "list"); strings.Contains(out, key.APIKey) || !strings.Contains(out, key.ID) {
		t.Fatalf("apikey list:\n%s", out)
	}
}
