package passport

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"
)

// BenchmarkMint is the gateway's cost per forwarded request.
func BenchmarkMint(b *testing.B) {
	s := newSigner(b)
	c := claims(time.Now())
	b.ReportAllocs()
	for b.Loop() {
		c.ID = NewID()
		if _, err := s.Mint(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyUncached verifies a passport the verifier has not seen
// (signature, decode, checks).
func BenchmarkVerifyUncached(b *testing.B) {
	s := newSigner(b)
	clk := &clock{}
	clk.t.Store(time.Now().Unix())
	v := newVerifier(b, clk, s)
	raw, _ := s.Mint(claims(clk.now()))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := v.verify(ctx, raw, clk.now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCached is a service seeing the same passport again (a
// request fanned out to several handlers, or retries).
func BenchmarkVerifyCached(b *testing.B) {
	s := newSigner(b)
	clk := &clock{}
	clk.t.Store(time.Now().Unix())
	v := newVerifier(b, clk, s)
	raw, _ := s.Mint(claims(clk.now()))
	ctx := context.Background()
	if _, err := v.Verify(ctx, raw); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEd25519Sign and BenchmarkEd25519Verify are the baselines of
// the same run: the signature alone, over a passport-sized message. Mint
// and uncached Verify cost this plus the encoding and the checks.
func BenchmarkEd25519Sign(b *testing.B) {
	s := newSigner(b)
	msg := make([]byte, 600)
	for b.Loop() {
		ed25519.Sign(s.key, msg)
	}
}

func BenchmarkEd25519Verify(b *testing.B) {
	s := newSigner(b)
	msg := make([]byte, 600)
	sig := ed25519.Sign(s.key, msg)
	pub := s.key.Public().(ed25519.PublicKey)
	for b.Loop() {
		ed25519.Verify(pub, msg, sig)
	}
}
