package authority

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/wardsec/ward/internal/policy"
	"github.com/wardsec/ward/pdp"
)

// streamEvents feeds a watch stream's events to a PDP (as identity.Source
// does after checking their signatures).
type streamEvents struct {
	mu sync.Mutex
	fn func(string, []byte)
}

func (s *streamEvents) Subscribe(fn func(kind string, payload []byte)) func() {
	s.mu.Lock()
	s.fn = fn
	s.mu.Unlock()
	return func() {}
}

func (s *streamEvents) deliver(kind string, payload []byte) {
	s.mu.Lock()
	fn := s.fn
	s.mu.Unlock()
	if fn != nil {
		fn(kind, payload)
	}
}

// pdpFleet starts n PDPs of domain "orders", each following its own watch
// stream (HTTP/2, 100 per connection) and fetching over its own client.
func pdpFleet(tb testing.TB, e *catalogEnv, n int) []*pdp.PDP {
	tb.Helper()
	token := e.createService("shop", "orders", "L2")
	cert := e.fetch(token).tlsCert()
	bundle, err := x509bundle.Parse(e.a.td, e.a.BundlePEM())
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	tb.Cleanup(func() { cancel(); wg.Wait() })
	var clients []*http.Client
	pdps := make([]*pdp.PDP, n)
	for i := range n {
		if i%100 == 0 {
			clients = append(clients, e.client(cert))
		}
		ws, err := e.watch(clients[len(clients)-1], "")
		if err != nil {
			tb.Fatalf("watcher %d: %v", i, err)
		}
		tb.Cleanup(ws.close)
		ev := &streamEvents{}
		go func() {
			for w := range ws.events {
				ev.deliver(w.Kind, w.Payload)
			}
		}()
		fetcher, err := pdp.NewClient(e.url, e.client(cert).Transport.(*http.Transport).TLSClientConfig)
		if err != nil {
			tb.Fatal(err)
		}
		p, err := pdp.New(pdp.Config{Domain: "orders", Fetcher: fetcher, Bundle: bundle, TrustDomain: e.a.td, Events: ev,
			Instance: fmt.Sprintf("orders-%d", i), ResyncInterval: time.Hour, ReportInterval: time.Hour})
		if err != nil {
			tb.Fatal(err)
		}
		wg.Go(func() { _ = p.Run(ctx) })
		pdps[i] = p
	}
	return pdps
}

// pushVersion publishes a version of "orders" whose single policy names n.
func pushVersion(tb testing.TB, e *catalogEnv, n int) int64 {
	tb.Helper()
	src := policy.Source{Policies: []pdp.File{{Name: "p.cedar", Text: fmt.Sprintf("@id(\"v%d\") permit(principal, action, resource);\n", n)}}}
	var out struct {
		Version int64 `json:"version"`
	}
	e.admin("POST", "/v1/policy/domains/orders/versions", pushRequest{Source: src}, http.StatusCreated, &out)
	return out.Version
}

// TestPolicyFleetConverges: every PDP of a fleet applies each pushed
// version, and the status endpoint counts them all.
func TestPolicyFleetConverges(t *testing.T) {
	e := newCatalogEnv(t)
	fleet := pdpFleet(t, e, 20)
	for round := 1; round <= 3; round++ {
		v := pushVersion(t, e, round)
		waitFor(t, 10*time.Second, fmt.Sprintf("every PDP on version %d", v), func() bool {
			for _, p := range fleet {
				if p.Version() != v {
					return false
				}
			}
			return true
		})
	}
	waitFor(t, 10*time.Second, "20 instances reported", func() bool {
		var st struct {
			Current int `json:"current"`
		}
		e.admin("GET", "/v1/policy/domains/orders/status", nil, http.StatusOK, &st)
		return st.Current == 20
	})
}

// BenchmarkPolicyFanout measures how long a pushed version takes to be
// applied by 1,000 embedded PDPs (DESIGN.md: ≤ 1 s p99): from the start of
// the push request to the moment each PDP enforces it (announcement on the
// watch stream, bundle fetch over mTLS, signature check, compile, swap).
func BenchmarkPolicyFanout(b *testing.B) {
	const n = 1000
	e := &catalogEnv{env: newEnv(b), clients: map[string]*http.Client{}}
	fleet := pdpFleet(b, e, n)
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		v := pushVersion(b, e, i)
		seen := make([]bool, n)
		left := n
		deadline := start.Add(30 * time.Second)
		for left > 0 {
			for j, p := range fleet {
				if !seen[j] && p.Version() == v {
					seen[j] = true
					left--
					lat = append(lat, time.Since(start))
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("iteration %d: %d of %d PDPs did not apply version %d", i, left, n, v)
			}
			time.Sleep(time.Millisecond)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1.0), "max-ms")
}
