// Package gateway is ward's edge: an HTTPS listener for external traffic
// that authenticates every request with one credential chain (ward API
// keys, ward JWT access tokens, tokens of configured OpenID Connect
// issuers, opaque OAuth tokens by introspection, partner client
// certificates), rate-limits before and after authentication, checks the
// route's scopes (the edge policy hook), and forwards over mTLS, with its
// own SVID (spiffe://<td>/ward/gateway), to the upstream service named by
// the route, which must present that service's SPIFFE ID. Every forwarded
// request carries a fresh passport (Ward-Passport): a short-lived JWS the
// gateway signs with a key it registered with the authority. External
// credentials never travel past the gateway; internal headers (Ward-*,
// X-Ward-*, in any case and with "_" for "-") are removed from every
// request, and internal headers from every response, so a passport never
// reaches a client.
//
// The gateway is admin-free: routes come from the authority
// (GET /v1/gateway/routes) and change on the watch stream; revocations
// arrive on the same stream and evict cached credentials at once.
//
//	src, _ := identity.New(ctx, identity.Config{AuthorityURL: url, BootstrapToken: tok, BundleFile: bundle})
//	go src.Run(ctx)
//	gw, _ := gateway.New(gateway.Config{Source: src, Certificate: getCert})
//	err := gw.Run(ctx, "0.0.0.0:8080")
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/credential"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/telemetry"
	"github.com/wardsec/ward/passport"
)

// Policy is the edge policy hook: a coarse, route-level decision made
// after the credential and the route's scopes were checked. nil allows;
// an error refuses with 403 (its text is the problem detail). EdgePolicy
// runs the "edge" Cedar policy domain here.
type Policy interface {
	Authorize(ctx context.Context, route *Route, p *Principal, r *http.Request) error
}

// Recorder records audit events (*audit.Writer).
type Recorder interface {
	Write(e audit.Event)
}

// Config configures New.
type Config struct {
	// Source is the gateway's identity: an SVID
	// spiffe://<td>/ward/gateway, renewed and following the watch
	// stream. Its AuthorityURL must be the authority's public URL (the
	// issuer of ward tokens). Required.
	Source *identity.Source
	// Certificate serves the external listener's TLS (a certificate
	// clients trust for the gateway's host name). Required by Serve.
	Certificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// PartnerCAs verifies partner client certificates (credential kind
	// "mtls"); nil refuses them.
	PartnerCAs *x509.CertPool
	// ExternalIssuers are trusted OpenID Connect issuers (kind "oidc").
	ExternalIssuers []credential.Issuer
	// ExternalHTTPClient fetches the external issuers' keys; nil means
	// a client trusting the system roots.
	ExternalHTTPClient *http.Client
	// Verifier overrides the credential verifier built from Source
	// (tests).
	Verifier Verifier
	// Policy is the edge policy hook; nil admits what passed the scopes.
	Policy Policy
	// Audit, if set, receives a gateway.request event for every request
	// (an *audit.Writer).
	Audit Recorder

	// PassportTTL is a passport's lifetime: default 30s, at most 60s.
	PassportTTL time.Duration
	// CacheMaxTTL caps how long a verified credential is trusted without
	// a new check (never beyond its own expiry): default 60s.
	CacheMaxTTL time.Duration
	// NegativeTTL is how long a refused credential is remembered:
	// default 5s.
	NegativeTTL time.Duration
	// CacheSize bounds cached verifications: default 100000 (refusals:
	// a tenth of it).
	CacheSize int
	// PreAuthRate and PreAuthBurst limit requests per client address
	// before authentication: default 50/s, burst 100.
	PreAuthRate  float64
	PreAuthBurst int
	// RouteRate and RouteBurst are the default per-caller limits of a
	// route that sets none: default 100/s, burst 200.
	RouteRate  float64
	RouteBurst int
	// MaxLimiterKeys bounds each rate limiter's key space: default 100000.
	MaxLimiterKeys int
	// MaxBodyBytes bounds a request body: default 10 MiB.
	MaxBodyBytes int64
	// KeyLifetime is how long a passport key is published (default
	// 24h); KeyRotateEvery how often a new one is made (default 6h);
	// KeyPropagation the wait between registering a new key and signing
	// with it (default 2s).
	KeyLifetime, KeyRotateEvery, KeyPropagation time.Duration

	Logger   *slog.Logger
	Registry *prometheus.Registry
	Now      func() time.Time
}

// Gateway is the edge proxy. It is safe for concurrent use.
type Gateway struct {
	cfg      Config
	src      *identity.Source
	td       spiffeid.TrustDomain
	self     string // the gateway's SPIFFE ID
	issuer   string // the authority's public URL
	external map[string]bool
	verifier Verifier
	hc       *http.Client // to the authority, mTLS
	log      *slog.Logger
	now      func() time.Time
	reg      *prometheus.Registry
	m        *metrics

	cache   *credCache
	preAuth *limiterSet
	perUser *limiterSet
	keys    *keyManager

	routes     atomic.Pointer[table]
	refresh    chan struct{}
	transMu    sync.Mutex
	transports map[transportKey]*http.Transport
	telemetry  *http.ServeMux
	unsub      func()
}

// New builds a gateway; Start makes it ready.
func New(cfg Config) (*Gateway, error) {
	if cfg.Source == nil {
		return nil, errors.New("gateway: Config.Source is required")
	}
	switch {
	case cfg.PassportTTL == 0:
		cfg.PassportTTL = 30 * time.Second
	case cfg.PassportTTL < time.Second || cfg.PassportTTL > passport.MaxTTL:
		return nil, fmt.Errorf("gateway: Config.PassportTTL %v is outside [1s, 60s]", cfg.PassportTTL)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.CacheMaxTTL, 60*time.Second)
	def(&cfg.NegativeTTL, 5*time.Second)
	def(&cfg.KeyLifetime, 24*time.Hour)
	def(&cfg.KeyRotateEvery, 6*time.Hour)
	def(&cfg.KeyPropagation, 2*time.Second)
	if cfg.KeyRotateEvery+cfg.PassportTTL >= cfg.KeyLifetime {
		return nil, errors.New("gateway: Config.KeyRotateEvery must be shorter than KeyLifetime minus the passport lifetime")
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 100000
	}
	if cfg.PreAuthRate <= 0 {
		cfg.PreAuthRate, cfg.PreAuthBurst = 50, max(cfg.PreAuthBurst, 100)
	}
	if cfg.PreAuthBurst <= 0 {
		cfg.PreAuthBurst = max(1, int(cfg.PreAuthRate*2))
	}
	if cfg.RouteRate <= 0 {
		cfg.RouteRate, cfg.RouteBurst = 100, max(cfg.RouteBurst, 200)
	}
	if cfg.RouteBurst <= 0 {
		cfg.RouteBurst = max(1, int(cfg.RouteRate*2))
	}
	if cfg.MaxLimiterKeys <= 0 {
		cfg.MaxLimiterKeys = 100000
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 10 << 20
	}
	g := &Gateway{cfg: cfg, src: cfg.Source, log: cfg.Logger, now: cfg.Now, reg: cfg.Registry,
		external: map[string]bool{}, refresh: make(chan struct{}, 1), transports: map[transportKey]*http.Transport{}}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.reg == nil {
		g.reg = telemetry.NewRegistry()
	}
	var err error
	if g.m, err = newMetrics(g.reg); err != nil {
		return nil, err
	}
	id := g.src.ID()
	g.td, g.self, g.issuer = id.TrustDomain(), id.String(), strings.TrimRight(g.src.AuthorityURL(), "/")
	if id.Path() != "/ward/gateway" {
		g.log.Warn("the gateway's identity is not spiffe://<td>/ward/gateway; the authority will refuse its passport keys and routes", "spiffe_id", g.self)
	}
	authority, err := spiffeid.FromSegments(g.td, "ward", "authority")
	if err != nil {
		return nil, err
	}
	g.hc = &http.Client{
		Timeout:       30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: g.src.ClientTLSConfig(identity.AuthorizeID(authority)), MaxIdleConnsPerHost: 16, ForceAttemptHTTP2: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for _, is := range cfg.ExternalIssuers {
		g.external[strings.TrimRight(is.URL, "/")] = true
	}
	g.verifier = cfg.Verifier
	if g.verifier == nil {
		ext := cfg.ExternalHTTPClient
		if ext == nil {
			ext = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		}
		v, err := credential.New(credential.Config{Issuer: g.issuer, HTTPClient: g.hc, ExternalHTTPClient: ext, Events: g.src,
			ExternalIssuers: cfg.ExternalIssuers, Logger: g.log, Now: g.now})
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		g.verifier = v
	}
	g.cache = newCredCache(cfg.CacheMaxTTL, cfg.NegativeTTL, cfg.CacheSize, max(1000, cfg.CacheSize/10), g.now)
	g.cache.hits = g.m.cacheHit.Inc
	g.cache.misses = g.m.cacheMiss.Inc
	g.cache.coalesced = g.m.cacheCoalesced.Inc
	g.cache.evictions = g.m.cacheRevoked.Inc
	g.preAuth = newLimiterSet(cfg.PreAuthRate, cfg.PreAuthBurst, cfg.MaxLimiterKeys, g.now)
	g.perUser = newLimiterSet(cfg.RouteRate, cfg.RouteBurst, cfg.MaxLimiterKeys, g.now)
	g.keys = &keyManager{hc: g.hc, authorityURL: g.issuer, lifetime: cfg.KeyLifetime, rotateEvery: cfg.KeyRotateEvery,
		propagation: cfg.KeyPropagation, log: g.log, now: g.now}
	g.telemetry = http.NewServeMux()
	telemetry.Mount(g.telemetry, g.reg, g.ready)
	g.unsub = g.src.Subscribe(g.onEvent)
	return g, nil
}

// onEvent follows the watch stream: route changes and credential
// revocations. It must not block.
func (g *Gateway) onEvent(kind string, payload []byte) {
	switch kind {
	case "routes", "snapshot":
		select {
		case g.refresh <- struct{}{}:
		default:
		}
	case "bundle":
		g.src.FollowSigner(kind, payload)
	case "credential-revocation":
		var p struct {
			Kind string `json:"kind"`
			ID   string `json:"id"`
		}
		if jsonUnmarshalBounded(payload, &p) == nil {
			g.cache.revoke(p.Kind, p.ID)
		}
	}
}

// followSVID closes idle connections when the gateway's SVID changed, so
// that upstreams see the new certificate (an old one may be revoked as
// superseded after a CA rotation).
func (g *Gateway) followSVID(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := g.src.SVID().Certificates[0].SerialNumber.String()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if cur := g.src.SVID().Certificates[0].SerialNumber.String(); cur != last {
			last = cur
			g.transMu.Lock()
			for _, t := range g.transports {
				t.CloseIdleConnections()
			}
			g.transMu.Unlock()
			g.hc.CloseIdleConnections()
		}
	}
}

// Start loads the route table and registers the first passport key,
// retrying until both succeed or ctx ends, then keeps both current in
// the background until ctx ends.
func (g *Gateway) Start(ctx context.Context) error {
	backoff := 200 * time.Millisecond
	for {
		err := g.loadRoutes(ctx)
		if err == nil {
			err = g.keys.rotate(ctx)
		}
		if err == nil {
			break
		}
		g.log.Warn("gateway not ready yet; retrying", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	go g.keys.run(ctx)
	go g.followRoutes(ctx)
	go g.followSVID(ctx)
	return nil
}

// followRoutes reloads the route table when the watch stream says it
// changed, and every 30 s as a safety net.
func (g *Gateway) followRoutes(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.refresh:
		case <-t.C:
		}
		if err := g.loadRoutes(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("route table reload failed; serving the previous one", "error", err)
			time.AfterFunc(2*time.Second, func() {
				select {
				case g.refresh <- struct{}{}:
				default:
				}
			})
		}
	}
}

func (g *Gateway) loadRoutes(ctx context.Context) error {
	t, err := fetchRoutes(ctx, g.hc, g.issuer)
	if err != nil {
		return err
	}
	if cur := g.routes.Load(); cur != nil && cur.version >= t.Version && t.Version != 0 {
		return nil
	}
	routes := make([]*route, 0, len(t.Routes))
	for _, r := range t.Routes {
		rt, err := compile(g.td, r, g.cfg.RouteRate, g.cfg.RouteBurst)
		if err != nil {
			g.log.Error("route skipped", "route", r.Name, "error", err)
			continue
		}
		rt.proxy = g.newProxy(rt)
		routes = append(routes, rt)
	}
	g.routes.Store(newTable(t.Version, routes))
	g.pruneTransports(routes)
	g.m.routes.Set(float64(len(routes)))
	g.log.Info("route table loaded", "version", t.Version, "routes", len(routes))
	return nil
}

// ready backs /readyz: routes loaded and a passport key registered.
func (g *Gateway) ready(context.Context) error {
	if g.routes.Load() == nil {
		return errors.New("gateway: no route table yet")
	}
	if _, err := g.keys.current(g.cfg.PassportTTL); err != nil {
		return err
	}
	return nil
}

// Close stops following the watch stream and closes idle upstream
// connections.
func (g *Gateway) Close() {
	if g.unsub != nil {
		g.unsub()
	}
	if c, ok := g.verifier.(interface{ Close() }); ok {
		c.Close()
	}
	g.transMu.Lock()
	defer g.transMu.Unlock()
	for _, t := range g.transports {
		t.CloseIdleConnections()
	}
}

// TLSConfig is the external listener's TLS configuration.
func (g *Gateway) TLSConfig() (*tls.Config, error) {
	if g.cfg.Certificate == nil {
		return nil, errors.New("gateway: Config.Certificate is required to serve")
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: g.cfg.Certificate, NextProtos: []string{"h2", "http/1.1"}}
	if g.cfg.PartnerCAs != nil {
		c.ClientAuth = tls.VerifyClientCertIfGiven
		c.ClientCAs = g.cfg.PartnerCAs
	}
	return c, nil
}

// Server returns the external HTTP server: slow clients are cut off by
// the header and read timeouts, headers are bounded.
func (g *Gateway) Server() (*http.Server, error) {
	tc, err := g.TLSConfig()
	if err != nil {
		return nil, err
	}
	return &http.Server{
		Handler:           g,
		TLSConfig:         tc,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      6 * time.Minute,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}, nil
}

// Serve serves HTTPS on ln until ctx ends, then shuts down gracefully.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	srv, err := g.Server()
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	<-errc
	return nil
}

// clientAddr is the client address rate limits are kept for: the IP, an
// IPv6 address cut to its /64 (one host usually holds the whole /64).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	if ip.Is6() && !ip.Is4In6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.Unmap().String()
}

func isLoopback(r *http.Request) bool {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
