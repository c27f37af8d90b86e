package passport

import (
	"context"
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
