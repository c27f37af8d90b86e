package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	forwarded      prometheus.Counter
	refused        *prometheus.CounterVec
	minted         prometheus.Counter
	cacheHit       prometheus.Counter
	cacheMiss      prometheus.Counter
	cacheCoalesced prometheus.Counter
	cacheRevoked   prometheus.Counter
	routes         prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_forwarded_total", Help: "Requests forwarded upstream with a passport."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ward_gateway_refused_total", Help: "Requests the gateway answered itself, by reason."},
			[]string{"reason"}),
		minted:         prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_passports_minted_total", Help: "Passports signed."}),
		cacheHit:       prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_credential_cache_hits_total", Help: "Credential checks answered from the cache."}),
		cacheMiss:      prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_credential_cache_misses_total", Help: "Credential checks that went to a verifier."}),
		cacheCoalesced: prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_credential_checks_coalesced_total", Help: "Concurrent credential checks that shared one verification."}),
		cacheRevoked:   prometheus.NewCounter(prometheus.CounterOpts{Name: "ward_gateway_credential_cache_revoked_total", Help: "Cached credentials evicted by a revocation."}),
		routes:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "ward_gateway_routes", Help: "Routes in the loaded table."}),
	}
	for _, c := range []prometheus.Collector{m.forwarded, m.refused, m.minted, m.cacheHit, m.cacheMiss, m.cacheCoalesced, m.cacheRevoked, m.routes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
