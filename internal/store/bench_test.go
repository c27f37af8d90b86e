package store_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

// BenchmarkInsertCertificate measures the issuance hot path's write:
// single-row inserts of a realistic SVID row (32-hex serial, ~700-byte DER)
// from parallel goroutines. "serial" (one goroutine) is the baseline the
// parallel run compares to.
func BenchmarkInsertCertificate(b *testing.B) {
	backends := []struct {
		name string
		open func(b *testing.B) *store.Store
	}{
		{"sqlite", func(b *testing.B) *store.Store { return openSQLite(b, filepath.Join(b.TempDir(), "ward.db")) }},
		{"postgres", func(b *testing.B) *store.Store {
			if os.Getenv("WARD_TEST_POSTGRES_DSN") == "" {
				b.Skip("WARD_TEST_POSTGRES_DSN not set")
			}
			return openPostgres(b, postgresDSN(b))
		}},
	}
	der := make([]byte, 700)
	rand.Read(der)
	prefix := make([]byte, 8)
	rand.Read(prefix)
	var counter atomic.Uint64
	cert := func() store.Certificate {
		now := time.Now()
		return store.Certificate{
			Serial:     hex.EncodeToString(prefix) + fmt.Sprintf("%016x", counter.Add(1)),
			Service:    "web",
			SPIFFEID:   "spiffe://ward.test/svc/web",
			InstanceID: "i-0123456789abcdef",
			IssuerID:   "int-1a2b3c4d",
			NotBefore:  now.Add(-30 * time.Second),
			NotAfter:   now.Add(time.Hour),
			DER:        der,
		}
	}
	for _, be := range backends {
		b.Run(be.name+"/serial", func(b *testing.B) {
			st := be.open(b)
			b.ReportAllocs()
			for b.Loop() {
				if err := st.InsertCertificate(b.Context(), cert()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "inserts/s")
		})
		b.Run(be.name+"/parallel", func(b *testing.B) {
			st := be.open(b)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := st.InsertCertificate(b.Context(), cert()); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "inserts/s")
		})
	}
}
