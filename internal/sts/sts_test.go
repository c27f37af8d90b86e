package sts

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/wardsec/ward/internal/store"
)

func TestClientCredentials(t *testing.T) {
	f := newFixture(t)
	c, secret := f.newClient(ClientSpec{Name: "billing", Scopes: []string{"orders:read", "orders:write"}, Audiences: []string{"orders"}})
	post, postSecret := f.newClient(ClientSpec{Name: "batch", Scopes: []string{"orders:read"}, AuthMethod: store.AuthClientSecretPost, TokenAlg: AlgES256, TokenTTL: time.Minute})

	tok := f.token(c.ID, secret, url.Values{"scope": {"orders:read"}, "audience": {"orders"}})
	status, in, _ := f.post(nil, "/oauth2/introspect", url.Values{"token": {tok}}, c.ID, secret)
	if status != 200 || in["active"] != true || in["scope"] != "orders:read" || in["client_id"] != c.ID ||
		in["sub"] != "client:billing" || in["iss"] != testIssuer || in["aud"] != "orders" {
		t.Fatalf("introspection %d %v", status, in)
	}
	// No scope asked: every scope of the client.
	tok2 := f.token(c.ID, secret, nil)
	if _, in, _ := f.post(nil, "/oauth2/introspect", url.Values{"token": {tok2}}, c.ID, secret); in["scope"] != "orders:read orders:write" || in["aud"] != "ward" {
		t.Fatalf("default scope and audience: %v", in)
	}
	// client_secret_post and ES256.
	status, out, _ := f.post(nil, "/oauth2/token", url.Values{"grant_type": {GrantClientCredentials}, "client_id": {post.ID}, "client_secret": {postSecret}})
	if status != 200 || out["expires_in"] != float64(60) {
		t.Fatalf("post auth: %d %v", status, out)
	}
	parsed, err := jwt.ParseSigned(out["access_token"].(string), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || parsed.Headers[0].Algorithm != "ES256" {
		t.Fatalf("ES256 token: %v", err)
	}
}

// TestTokenErrors checks the RFC 6749 §5.2 answers.
func TestTokenErrors(t *testing.T) {
	f := newFixture(t)
	c, secret := f.newClient(ClientSpec{Name: "billing", Scopes: []string{"orders:read"}})
	post, postSecret := f.newClient(ClientSpec{Name: "batch", AuthMethod: store.AuthClientSecretPost})
	cc := url.Values{"grant_type": {GrantClientCredentials}}
	tests := []struct {
		name   string
		form   url.Values
		basic  []string
		status int
		code   string
	}{
		{"no grant type", url.Values{}, []string{c.ID, secret}, 400, "invalid_request"},
		{"unsupported grant", url.Values{"grant_type": {"password"}}, []string{c.ID, secret}, 400, "unsupported_grant_type"},
		{"wrong secret", cc, []string{c.ID, secret + "x"}, 401, "invalid_client"},
		{"unknown client", cc, []string{"wc_000000000000000000000000", secret}, 401, "invalid_client"},
		{"no credentials", cc, nil, 401, "invalid_client"},
		{"scope not granted", url.Values{"grant_type": {GrantClientCredentials}, "scope": {"orders:write"}}, []string{c.ID, secret}, 400, "invalid_scope"},
		{"audience not allowed", url.Values{"grant_type": {GrantClientCredentials}, "audience": {"payments"}}, []string{c.ID, secret}, 400, "invalid_target"},
		{"post client with basic", cc, []string{post.ID, postSecret}, 401, "invalid_client"},
		{"two methods", url.Values{"grant_type": {GrantClientCredentials}, "client_id": {c.ID}, "client_secret": {secret}}, []string{c.ID, secret}, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out, hdr := f.post(nil, "/oauth2/token", tt.form, tt.basic...)
			if status != tt.status || out["error"] != tt.code || out["error_description"] == "" {
				t.Fatalf("%d %v, want %d %s", status, out, tt.status, tt.code)
			}
			if tt.name == "wrong secret" && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic") {
				t.Fatal("no WWW-Authenticate on a failed basic authentication")
			}
			if hdr.Get("Cache-Control") != "no-store" {
				t.Fatal("token answers must not be cached")
			}
		})
	}
	// Repeated parameters, wrong media type, oversized bodies.
	req, _ := http.NewRequest("POST", f.srv.URL+"/oauth2/token", strings.NewReader("grant_type=client_credentials&grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(c.ID, secret)
	if resp, err := f.client(nil).Do(req); err != nil || resp.StatusCode != 400 {
		t.Fatalf("repeated parameter: %v %v", resp, err)
	}
	req, _ = http.NewRequest("POST", f.srv.URL+"/oauth2/token", strings.NewReader(`{"grant_type":"client_credentials"}`))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := f.client(nil).Do(req); err != nil || resp.StatusCode != 400 {
		t.Fatalf("JSON body: %v %v", resp, err)
	}
	req, _ = http.NewRequest("POST", f.srv.URL+"/oauth2/token", strings.NewReader("scope="+strings.Repeat("a", 70<<10)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := f.client(nil).Do(req); err != nil || resp.StatusCode != 413 {
		t.Fatalf("oversized: %v %v", resp, err)
	}
}

// TestIntrospectRefusesForgeries: alg none, algorithm confusion (HS256
// keyed with the public key), another issuer's key, expiry and
// revocation all read as inactive.
func TestIntrospectRefusesForgeries(t *testing.T) {
	f := newFixture(t)
	c, secret := f.newClient(ClientSpec{Name: "billing", Scopes: []string{"orders:read"}})
	good := f.token(c.ID, secret, nil)
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])

	edKey := f.s.keys.Load().active[AlgEdDSA]
	pubBytes := []byte(edKey.pub.(ed25519.PublicKey))
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pubBytes}, (&jose.SignerOptions{}).WithType(accessTokenType).WithHeader("kid", edKey.id))
	confused, _ := hs.Sign(payload)
	confusedS, _ := confused.CompactSerialize()

	other := newFixture(t)
	oc, osecret := other.newClient(ClientSpec{Name: "billing"})
	foreign := other.token(oc.ID, osecret, nil)

	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt","kid":"`+edKey.id+`"}`)) + "." + parts[1] + "."
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "orders:read", "orders:admin", 1))) + "." + parts[2]
	for name, tok := range map[string]string{
		"alg none": none, "algorithm confusion": confusedS, "foreign issuer": foreign, "tampered": tampered,
		"garbage": "a.b.c", "empty segments": "..", "api-key shaped": "ward_0000000000000000_" + strings.Repeat("A", 43) + "_00000000",
	} {
		t.Run(name, func(t *testing.T) {
			if _, in, _ := f.post(nil, "/oauth2/introspect", url.Values{"token": {tok}}, c.ID, secret); in["active"] != false || len(in) != 1 {
				t.Fatalf("introspection of a forgery: %v", in)
			}
		})
	}
	// Introspection needs an authenticated caller.
	if status, out, _ := f.post(nil, "/oauth2/introspect", url.Values{"token": {good}}); status != 401 || out["error"] != "invalid_client" {
		t.Fatalf("anonymous introspection: %d %v", status, out)
	}
	// Expiry.
	f.clock.add(11 * time.Minute)
	if _, in, _ := f.post(nil, "/oauth2/introspect", url.Values{"token": {good}}, c.ID, secret); in["active"] != false {
		t.Fatalf("expired token active: %v", in)
	}
}

func TestRevocation(t *testing.T) {
	f := newFixture(t)
	c, secret := f.newClient(ClientSpec{Name: "billing"})
	other, otherSecret := f.newClient(ClientSpec{Name: "other"})
	tok := f.token(c.ID, secret, nil)
	// Another client may not revoke it.
	if status, out, _ := f.post(nil, "/oauth2/revoke", url.Values{"token": {tok}}, other.ID, otherSecret); status != 400 {
		t.Fatalf("revocation by another client: %d %v", status, out)
	}
	if status, _, _ := f.post(nil, "/oauth2/revoke", url.Values{"token": {tok}}, c.ID, secret); status != 200 {
		t.Fatalf("revoke: %d", status)
	}
	if _, in, _ := f.post(nil, "/oauth2/introspect", url.Values{"token": {tok}}, c.ID, secret); in["active"] != false {
		t.Fatalf("revoked token active: %v", in)
	}
	// Unknown tokens revoke "successfully" (RFC 7009 §2.2).
	if status, _, _ := f.post(nil, "/oauth2/revoke", url.Values{"token": {"x.y.z"}}, c.ID, secret); status != 200 {
		t.Fatalf("unknown token: %d", status)
	}
	f.mu.Lock()
	got := strings.Join(f.revoked, ",")
	f.mu.Unlock()
	if !strings.HasPrefix(got, "token:") || strings.Count(got, ",") != 0 {
		t.Fatalf("OnRevoke calls: %q", got)
	}
	// A revocation made on another replica.
	tok2 := f.token(c.ID, secret, nil)
	parsed, _ := jwt.ParseSigned(tok2, []jose.SignatureAlgorithm{jose.EdDSA})
	var cl Claims
	_ = parsed.UnsafeClaimsWithoutVerification(&cl)
	f.s.ApplyRevocation("token", cl.ID, time.Now().Add(time.Hour))
	if _, in, _ := f.post(nil, "/oauth2/introspect", url.Values{"token": {tok2}}, c.ID, secret); in["active"] != false {
		t.Fatal("token revoked on another replica still active")
	}
	// Revoking the client ends its tokens and its access.
	tok3 := f.token(c.ID, secret, nil)
	if err := f.s.RevokeClient(context.Background(), c.ID); err != nil {
		t.Fatal(err)
	}
	if _, in, _ := f.post(nil, "/oauth2/introspect", url.Values{"token": {tok3}}, other.ID, otherSecret); in["active"] != false {
		t.Fatal("token of a revoked client still active")
	}
	if status, _, _ := f.post(nil, "/oauth2/token", url.Values{"grant_type": {GrantClientCredentials}}, c.ID, secret); status != 401 {
		t.Fatalf("revoked client got a token: %d", status)
	}
	// The revoked set survives a restart (it is loaded from the store).
	s2, err := New(context.Background(), Config{Store: f.st, KMS: f.s.cfg.KMS, Issuer: testIssuer, TrustDomain: testTD})
	if err != nil {
		t.Fatal(err)
	}
	pt, _ := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA})
	var c1 Claims
	_ = pt.UnsafeClaimsWithoutVerification(&c1)
	if !s2.Revoked(c1.ID) {
		t.Fatal("revocation lost across a restart")
	}
}

// TestCertificateBoundToken: a tls_client_auth client authenticates with
// its certificate and gets a token bound to it (RFC 8705).
func TestCertificateBoundToken(t *testing.T) {
	f := newFixture(t)
	c, secret := f.newClient(ClientSpec{Name: "orders", AuthMethod: store.AuthTLSClient, TLSSubject: "spiffe://example.org/svc/orders", Scopes: []string{"inventory:read"}})
	if secret != "" {
		t.Fatal("a tls_client_auth client got a secret")
	}
	cert := svidCert(t, "spiffe://example.org/svc/orders")
	status, out, _ := f.post(f.client(cert), "/oauth2/token", url.Values{"grant_type": {GrantClientCredentials}, "client_id": {c.ID}})
	if status != 200 {
		t.Fatalf("mTLS token: %d %v", status, out)
	}
	tok := out["access_token"].(string)
	_, in, _ := f.post(f.client(cert), "/oauth2/introspect", url.Values{"token": {tok}})
	cnf, _ := in["cnf"].(map[string]any)
	if in["active"] != true || cnf["x5t#S256"] != Thumbprint(cert.Leaf) || in["sub"] != "spiffe://example.org/svc/orders" {
		t.Fatalf("bound token introspection: %v", in)
	}
	// Another certificate (another workload) cannot authenticate as it.
	otherCert := svidCert(t, "spiffe://example.org/svc/evil")
	if status, out, _ := f.post(f.client(otherCert), "/oauth2/token", url.Values{"grant_type": {GrantClientCredentials}, "client_id": {c.ID}}); status != 401 {
		t.Fatalf("other certificate: %d %v", status, out)
	}
	// Without a certificate, nothing.
	if status, _, _ := f.post(nil, "/oauth2/token", url.Values{"grant_type": {GrantClientCredentials}, "client_id": {c.ID}}); status != 401 {
		t.Fatalf("no certificate: %d", status)
	}
	if Thumbprint(otherCert.Leaf) == Thumbprint(cert.Leaf) {
		t.Fatal("thumbprints collide")
	}
}

func TestAPIKeys(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	k, key, err := f.s.CreateAPIKey(ctx, APIKeySpec{Subject: "partner-42", Tenant: "acme", Scopes: []string{"orders:read"}, TTL: time.Hour, Metadata: map[string]string{"contract": "C-7"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != apiKeyLen || !strings.HasPrefix(key, "ward_") {
		t.Fatalf("key %q", key)
	}
	if id, err := ParseAPIKey(key); err != nil || id != k.ID {
		t.Fatalf("ParseAPIKey = %q, %v", id, err)
	}
	c, secret := f.newClient(ClientSpec{Name: "gateway"})
	_, in, _ := f.post(nil, "/oauth2/introspect", url.Values{"token": {key}}, c.ID, secret)
	if in["active"] != true || in["sub"] != "partner-42" || in["tenant"] != "acme" || in["token_type"] != "api_key" {
		t.Fatalf("api key introspection: %v", in)
	}
	// A one-character change breaks the checksum before any lookup.
	bad := key[:10] + string(key[10]^1) + key[11:]
	if _, err := ParseAPIKey(bad); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("tampered key parsed: %v", err)
	}
	if err := f.s.RevokeAPIKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.VerifyAPIKey(ctx, key); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("revoked key verified: %v", err)
	}
	_, key2, _ := f.s.CreateAPIKey(ctx, APIKeySpec{Subject: "p", TTL: time.Minute})
	f.clock.add(2 * time.Minute)
	if _, err := f.s.VerifyAPIKey(ctx, key2); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("expired key verified: %v", err)
	}
	for _, spec := range []APIKeySpec{{Subject: ""}, {Subject: "a b"}, {Subject: "x", Scopes: []string{"bad scope"}}, {Subject: "x", TTL: -1}} {
		if _, _, err := f.s.CreateAPIKey(ctx, spec); !errors.Is(err, ErrInvalidSpec) {
			t.Fatalf("spec %+v accepted: %v", spec, err)
		}
	}
}

func TestCreateClientValidation(t *testing.T) {
	f := newFixture(t)
	for _, spec := range []ClientSpec{
		{Name: "Bad"}, {Name: "x", GrantTypes: []string{"password"}}, {Name: "x", AuthMethod: "none"},
		{Name: "x", AuthMethod: store.AuthTLSClient}, {Name: "x", AuthMethod: store.AuthTLSClient, TLSSubject: "spiffe://other.org/svc/x"},
		{Name: "x", TokenAlg: "HS256"}, {Name: "x", TokenTTL: 48 * time.Hour}, {Name: "x", TLSSubject: "spiffe://example.org/svc/x"},
	} {
		if _, _, err := f.s.CreateClient(context.Background(), spec); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("spec %+v: %v, want ErrInvalidSpec", spec, err)
		}
	}
	f.newClient(ClientSpec{Name: "dup"})
	if _, _, err := f.s.CreateClient(context.Background(), ClientSpec{Name: "dup"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
}

func TestMetadataAndJWKS(t *testing.T) {
	f := newFixture(t)
	resp, err := f.client(nil).Get(f.srv.URL + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	var md map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&md)
	resp.Body.Close()
	if md["issuer"] != testIssuer || md["token_endpoint"] != testIssuer+"/oauth2/token" || md["tls_client_certificate_bound_access_tokens"] != true {
		t.Fatalf("metadata %v", md)
	}
	resp, err = f.client(nil).Get(f.srv.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	_ = json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	algs := map[string]bool{}
	for _, k := range set.Keys {
		algs[k.Algorithm] = true
		switch k.Key.(type) {
		case ed25519.PublicKey, *ecdsa.PublicKey:
		default:
			t.Fatalf("published key %T (private?)", k.Key)
		}
	}
	if !algs["EdDSA"] || !algs["ES256"] || len(set.Keys) != 2 {
		t.Fatalf("JWKS algorithms %v", algs)
	}
}
