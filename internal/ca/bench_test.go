package ca

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"time"
)

// BenchmarkIssueSVID measures signing one X509-SVID for a parsed P-256 CSR.
// The "baseline" sub-benchmark is one raw ECDSA P-256 signature, so the
// ratio IssueSVID/baseline stays meaningful on a noisy machine.
func BenchmarkIssueSVID(b *testing.B) {
	now := time.Now()
	_, inter := newChain(b, now)
	csrBytes := csrDER(b, mustP256(b), nil)
	csr := mustParseCSR(b, csrBytes)

	b.Run("baseline-ecdsa-sign", func(b *testing.B) {
		key := inter.Key.(*ecdsa.PrivateKey)
		digest := sha256.Sum256([]byte("tbs"))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
	b.Run("sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := inter.IssueSVID(IssueRequest{CSR: csr, ID: testID, InstanceID: "i-1", TTL: time.Hour, Now: now,
				OCSPURL: "https://127.0.0.1:8443/ocsp", CRLURL: "https://127.0.0.1:8443/crl/x.crl"}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
	b.Run("parse-csr+sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, err := ParseCSR(csrBytes)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := inter.IssueSVID(IssueRequest{CSR: c, ID: testID, InstanceID: "i-1", TTL: time.Hour, Now: now}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := inter.IssueSVID(IssueRequest{CSR: csr, ID: testID, TTL: time.Hour, Now: now}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
}

func BenchmarkParseCSR(b *testing.B) {
	data := csrDER(b, mustP256(b), nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCSR(data); err != nil {
			b.Fatal(err)
		}
	}
}
