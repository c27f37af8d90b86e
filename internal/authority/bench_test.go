package authority

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

// BenchmarkIssueSVID measures the issuance hot path: CSR parsed and
// checked, SVID signed by the team intermediate, serial persisted in
// SQLite. CSRs are generated up front. The baseline sub-benchmark signs
// the same CSRs with no store and no checks, so the ratio holds on a
// noisy machine.
func BenchmarkIssueSVID(b *testing.B) {
	ctx := context.Background()
	k := newKMS(b)
	st, _ := initStore(b, b.TempDir(), k)
	a, err := New(ctx, Config{Store: st, KMS: k, PublicURL: "https://127.0.0.1:8443"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Close() })
	now := time.Now()
	root := a.cas.Load().activeRoot
	if _, err := a.newIntermediate(ctx, root, "shop", store.CAStateActive); err != nil {
		b.Fatal(err)
	}
	if err := st.CreateTeam(ctx, store.Team{Name: "shop", CreatedAt: now}); err != nil {
		b.Fatal(err)
	}
	if err := a.reloadCAs(ctx); err != nil {
		b.Fatal(err)
	}
	if err := st.CreateService(ctx, store.Service{Name: "web", Team: "shop", Level: "L2", CreatedAt: now}); err != nil {
		b.Fatal(err)
	}
	csrs := make([][]byte, 256)
	for i := range csrs {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, newKey(b))
		if err != nil {
			b.Fatal(err)
		}
		csrs[i] = der
	}

	b.Run("authority", func(b *testing.B) {
		b.ReportAllocs()
		var n atomic.Int64
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				if _, err := a.IssueSVID(ctx, "web", csrs[int(i)%len(csrs)]); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "svids/s")
	})

	b.Run("baseline-sign-only", func(b *testing.B) {
		b.ReportAllocs()
		iss := a.cas.Load().active["shop"]
		parsed := make([]*x509.CertificateRequest, len(csrs))
		for i, der := range csrs {
			if parsed[i], err = x509.ParseCertificateRequest(der); err != nil {
				b.Fatal(err)
			}
		}
		var n atomic.Int64
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				csr := parsed[int(i)%len(parsed)]
				tmpl := &x509.Certificate{SerialNumber: bigOne(), NotBefore: now, NotAfter: now.Add(time.Hour)}
				if _, err := x509.CreateCertificate(rand.Reader, tmpl, iss.cert, csr.PublicKey, iss.signer.Key); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "svids/s")
	})
}
