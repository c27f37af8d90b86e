package credential_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/wardsec/ward/credential"
)

// idp is a stand-in for a company OpenID Connect provider over HTTPS:
// discovery, a JWKS with one RSA key, and a signer.
type idp struct {
	srv    *httptest.Server
	key    *rsa.PrivateKey
	jwks   atomic.Int64
	issuer string
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &idp{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": p.issuer, "jwks_uri": p.issuer + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, _ *http.Request) {
		p.jwks.Add(1)
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "rsa1", Algorithm: "RS256", Use: "sig"}}})
	})
	p.srv = httptest.NewTLSServer(mux)
	t.Cleanup(p.srv.Close)
	p.issuer = p.srv.URL
	return p
}

func (p *idp) sign(t *testing.T, kid string, claims jwt.Claims) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: p.key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(claims).Claims(map[string]any{"email": "alice@example.com"}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyExternal(t *testing.T) {
	p := newIDP(t)
	v, err := credential.New(credential.Config{
		Issuer: "https://authority.example", HTTPClient: p.srv.Client(), KeyRefreshInterval: time.Hour,
		ExternalIssuers: []credential.Issuer{{URL: p.issuer, Audience: "shop"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	good := jwt.Claims{Issuer: p.issuer, Subject: "alice", Audience: jwt.Audience{"shop"}, Expiry: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now)}
	c, err := v.VerifyExternal(ctx, p.sign(t, "rsa1", good))
	if err != nil || c.Subject != "alice" || c.Raw["email"] != "alice@example.com" {
		t.Fatalf("VerifyExternal: %+v %v", c, err)
	}
	wrongAud, expired, foreign := good, good, good
	wrongAud.Audience = jwt.Audience{"payments"}
	expired.Expiry = jwt.NewNumericDate(now.Add(-time.Hour))
	foreign.Issuer = "https://evil.example"
	for name, tc := range map[string]struct {
		tok  string
		want error
	}{
		"wrong audience":   {p.sign(t, "rsa1", wrongAud), credential.ErrInvalid},
		"expired":          {p.sign(t, "rsa1", expired), credential.ErrInvalid},
		"untrusted issuer": {p.sign(t, "rsa1", foreign), credential.ErrUnknownIssuer},
		"unknown kid":      {p.sign(t, "rsa9", good), credential.ErrInvalid},
		"garbage":          {"x.y.z", credential.ErrInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := v.VerifyExternal(ctx, tc.tok); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// Unknown kids do not turn into JWKS fetches beyond one per interval.
	before := p.jwks.Load()
	for range 100 {
		_, _ = v.VerifyExternal(ctx, p.sign(t, "rsa-unknown", good))
	}
	if got := p.jwks.Load() - before; got != 0 {
		t.Fatalf("%d JWKS fetches for unknown kids within the refresh interval", got)
	}
	if _, err := credential.New(credential.Config{Issuer: "https://a.example", HTTPClient: p.srv.Client(), ExternalIssuers: []credential.Issuer{{URL: "http://idp"}}}); err == nil {
		t.Fatal("a plain-http issuer without audience was accepted")
	}
}
