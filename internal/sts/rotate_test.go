package sts

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	p, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return p.Headers[0].KeyID
}

func published(t *testing.T, s *Service) map[string]bool {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(s.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, k := range set.Keys {
		out[k.KeyID] = true
	}
	return out
}

// TestKeyRotation: a new key is published before it signs; the old one
// verifies until its tokens have expired, then leaves the JWKS.
func TestKeyRotation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c, secret := f.newClient(ClientSpec{Name: "billing"})
	before := f.token(c.ID, secret, nil)
	oldKid := kidOf(t, before)
	if n := len(published(t, f.s)); n != 2 {
		t.Fatalf("%d published keys at start, want 2 (EdDSA, ES256)", n)
	}

	// Not due: the schedule only publishes the next keys.
	changed, err := f.s.RotateKeys(ctx, false)
	if err != nil || !changed {
		t.Fatalf("RotateKeys: %v %v", changed, err)
	}
	if n := len(published(t, f.s)); n != 4 {
		t.Fatalf("%d published keys after publishing next, want 4", n)
	}
	if kidOf(t, f.token(c.ID, secret, nil)) != oldKid {
		t.Fatal("a published next key signed before its time")
	}
	if changed, _ := f.s.RotateKeys(ctx, false); changed {
		t.Fatal("a second RotateKeys changed something")
	}

	// Due and published long enough: the next key takes over.
	f.clock.add(31 * 24 * time.Hour)
	before = f.token(c.ID, secret, nil)
	if changed, err := f.s.RotateKeys(ctx, false); err != nil || !changed {
		t.Fatalf("scheduled rotation: %v %v", changed, err)
	}
	after := f.token(c.ID, secret, nil)
	newKid := kidOf(t, after)
	if newKid == oldKid || !published(t, f.s)[oldKid] {
		t.Fatalf("rotation: old %s new %s, old still published %v", oldKid, newKid, published(t, f.s)[oldKid])
	}
	// Tokens of the old key stay valid until they expire.
	if _, in, _ := f.post(nil, "/oauth2/introspect", url.Values{"token": {before}}, c.ID, secret); in["active"] != true {
		t.Fatalf("token of the retiring key: %v", in)
	}
	// A day later the retiring key leaves the JWKS.
	f.clock.add(25 * time.Hour)
	if _, err := f.s.RotateKeys(ctx, false); err != nil {
		t.Fatal(err)
	}
	if published(t, f.s)[oldKid] {
		t.Fatal("retired key still published")
	}

	// A forced rotation switches at once.
	forcedFrom := kidOf(t, f.token(c.ID, secret, nil))
	if _, err := f.s.RotateKeys(ctx, true); err != nil {
		t.Fatal(err)
	}
	if kidOf(t, f.token(c.ID, secret, nil)) == forcedFrom {
		t.Fatal("forced rotation did not switch keys")
	}
	// Another replica's service picks the keys up with Reload.
	views, err := f.s.Keys(ctx)
	if err != nil || len(views) == 0 {
		t.Fatalf("Keys: %v", err)
	}
}

// TestUnknownKidReloads: a replica that has not yet applied another
// replica's key change reloads the keys from the store when it meets a
// token with an unknown kid (rate-limited), and verifies it.
func TestUnknownKidReloads(t *testing.T) {
	f := newFixture(t)
	other, err := New(context.Background(), Config{Store: f.st, KMS: f.s.cfg.KMS, Issuer: testIssuer, TrustDomain: testTD, Now: f.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.RotateKeys(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	c, secret := f.newClient(ClientSpec{Name: "billing"})
	tok := f.token(c.ID, secret, nil)
	if _, err := other.parseToken(tok); err != nil {
		t.Fatalf("the other replica refused a token of the new key: %v", err)
	}
	// Forged kids do not cause a reload each: the next one within the
	// interval is refused without one.
	if other.reloadForUnknownKey() {
		t.Fatal("a second reload within the interval")
	}
}
