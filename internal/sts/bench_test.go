package sts

import (
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// BenchmarkIssue measures minting a token (claims, jti, EdDSA signature)
// against signing the same claims with go-jose directly.
func BenchmarkIssue(b *testing.B) {
	f := newFixture(b)
	now := time.Now()
	claims := Claims{Issuer: testIssuer, Subject: "client:x", Audience: []string{"ward"}, Expiry: now.Add(time.Hour).Unix(),
		IssuedAt: now.Unix(), NotBefore: now.Unix(), ID: "0123456789abcdef0123456789abcdef", Scope: "orders:read", ClientID: "wc_x"}
	b.Run("sts-mint", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			jti, _ := newJTI()
			c := claims
			c.ID = jti
			if _, err := f.s.mint(AlgEdDSA, c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-go-jose", func(b *testing.B) {
		k := f.s.keys.Load().active[AlgEdDSA]
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: k.priv}, nil)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jwt.Signed(signer).Claims(claims).Serialize(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkIntrospect measures checking a token (parse, key lookup,
// signature, claims, revocation) against the signature verification
// alone.
func BenchmarkIntrospect(b *testing.B) {
	f := newFixture(b)
	c, secret := f.newClient(ClientSpec{Name: "bench"})
	tok := f.token(c.ID, secret, nil)
	b.Run("sts-parse-cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := f.s.parseToken(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sts-parse-uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f.s.verified.mu.Lock()
			clear(f.s.verified.m)
			f.s.verified.mu.Unlock()
			if _, err := f.s.parseToken(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-verify", func(b *testing.B) {
		k := f.s.keys.Load().active[AlgEdDSA]
		b.ReportAllocs()
		for b.Loop() {
			obj, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.EdDSA})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := obj.Verify(k.pub); err != nil {
				b.Fatal(err)
			}
		}
	})
}
