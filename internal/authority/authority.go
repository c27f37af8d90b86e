// Package authority is ward's control plane: the certificate authority that
// issues and renews X.509-SVIDs (root, per-team intermediates), answers OCSP
// and serves CRLs, revokes certificates, services and intermediates, rotates
// the trust bundle, streams signed change events to SDKs, keeps the
// dependency catalogue (declarations, access requests, grants; see
// internal/catalog), serves each provider its signed access list, and
// serves the admin API. All state lives in an internal/store; CA and
// signing keys are sealed by an internal/kms.KMS. Replicas share the store and learn of each
// other's changes through the bus (NATS subject ward.v1.events).
//
//	res, err := authority.Init(ctx, st, k, authority.InitOptions{TrustDomain: td}) // once
//	a, err := authority.New(ctx, authority.Config{
//		Store: st, KMS: k, Bus: conn, PublicURL: "https://127.0.0.1:8443",
//	})
//	defer a.Close()
//	err = a.Run(ctx, "127.0.0.1:8443") // HTTPS until ctx is done
//
// In this version the authority holds the root keys online (sealed at rest):
// it signs team intermediates and the root's CRL itself. Keeping the root
// offline, with intermediates signed in a ceremony, is future work.
package authority

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/bus"
	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/internal/sts"
	"github.com/wardsec/ward/internal/telemetry"
)

// Errors callers branch on.
var (
	// ErrAlreadyInitialized: Init was run on a store that already holds a
	// trust domain.
	ErrAlreadyInitialized = errors.New("authority: already initialized")
	// ErrNotInitialized: New was called on a store Init has not prepared.
	ErrNotInitialized = errors.New("authority: not initialized")
	// ErrUnknownService: IssueSVID was asked for a service that is not
	// registered.
	ErrUnknownService = errors.New("authority: unknown service")
	// ErrServiceRevoked: the service has been revoked; it gets no SVIDs.
	ErrServiceRevoked = errors.New("authority: service revoked")
	// ErrNoActiveCA: no active intermediate can issue for the team (a broken
	// rotation or a half-created team).
	ErrNoActiveCA = errors.New("authority: no active intermediate CA")
	// ErrClosed: the authority has been closed.
	ErrClosed = errors.New("authority: closed")
)

// Bus is what the authority needs from internal/bus (*bus.Conn satisfies
// it): publish change notifications and subscribe to other replicas'.
type Bus interface {
	Publish(ctx context.Context, subject string, data []byte) error
	Subscribe(subject string, fn func(subject string, data []byte)) (func() error, error)
}

// Recorder records audit events (*audit.Writer).
type Recorder interface {
	Write(e audit.Event)
}

// eventsSubject carries notifications {"seq":N,"kind":"..."} of the
// authority's change log.
const eventsSubject = bus.SubjectEvents

var _ Bus = (*bus.Conn)(nil)

// Levels and their default SVID lifetimes.
var defaultSVIDTTL = map[string]time.Duration{
	"L1": time.Hour,
	"L2": time.Hour,
	"L3": 15 * time.Minute,
}

// Bounds of any SVID lifetime.
const (
	minSVIDTTL = time.Second
	maxSVIDTTL = 24 * time.Hour
)

// Config configures New. Store, KMS and PublicURL are required.
type Config struct {
	// Store holds all state. Required.
	Store *store.Store
	// KMS unseals the CA and signing keys. Required.
	KMS kms.KMS
	// Bus carries change notifications between replicas; nil means
	// in-process fan-out only (a single replica, tests).
	Bus Bus
	// PublicURL is how clients reach this authority, e.g.
	// https://127.0.0.1:8443; it is written into every certificate's OCSP
	// and CRL URLs. Required.
	PublicURL string
	// Hostnames are extra DNS names or IP addresses for the serving
	// certificate; the host of PublicURL, "localhost", 127.0.0.1 and ::1
	// are always included.
	Hostnames []string
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Registry receives the authority's metrics; nil means a new one
	// (telemetry.NewRegistry), served on /metrics either way.
	Registry *prometheus.Registry
	// SVIDTTL overrides the default SVID lifetime per level ("L1", "L2",
	// "L3"; defaults 1h, 1h, 15m). Values must lie in [1s, 24h].
	SVIDTTL map[string]time.Duration
	// AuthFailureBurst is how many failed authentications (401s) a client
	// address may make at once before it is answered 429; the budget
	// refills at a tenth of it per second. 0 means 50; negative turns the
	// limit off (use that behind a load balancer that hides client
	// addresses, where all clients would share one budget).
	AuthFailureBurst int
	// Audit, if set, receives the authority's audit events: svid.issued,
	// svid.revoked, token.issued, token.revoked, catalog.approved and
	// admin.<method> for every successful change through the admin API.
	// An *audit.Writer implements it.
	Audit Recorder
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	tun *tunables // tests in this package shorten intervals
}

// Tunables (fields so that tests in this package can shorten them).
type tunables struct {
	heartbeat     time.Duration // watch stream heartbeat interval
	maxWatchers   int           // concurrent watch streams per replica
	watcherBuffer int           // events queued per watcher before it is dropped
	writeTimeout  time.Duration // one watch stream write
	pollInterval  time.Duration // safety-net poll of the event log
	crlMaxAge     time.Duration // CRL cache lifetime
	failureRate   float64       // failed authentications refilled per second, per client address bucket
	failureBurst  int           // failed authentications allowed at once, per client address bucket
	declareRate   float64       // changed declarations refilled per second, per service
	declareBurst  int           // changed declarations allowed at once, per service
}

var defaultTunables = tunables{
	heartbeat:     15 * time.Second,
	maxWatchers:   10000,
	watcherBuffer: 256,
	writeTimeout:  10 * time.Second,
	pollInterval:  2 * time.Second,
	crlMaxAge:     time.Minute,
	failureRate:   5,
	failureBurst:  50,
	declareRate:   1.0 / 6,
	declareBurst:  10,
}

// Authority is a running control-plane replica. It is safe for concurrent use.
type Authority struct {
	st        *store.Store
	kms       kms.KMS
	bus       Bus
	log       *slog.Logger
	reg       *prometheus.Registry
	metrics   *metrics
	now       func() time.Time
	td        spiffeid.TrustDomain
	publicURL string
	dnsNames  []string
	ips       []net.IP
	svidTTL   map[string]time.Duration
	rootTTL   time.Duration
	interTTL  time.Duration
	tun       tunables
	failures  *failureLimiter // failed authentications per client address
	audit     Recorder        // nil: no audit events

	signingKey ed25519.PrivateKey
	cas        atomic.Pointer[caState]      // current CA view, replaced on reload
	signing    atomic.Pointer[signingState] // control-plane signing certificate
	serving    atomic.Pointer[servingCert]  // TLS serving certificate
	renewing   atomic.Bool

	reloadMu sync.Mutex // serializes CA reloads
	adminMu  sync.Mutex // serializes CA-changing admin operations in this replica

	hub        *hub
	crls       *crlCache
	sts        *sts.Service  // OAuth 2.0 token service
	lists      listCache     // signed access lists by provider
	bundles    bundleCache   // signed policy bundles by domain
	jwtSigner  jwtSVIDSigner // JWT-SVID key, loaded on first use
	reports    statusReports // PDP status reports not stored yet
	kidOnce    sync.Once     // computes kid
	kid        string        // RFC 7638 thumbprint of signingKey
	catalogMu  sync.Mutex    // serializes declarations in this replica
	declMu     sync.Mutex
	declLimits map[string]*rate.Limiter // changed declarations per service
	services   sync.Map                 // name → *store.Service, see service

	handlerOnce sync.Once
	handler     http.Handler

	stop      context.CancelFunc
	loopDone  chan struct{}
	unsub     func() error
	closeOnce sync.Once
}

// New loads an initialized authority from cfg.Store: it unseals the CA and
// signing keys, issues its serving certificate, subscribes to the bus and
// starts the event loop. Call Close to stop it. ErrNotInitialized if Init was
// not run on the store.
func New(ctx context.Context, cfg Config) (*Authority, error) {
	if cfg.Store == nil {
		return nil, errors.New("authority: Config.Store is required")
	}
	if cfg.KMS == nil {
		return nil, errors.New("authority: Config.KMS is required")
	}
	pub, err := parsePublicURL(cfg.PublicURL)
	if err != nil {
		return nil, err
	}
	ttls := make(map[string]time.Duration, len(defaultSVIDTTL))
	for l, d := range defaultSVIDTTL {
		ttls[l] = d
	}
	for l, d := range cfg.SVIDTTL {
		if _, ok := defaultSVIDTTL[l]; !ok {
			return nil, fmt.Errorf("authority: Config.SVIDTTL: unknown level %q (L1, L2 or L3)", l)
		}
		if d < minSVIDTTL || d > maxSVIDTTL {
			return nil, fmt.Errorf("authority: Config.SVIDTTL[%s]: %v is outside [1s, 24h]", l, d)
		}
		ttls[l] = d
	}
	// The public URL's host is always a SAN, so that clients reach us by it.
	hosts := cfg.Hostnames
	if u, err := url.Parse(pub); err == nil && u.Hostname() != "" {
		hosts = append([]string{u.Hostname()}, hosts...)
	}
	dns, ips, err := splitHostnames(hosts)
	if err != nil {
		return nil, err
	}
	a := &Authority{
		st:        cfg.Store,
		kms:       cfg.KMS,
		bus:       cfg.Bus,
		log:       cfg.Logger,
		reg:       cfg.Registry,
		now:       cfg.Now,
		publicURL: pub,
		dnsNames:  dns,
		ips:       ips,
		svidTTL:   ttls,
		tun:       defaultTunables,
		audit:     cfg.Audit,
	}
	if cfg.tun != nil {
		a.tun = *cfg.tun
	}
	if a.log == nil {
		a.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if a.reg == nil {
		a.reg = telemetry.NewRegistry()
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.metrics, err = newMetrics(a.reg); err != nil {
		return nil, err
	}
	switch burst := cfg.AuthFailureBurst; {
	case burst > 0:
		a.failures = newFailureLimiter(float64(burst)/10, burst)
	case burst == 0:
		a.failures = newFailureLimiter(a.tun.failureRate, a.tun.failureBurst)
	}

	tdRaw, err := a.st.GetMeta(ctx, metaTrustDomain)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotInitialized
	}
	if err != nil {
		return nil, fmt.Errorf("authority: load trust domain: %w", err)
	}
	if a.td, err = spiffeid.TrustDomainFromString(string(tdRaw)); err != nil {
		return nil, fmt.Errorf("authority: stored trust domain %q: %w", tdRaw, err)
	}
	if a.rootTTL, err = a.metaDuration(ctx, metaRootTTL, defaultRootTTL); err != nil {
		return nil, err
	}
	if a.interTTL, err = a.metaDuration(ctx, metaIntermediateTTL, defaultIntermediateTTL); err != nil {
		return nil, err
	}
	if a.signingKey, err = loadSigningKey(ctx, a.st, a.kms); err != nil {
		return nil, err
	}
	// Events up to here are reflected in what we load next.
	seq, err := a.st.LatestEventSeq(ctx)
	if err != nil {
		return nil, fmt.Errorf("authority: %w", err)
	}
	if err := a.reloadCAs(ctx); err != nil {
		return nil, err
	}
	if _, err := a.loadSigningCert(ctx, true); err != nil {
		return nil, err
	}
	if _, err := a.renewServingCert(); err != nil {
		return nil, err
	}
	a.crls = newCRLCache()
	if a.sts, err = a.newSTS(ctx); err != nil {
		return nil, err
	}
	a.hub = newHub(a, seq)

	loopCtx, stop := context.WithCancel(context.Background())
	a.stop = stop
	a.loopDone = make(chan struct{})
	if a.bus != nil {
		a.unsub, err = a.bus.Subscribe(eventsSubject, func(string, []byte) { a.hub.wake() })
		if err != nil {
			stop()
			return nil, fmt.Errorf("authority: subscribe %s: %w", eventsSubject, err)
		}
	}
	go a.loop(loopCtx)
	return a, nil
}

// Close stops the event loop, ends every watch stream and unsubscribes from
// the bus. It does not close the store. Serve should have returned first.
func (a *Authority) Close() error {
	var err error
	a.closeOnce.Do(func() {
		a.stop()
		<-a.loopDone
		a.hub.closeAll()
		if a.unsub != nil {
			err = a.unsub()
		}
	})
	return err
}

// TrustDomain is the authority's SPIFFE trust domain.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }

// BundlePEM returns the current trust bundle: the roots in state prepared,
// active or retiring, PEM encoded.
func (a *Authority) BundlePEM() []byte {
	return append([]byte(nil), a.cas.Load().bundlePEM...)
}

func parsePublicURL(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("authority: Config.PublicURL is required")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("authority: Config.PublicURL %q must be an absolute https:// URL", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// svidTTLFor is the lifetime of a service's SVIDs: its own setting, else the
// default of its level, capped at 24h.
func (a *Authority) svidTTLFor(svc store.Service) time.Duration {
	ttl := svc.SVIDTTL
	if ttl <= 0 {
		ttl = a.svidTTL[svc.Level]
	}
	if ttl <= 0 {
		ttl = time.Hour
	}
	return min(max(ttl, minSVIDTTL), maxSVIDTTL)
}

// record writes an audit event when auditing is on.
func (a *Authority) record(e audit.Event) {
	if a.audit != nil {
		a.audit.Write(e)
	}
}
