package authority

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/internal/ca"
)

// TestGuardFloodAgainstAuthority fires 10,000 checks from unknown callers
// at a guard that fetches from a real authority, and reads from the
// authority's own metric how many lists it served: no more than one per
// MissRefreshInterval.
func TestGuardFloodAgainstAuthority(t *testing.T) {
	c := newCatalogEnv(t)
	s := c.fetch(c.createService("id", "whoami", "L1"))
	c.clients["whoami"] = c.client(s.tlsCert())
	c.declare("whoami", whoamiManifest, http.StatusOK)

	roots, err := ca.ParseCertsPEM(c.a.BundlePEM())
	if err != nil {
		t.Fatal(err)
	}
	bundle := x509bundle.FromX509Authorities(c.a.TrustDomain(), roots)
	tlsConf := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      c.roots(),
		Certificates: []tls.Certificate{*s.tlsCert()},
	}
	client, err := guard.NewClient(c.url, tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	const interval = 50 * time.Millisecond
	g, err := guard.New(context.Background(), guard.Config{
		Provider: spiffeid.RequireFromPath(c.a.TrustDomain(), "/svc/whoami"),
		Fetcher:  client, Bundle: bundle, MissRefreshInterval: interval, ResyncInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := counterValue(t, c.a.metrics.accessListFetches)
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for w := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				id := spiffeid.RequireFromPath(c.a.TrustDomain(), fmt.Sprintf("/svc/intruder-%d-%d", w, i))
				err := g.Check(context.Background(), id, "whoami", "read")
				if errors.Is(err, guard.ErrUnknownCaller) {
					mu.Lock()
					refused++
					mu.Unlock()
				}
				if i%50 == 0 {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	served := int64(counterValue(t, c.a.metrics.accessListFetches) - before)
	limit := 1 + int64(elapsed/interval)
	t.Logf("10,000 checks from unknown callers in %v: the authority served %d lists (limit %d)", elapsed.Round(time.Millisecond), served, limit)
	if refused != 10000 {
		t.Fatalf("%d of 10,000 unknown callers refused", refused)
	}
	if served > limit || served == 0 {
		t.Fatalf("authority served %d lists in %v, limit %d", served, elapsed, limit)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
