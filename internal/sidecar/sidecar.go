// Package sidecar puts a service that is not written against the SDK
// behind ward: it terminates mTLS with the service's SVID, runs the full
// PEP (access list, passport, policy, audit), and forwards to the plain
// HTTP service on loopback with the verified context in headers the
// service can trust only because the sidecar removed every inbound copy
// (Ward-Caller, Ward-User, Ward-Passport-Claims, Ward-Correlation-Id). An
// egress listener lets the service call other ward services over plain
// HTTP on loopback; the sidecar adds mTLS and forwards the passport of the
// request that the call belongs to (by its correlation ID).
package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/internal/wardheader"
	"github.com/wardsec/ward/passport"
	"github.com/wardsec/ward/pdp"
	"github.com/wardsec/ward/pep"
)

// Headers the sidecar sets for the service (after removing every inbound
// Ward-* header).
const (
	HeaderCaller         = "Ward-Caller"
	HeaderUser           = "Ward-User"
	HeaderPassportClaims = "Ward-Passport-Claims" // base64url of the verified claims' JSON
	HeaderCorrelationID  = "Ward-Correlation-Id"
)

// Config configures New.
type Config struct {
	// Source is the service's identity (spiffe://<td>/svc/<Service>).
	Source *identity.Source
	// Service is the service's registered name.
	Service string
	// Upstream is the plain HTTP service: http://127.0.0.1:PORT (or
	// [::1]); anything off loopback is refused.
	Upstream string
	// Routes map requests to resources and actions; nil means one route
	// for everything: resource <Service>, action "call".
	Routes []pep.Route
	// Manifest is declared on start; nil means "provides <Service>: [call]".
	Manifest []byte
	// Egress maps service names to their https URLs, for the egress
	// listener (GET http://<egress>/<service>/<path>).
	Egress map[string]string
	// CacheDir keeps the access list and policy for restarts.
	CacheDir string
	// Audit records decisions (an *audit.Writer).
	Audit pep.Recorder
	// UpstreamTimeout bounds the wait for the service's response headers
	// (default 30s).
	UpstreamTimeout time.Duration
	Logger          *slog.Logger
}

// Sidecar is the proxy. Create it with New, run its background tasks with
// Run, serve Ingress on the mTLS listener and Egress on loopback.
type Sidecar struct {
	cfg      Config
	log      *slog.Logger
	upstream *url.URL
	guard    *guard.Guard
	pv       *passport.Verifier
	pdp      *pdp.PDP
	pep      *pep.PEP
	proxy    *httputil.ReverseProxy
	egress   map[string]*url.URL
	clients  sync.Map // service → *http.Client (mTLS to that service)

	passports passportCache
}

// New builds the sidecar's PEP from the SDK.
func New(ctx context.Context, cfg Config) (*Sidecar, error) {
	if cfg.Source == nil || cfg.Service == "" {
		return nil, errors.New("sidecar: Source and Service are required")
	}
	if want, err := spiffeid.FromSegments(cfg.Source.ID().TrustDomain(), "svc", cfg.Service); err != nil || cfg.Source.ID() != want {
		return nil, fmt.Errorf("sidecar: the SVID is %s, not the service %q", cfg.Source.ID(), cfg.Service)
	}
	up, err := url.Parse(cfg.Upstream)
	if err != nil || up.Scheme != "http" || !loopback(up.Hostname()) || up.Port() == "" {
		return nil, fmt.Errorf("sidecar: upstream %q must be http://127.0.0.1:PORT (loopback)", cfg.Upstream)
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Routes == nil {
		cfg.Routes = []pep.Route{{Pattern: "/", Resource: cfg.Service, Action: "call"}}
	}
	if cfg.Manifest == nil {
		cfg.Manifest = []byte(fmt.Sprintf("service: %s\nversion: 1.0.0\nprovides:\n  - resource: %s\n    actions: [call]\n", cfg.Service, cfg.Service))
	}
	s := &Sidecar{cfg: cfg, log: cfg.Logger, upstream: up, egress: map[string]*url.URL{}}
	for name, raw := range cfg.Egress {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("sidecar: egress %s: %q must be an https URL", name, raw)
		}
		s.egress[name] = u
	}
	gcfg := guard.Config{Manifest: cfg.Manifest, Logger: cfg.Logger}
	pcfg := pdp.Config{Logger: cfg.Logger}
	if cfg.CacheDir != "" {
		gcfg.CacheDir = cfg.CacheDir + "/accesslist"
		pcfg.CacheDir = cfg.CacheDir + "/policy"
	}
	if s.guard, err = guard.NewForSource(ctx, cfg.Source, cfg.Source.AuthorityURL(), gcfg); err != nil {
		return nil, fmt.Errorf("sidecar: guard: %w", err)
	}
	if s.pv, err = passport.NewForSource(cfg.Source, passport.Config{Logger: cfg.Logger}); err != nil {
		return nil, fmt.Errorf("sidecar: passports: %w", err)
	}
	if s.pdp, err = pdp.NewForSource(cfg.Source, pcfg); err != nil {
		return nil, fmt.Errorf("sidecar: policy: %w", err)
	}
	pc := pep.Config{Guard: s.guard, Routes: cfg.Routes, Passports: s.pv, PDP: s.pdp, Logger: cfg.Logger}
	if cfg.Audit != nil {
		pc.Audit = cfg.Audit
	}
	if s.pep, err = pep.New(pc); err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite: s.rewrite,
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			ResponseHeaderTimeout: cfg.UpstreamTimeout,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
		},
		ModifyResponse: func(resp *http.Response) error {
			wardheader.Strip(resp.Header)
			return nil
		},
		ErrorHandler: s.upstreamError,
	}
	return s, nil
}

func loopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Run runs the guard and the PDP until ctx ends.
func (s *Sidecar) Run(ctx context.Context) error {
	defer s.pv.Close()
	errc := make(chan error, 2)
	go func() { errc <- s.guard.Run(ctx) }()
	go func() { errc <- s.pdp.Run(ctx) }()
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Ingress is the handler of the mTLS listener: peer identity, PEP, then
// the service with the sidecar's headers.
func (s *Sidecar) Ingress() http.Handler {
	return s.cfg.Source.Middleware(s.pep.Middleware(http.HandlerFunc(s.forward)))
}

// forward remembers the passport for egress calls and proxies.
func (s *Sidecar) forward(w http.ResponseWriter, r *http.Request) {
	if c, ok := passport.FromContext(r.Context()); ok && c.CorrelationID != "" {
		if raw, ok := passport.RawFromContext(r.Context()); ok {
			s.passports.put(c.CorrelationID, raw, time.Unix(c.Expiry, 0))
		}
	}
	s.proxy.ServeHTTP(w, r)
}

// rewrite builds the upstream request: every inbound Ward-* header
// removed (headers and trailers, any case or separator), then the
// sidecar's own.
func (s *Sidecar) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(s.upstream)
	pr.Out.Host = pr.In.Host
	wardheader.Strip(pr.Out.Header)
	if pr.Out.Trailer != nil {
		wardheader.Strip(pr.Out.Trailer)
	}
	pr.Out.Header.Del("X-Forwarded-For") // the client address is the mTLS peer's, not useful upstream
	ctx := pr.In.Context()
	if d, ok := pep.DecisionFromContext(ctx); ok && !d.Caller.IsZero() {
		pr.Out.Header.Set(HeaderCaller, d.Caller.String())
	}
	cid := ""
	if c, ok := passport.FromContext(ctx); ok {
		pr.Out.Header.Set(HeaderUser, c.Subject)
		if b, err := json.Marshal(c); err == nil {
			pr.Out.Header.Set(HeaderPassportClaims, base64.RawURLEncoding.EncodeToString(b))
		}
		cid = c.CorrelationID
	}
	if cid == "" {
		if tp := pr.In.Header.Get("Traceparent"); len(tp) == 55 && tp[2] == '-' {
			cid = tp[3:35]
		} else {
			var b [16]byte
			_, _ = rand.Read(b[:])
			cid = hex.EncodeToString(b[:])
		}
	}
	pr.Out.Header.Set(HeaderCorrelationID, cid)
}

// upstreamError answers a failed upstream call: 504 when it did not answer
// in time, 502 otherwise.
func (s *Sidecar) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("sidecar: the service did not answer in time", "service", s.cfg.Service, "error", err)
		problem.Write(w, problem.New(http.StatusGatewayTimeout, "upstream-timeout", "Upstream timeout", "the service did not answer in time"))
		return
	}
	if r.Context().Err() != nil {
		return // the caller went away
	}
	s.log.Warn("sidecar: the service failed", "service", s.cfg.Service, "error", err)
	problem.Write(w, problem.New(http.StatusBadGateway, "upstream-unavailable", "Upstream unavailable", "the service could not be reached or closed the connection"))
}

// Egress is the handler of the loopback egress listener: a request to
// /<service>/<path> goes to that service over mTLS (its SPIFFE ID is
// checked), with the passport of the inbound request whose correlation
// ID the service sent in Ward-Correlation-Id.
func (s *Sidecar) Egress() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if !loopback(host) {
			problem.Write(w, problem.New(http.StatusForbidden, "forbidden", "Forbidden", "the egress listener serves loopback clients only"))
			return
		}
		name, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		target, ok := s.egress[name]
		if !ok {
			problem.Write(w, problem.New(http.StatusNotFound, "unknown-service", "Unknown service", fmt.Sprintf("no egress route for %q", clip(name))))
			return
		}
		cid := r.Header.Get(HeaderCorrelationID)
		raw, _ := s.passports.get(cid)
		out := r.Clone(r.Context())
		out.RequestURI = ""
		u := *target
		u.Path, u.RawPath, u.RawQuery = strings.TrimSuffix(target.Path, "/")+"/"+rest, "", r.URL.RawQuery
		out.URL = &u
		out.Host = target.Host
		wardheader.Strip(out.Header)
		if raw != "" {
			out.Header.Set(passport.Header, raw)
		}
		if cid != "" && out.Header.Get("Traceparent") == "" && len(cid) == 32 {
			var span [8]byte
			_, _ = rand.Read(span[:])
			out.Header.Set("Traceparent", "00-"+cid+"-"+hex.EncodeToString(span[:])+"-01")
		}
		resp, err := s.client(name).Do(out)
		if err != nil {
			s.upstreamError(w, r, err)
			return
		}
		defer resp.Body.Close()
		wardheader.Strip(resp.Header)
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = copyBounded(w, resp)
	})
}

// client returns the mTLS client for a service, requiring its SPIFFE ID.
func (s *Sidecar) client(name string) *http.Client {
	if c, ok := s.clients.Load(name); ok {
		return c.(*http.Client)
	}
	id, _ := spiffeid.FromSegments(s.cfg.Source.ID().TrustDomain(), "svc", name)
	c := &http.Client{Timeout: s.cfg.UpstreamTimeout, Transport: &http.Transport{
		TLSClientConfig: s.cfg.Source.ClientTLSConfig(identity.AuthorizeID(id)), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	actual, _ := s.clients.LoadOrStore(name, c)
	return actual.(*http.Client)
}

// maxEgressBody bounds an egress response relayed to the service.
const maxEgressBody = 64 << 20

func copyBounded(w http.ResponseWriter, resp *http.Response) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for n < maxEgressBody {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		if err != nil {
			return n, nil
		}
	}
	return n, nil
}

// passportCache keeps the passports of recent inbound requests by
// correlation ID until they expire (at most maxPassports).
type passportCache struct {
	mu sync.Mutex
	m  map[string]cachedPassport
}

type cachedPassport struct {
	raw string
	exp time.Time
}

const maxPassports = 10000

func (c *passportCache) put(cid, raw string, exp time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedPassport{}
	}
	if len(c.m) >= maxPassports {
		now := time.Now()
		for k, v := range c.m {
			if now.After(v.exp) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= maxPassports {
			clear(c.m)
		}
	}
	c.m[cid] = cachedPassport{raw: raw, exp: exp}
}

func (c *passportCache) get(cid string) (string, bool) {
	if cid == "" {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[cid]
	if !ok || time.Now().After(p.exp) {
		return "", false
	}
	return p.raw, true
}

func clip(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
