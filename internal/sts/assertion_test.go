package sts

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/wardsec/ward/internal/store"
)

// TestPrivateKeyJWT: RFC 7523 client assertions, and the ways they are
// refused (wrong key, audience, expiry, lifetime, replay).
func TestPrivateKeyJWT(t *testing.T) {
	f := newFixture(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "k1", Algorithm: "EdDSA", Use: "sig"}}})
	c, secret := f.newClient(ClientSpec{Name: "signer", AuthMethod: store.AuthPrivateKeyJWT, JWKS: jwks, Scopes: []string{"orders:read"}})
	if secret != "" {
		t.Fatal("a private_key_jwt client got a secret")
	}
	sign := func(key ed25519.PrivateKey, claims jwt.Claims) string {
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
		s, err := jwt.Signed(signer).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := f.clock.now()
	base := func(jti string) jwt.Claims {
		return jwt.Claims{Issuer: c.ID, Subject: c.ID, Audience: jwt.Audience{testIssuer + "/oauth2/token"}, ID: jti,
			Expiry: jwt.NewNumericDate(now.Add(time.Minute)), IssuedAt: jwt.NewNumericDate(now)}
	}
	post := func(assertion string) (int, map[string]any) {
		status, out, _ := f.post(nil, "/oauth2/token", url.Values{"grant_type": {GrantClientCredentials},
			"client_assertion_type": {assertionType}, "client_assertion": {assertion}})
		return status, out
	}
	good := sign(priv, base("a1"))
	if status, out := post(good); status != 200 || out["access_token"] == nil {
		t.Fatalf("assertion: %d %v", status, out)
	}
	wrongAud := base("a3")
	wrongAud.Audience = jwt.Audience{"https://elsewhere.example"}
	expired := base("a4")
	expired.Expiry = jwt.NewNumericDate(now.Add(-time.Second))
	longLived := base("a5")
	longLived.Expiry = jwt.NewNumericDate(now.Add(time.Hour))
	noJTI := base("")
	otherIss := base("a6")
	otherIss.Subject = "wc_000000000000000000000000"
	for name, a := range map[string]string{
		"replayed": good, "other key": sign(otherPriv, base("a2")), "wrong audience": sign(priv, wrongAud),
		"expired": sign(priv, expired), "too long-lived": sign(priv, longLived), "no jti": sign(priv, noJTI),
		"sub is not the client": sign(priv, otherIss), "garbage": "x.y.z",
	} {
		t.Run(name, func(t *testing.T) {
			if status, out := post(a); status != 401 || out["error"] != "invalid_client" {
				t.Fatalf("%d %v, want 401 invalid_client", status, out)
			}
		})
	}
	if status, _, _ := f.post(nil, "/oauth2/token", url.Values{"grant_type": {GrantClientCredentials}, "client_assertion_type": {"other"}, "client_assertion": {good}}); status != 400 {
		t.Fatalf("wrong assertion type: %d", status)
	}
	for _, bad := range [][]byte{nil, []byte("{}"), []byte(`{"keys":[{"kty":"oct","k":"AAAA"}]}`)} {
		if _, _, err := f.s.CreateClient(t.Context(), ClientSpec{Name: "bad", AuthMethod: store.AuthPrivateKeyJWT, JWKS: bad}); err == nil {
			t.Fatalf("JWKS %q accepted", bad)
		}
	}
}
