package authority

import (
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkRevocationFanout measures how long a revocation takes to reach
// 1,000 connected watch streams (DESIGN.md §5: ≤ 1 s p99, no per-request
// network call): each iteration revokes one certificate through the admin
// API and waits until every stream has received the revocation event. It
// reports the latency distribution across all streams and iterations as
// p50-ms, p99-ms and max-ms (from the start of the revoke request to the
// event line read by the watcher).
func BenchmarkRevocationFanout(b *testing.B) {
	const watchers, perClient = 1000, 100
	e := newEnv(b)
	token := e.createService("shop", "web", "L1")
	watcherCert := e.fetch(token).tlsCert()

	type arrival struct {
		seq int64
		at  time.Time
	}
	arrivals := make(chan arrival, watchers*4)
	var clients []*http.Client
	for i := 0; i < watchers; i++ {
		if i%perClient == 0 {
			clients = append(clients, e.client(watcherCert)) // HTTP/2: 100 streams per connection
		}
		ws, err := e.watch(clients[len(clients)-1], "")
		if err != nil {
			b.Fatalf("watcher %d: %v", i, err)
		}
		b.Cleanup(ws.close)
		go func() {
			for ev := range ws.events {
				if ev.Kind == kindRevocation {
					arrivals <- arrival{seq: ev.Seq, at: time.Now()}
				}
			}
		}()
	}

	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		victim := e.fetch(token)
		b.StartTimer()
		start := time.Now()
		e.admin("POST", "/v1/svids/"+victim.serial()+"/revoke", nil, http.StatusOK, nil)
		for n := 0; n < watchers; n++ {
			select {
			case a := <-arrivals:
				mu.Lock()
				lat = append(lat, a.at.Sub(start))
				mu.Unlock()
			case <-time.After(10 * time.Second):
				b.Fatalf("iteration %d: only %d of %d watchers got the revocation", i, n, watchers)
			}
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1.0), "max-ms")
}
