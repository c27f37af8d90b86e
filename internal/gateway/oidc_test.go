package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/wardsec/ward/credential"
)

// A company IdP: discovery and JWKS over HTTPS, ES256 tokens.
func TestExternalIssuer(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwk := jose.JSONWebKey{Key: &key.PublicKey, KeyID: "idp-1", Algorithm: string(jose.ES256), Use: "sig"}
	var idp *httptest.Server
	idp = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": idp.URL, "jwks_uri": idp.URL + "/jwks"})
		case "/jwks":
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
		default:
			http.NotFound(w, r)
		}
	}))
	defer idp.Close()
	e := newEnv(t, func(c *Config) {
		c.ExternalIssuers = []credential.Issuer{{URL: idp.URL, Audience: "shop-api"}}
		c.ExternalHTTPClient = idp.Client()
	})
	e.setRoute("orders", ordersRoute(map[string]any{"upstream": e.upstream, "scopes": []string{"orders.read"}}))
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "idp-1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	token := func(aud string, exp time.Time) string {
		raw, err := jwt.Signed(signer).Claims(map[string]any{"iss": idp.URL, "sub": "carol@example.com", "aud": aud,
			"exp": exp.Unix(), "iat": time.Now().Unix(), "scope": "orders.read profile", "tenant": "acme", "roles": []string{"buyer"}}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	resp, body := e.get("/orders/1", bearer(token("shop-api", time.Now().Add(time.Minute))))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	p := decodeEcho(t, body).Passport
	if p == nil || p.Subject != "carol@example.com" || p.Issuer != idp.URL || p.AuthMethod != CredOIDC || p.Tenant != "acme" || !p.HasRole("buyer") {
		t.Fatalf("passport %+v", p)
	}
	for name, tok := range map[string]string{
		"wrong audience": token("other-api", time.Now().Add(time.Minute)),
		"expired":        token("shop-api", time.Now().Add(-time.Hour)),
	} {
		if resp, body := e.get("/orders/1", bearer(tok)); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
}
