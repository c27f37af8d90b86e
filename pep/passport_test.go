package pep_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/wardsec/ward/passport"
	"github.com/wardsec/ward/pep"
)

// passportFixture is a gateway key and a verifier that trusts it.
func passportFixture(t testing.TB) (*passport.Signer, *passport.Verifier) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := passport.NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	v, err := passport.New(passport.Config{Audience: "ward.test"})
	if err != nil {
		t.Fatal(err)
	}
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{s.PublicJWK()}})
	if err := v.SetKeys(set); err != nil {
		t.Fatal(err)
	}
	return s, v
}

func mint(t testing.TB, s *passport.Signer, iat time.Time, ttl int64) string {
	t.Helper()
	raw, err := s.Mint(&passport.Claims{Subject: "alice", Issuer: "https://authority", AuthMethod: "apikey", ID: passport.NewID(),
		CorrelationID: "cid-1", Audience: "ward.test", IssuedAt: iat.Unix(), Expiry: iat.Unix() + ttl, Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestPassports(t *testing.T) {
	s, v := passportFixture(t)
	_, other := passportFixture(t) // trusts another gateway's key only
	good := mint(t, s, time.Now(), 30)
	expired := mint(t, s, time.Now().Add(-time.Minute), 30)
	var seen *passport.Claims
	var raw string
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, _ = passport.FromContext(r.Context())
		raw, _ = passport.RawFromContext(r.Context())
	})
	build := func(v pep.PassportVerifier, require bool) http.Handler {
		t.Helper()
		p, err := pep.New(pep.Config{Guard: newFakeChecker(grant{webID, "orders", "read"}), Routes: ordersRoutes, PeerID: peerFromContext,
			Passports: v, RequirePassport: require})
		if err != nil {
			t.Fatal(err)
		}
		return p.Middleware(next)
	}
	cases := []struct {
		name      string
		h         http.Handler
		passports []string
		status    int
		slug      string
		sub       string
	}{
		{"valid", build(v, false), []string{good}, 200, "", "alice"},
		{"none, optional", build(v, false), nil, 200, "", ""},
		{"none, required", build(v, true), nil, 401, "passport-required", ""},
		{"expired", build(v, false), []string{expired}, 401, "invalid-passport", ""},
		{"another gateway's key", build(other, false), []string{good}, 401, "invalid-passport", ""},
		{"garbage", build(v, true), []string{"a.b.c"}, 401, "invalid-passport", ""},
		{"two passports", build(v, false), []string{good, good}, 401, "invalid-passport", ""},
		{"no verifier: header ignored", build(nil, false), []string{"forged"}, 200, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seen, raw = nil, ""
			req := withPeer(httptest.NewRequest("GET", "/orders/1", nil), webID)
			for _, p := range c.passports {
				req.Header.Add(passport.Header, p)
			}
			rec := httptest.NewRecorder()
			c.h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.status, rec.Body)
			}
			if c.slug != "" {
				var p problemDoc
				if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Type != "https://ward.dev/problems/"+c.slug {
					t.Fatalf("problem %+v (%v): %s", p, err, rec.Body)
				}
				if c.name == "expired" && p.Detail != "the passport has expired" {
					t.Errorf("detail %q", p.Detail)
				}
			}
			switch {
			case c.sub == "" && seen != nil:
				t.Errorf("claims in context: %+v", seen)
			case c.sub != "" && (seen == nil || seen.Subject != c.sub || seen.Tenant != "acme" || raw != good):
				t.Errorf("claims %+v raw %q", seen, raw)
			}
		})
	}
	// The access check comes first: an unknown caller with a valid
	// passport is still refused.
	req := withPeer(httptest.NewRequest("GET", "/orders/1", nil), otherID)
	req.Header.Set(passport.Header, good)
	rec := httptest.NewRecorder()
	build(v, true).ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("unknown caller with a passport: %d", rec.Code)
	}
	// RequirePassport needs a verifier.
	if _, err := pep.New(pep.Config{Guard: newFakeChecker(), Routes: ordersRoutes, RequirePassport: true}); !errors.Is(err, pep.ErrInvalidConfig) {
		t.Fatalf("RequirePassport without Passports: %v", err)
	}
}
