package authority

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wardsec/ward/internal/ca"
)

// metrics are the authority's own Prometheus metrics (HTTP metrics come
// from telemetry.HTTPMetrics).
type metrics struct {
	issued      *prometheus.CounterVec // by kind: bootstrap, renew, api, component, signing
	revocations *prometheus.CounterVec // by scope: serial, service, ca
	watchers    prometheus.Gauge
	watchDrops  *prometheus.CounterVec // by reason: slow, revoked, shutdown
	// authFailuresLimited counts requests refused with 429 because their
	// client address failed to authenticate too often.
	authFailuresLimited prometheus.Counter
	// accessListFetches counts access lists served (GET /v1/accesslist).
	accessListFetches prometheus.Counter
	// catalogDecisions counts access requests decided, by outcome
	// (approved, denied, auto, revoked).
	catalogDecisions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_authority_certificates_issued_total",
			Help: "Certificates issued, by kind (bootstrap, renew, api, component, signing).",
		}, []string{"kind"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_authority_revocations_total",
			Help: "Revocation operations, by scope (serial, service, ca).",
		}, []string{"scope"}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ward_authority_watchers",
			Help: "Watch streams connected to this replica.",
		}),
		watchDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_authority_watch_disconnects_total",
			Help: "Watch streams ended by the authority, by reason (slow, revoked, shutdown).",
		}, []string{"reason"}),
		authFailuresLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ward_authority_auth_failures_limited_total",
			Help: "Requests refused (429) because their client address failed to authenticate too often.",
		}),
		accessListFetches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ward_authority_access_list_fetches_total",
			Help: "Signed access lists served to providers.",
		}),
		catalogDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ward_authority_catalog_decisions_total",
			Help: "Access requests decided, by outcome (approved, denied, auto, revoked).",
		}, []string{"outcome"}),
	}
	var err error
	if m.issued, err = register(reg, m.issued); err != nil {
		return nil, err
	}
	if m.revocations, err = register(reg, m.revocations); err != nil {
		return nil, err
	}
	if m.watchers, err = register(reg, m.watchers); err != nil {
		return nil, err
	}
	if m.watchDrops, err = register(reg, m.watchDrops); err != nil {
		return nil, err
	}
	if m.authFailuresLimited, err = register(reg, m.authFailuresLimited); err != nil {
		return nil, err
	}
	if m.accessListFetches, err = register(reg, m.accessListFetches); err != nil {
		return nil, err
	}
	if m.catalogDecisions, err = register(reg, m.catalogDecisions); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the identical collector already
// registered (several authorities may share a registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("authority: register metrics: %w", err)
}

func itoa(n int) string { return strconv.Itoa(n) }

// parseSerial parses a stored hex serial.
func parseSerial(s string) (*big.Int, error) { return ca.ParseSerialHex(s) }
