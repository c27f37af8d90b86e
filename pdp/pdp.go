package pdp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cedar-policy/cedar-go/types"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
)

// Errors of the runtime.
var (
	// ErrNotReady: the PDP holds no bundle yet and does not know whether
	// its domain has one. The PEP refuses (503) until it does.
	ErrNotReady = errors.New("pdp: no policy loaded yet")
	// ErrNotModified: the authority's bundle has the ETag the PDP sent.
	ErrNotModified = errors.New("pdp: bundle not modified")
	// ErrNoPolicy: the domain has never had a version.
	ErrNoPolicy = errors.New("pdp: the domain has no policy version")
)

// EventKind is the watch-stream kind announcing a new bundle:
// {"domain": "...", "revision": N, "bundle": "<compact JWS>"}; the bundle
// is present when small, and verified like a fetched one.
const EventKind = "policy"

// Fetcher talks to the authority. *Client implements it.
type Fetcher interface {
	// FetchBundle returns the domain's compact JWS and its ETag;
	// ErrNotModified when it still has etag, ErrNoPolicy when the domain
	// has no version.
	FetchBundle(ctx context.Context, etag string) (jws []byte, newETag string, err error)
	// FetchKeys returns the authority's JWKS (GET /v1/keys).
	FetchKeys(ctx context.Context) ([]byte, error)
	// ReportStatus tells the authority what this instance applied.
	ReportStatus(ctx context.Context, s Status) error
}

// Events delivers watch-stream events (identity.Source).
type Events interface {
	Subscribe(fn func(kind string, payload []byte)) (unsubscribe func())
}

// Status is what an instance reports after applying a bundle and
// periodically after (POST /v1/policy/status).
type Status struct {
	Domain        string `json:"domain"`
	Instance      string `json:"instance"`
	Version       int64  `json:"version"` // 0: the domain has no version
	Revision      int64  `json:"revision"`
	ShadowVersion int64  `json:"shadow_version,omitempty"`
}

// Config configures New.
type Config struct {
	// Domain is the policy domain: the service's name, or EdgeDomain for
	// the gateway. Required (NewForSource derives it from the SVID).
	Domain string
	// Fetcher reaches the authority. Required.
	Fetcher Fetcher
	// Bundle verifies the certificates of the authority's signing keys;
	// TrustDomain is the trust domain they belong to. Required.
	Bundle      x509bundle.Source
	TrustDomain spiffeid.TrustDomain
	// Events, if set, announces new bundles (identity.Source).
	Events Events
	// CacheDir, if set, keeps the last applied bundle and keys so that a
	// restart during an authority outage enforces the last good policy.
	// Created 0700; files 0600.
	CacheDir string
	// Instance names this process in `ward policy status`; "" means
	// <hostname>-<random>.
	Instance string
	// Providers supply the service's own entities (the PIP).
	Providers []EntityProvider
	// ProviderTimeout bounds all providers of one request; 0 means 100ms.
	ProviderTimeout time.Duration
	// ResyncInterval is the period of a safety-net fetch; 0 means 5m.
	ResyncInterval time.Duration
	// ReportInterval is the period of status reports; 0 means 30s.
	ReportInterval time.Duration
	// Logger receives the PDP's logs; nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// PDP is an embedded policy decision point: it holds its domain's
// verified bundle, swaps in newer ones atomically as the authority
// announces them, and decides requests in-process. Safe for concurrent
// use.
type PDP struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	state atomic.Pointer[state]
	keys  atomic.Pointer[guard.KeySet]
	raw   atomic.Pointer[[]byte] // the JWKS behind keys
	wake  chan struct{}
	rep   chan struct{}
	inbox chan []byte // bundles carried by announcements (latest wins)
	unsub func()

	fetchMu sync.Mutex

	principals principalCache

	decisions, denials, disagreements atomic.Uint64
}

// state is what the PDP enforces.
type state struct {
	none     bool // the domain has no version
	revision int64
	active   *Set
	shadow   *Set
	etag     string
}

// New validates cfg and returns a PDP; Run loads and follows the bundle.
func New(cfg Config) (*PDP, error) {
	switch {
	case !ValidDomain(cfg.Domain):
		return nil, fmt.Errorf("pdp: Config.Domain %q is not a service name or %q", cfg.Domain, EdgeDomain)
	case cfg.Fetcher == nil:
		return nil, errors.New("pdp: Config.Fetcher is required")
	case cfg.Bundle == nil || cfg.TrustDomain.IsZero():
		return nil, errors.New("pdp: Config.Bundle and Config.TrustDomain are required")
	}
	if cfg.ProviderTimeout <= 0 {
		cfg.ProviderTimeout = 100 * time.Millisecond
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = 5 * time.Minute
	}
	if cfg.ReportInterval <= 0 {
		cfg.ReportInterval = 30 * time.Second
	}
	if cfg.Instance == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		cfg.Instance = host + "-" + hex.EncodeToString(b[:])
	}
	p := &PDP{cfg: cfg, log: cfg.Logger, now: cfg.Now, wake: make(chan struct{}, 1), rep: make(chan struct{}, 1), inbox: make(chan []byte, 1)}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	if cfg.Events != nil {
		p.unsub = cfg.Events.Subscribe(p.onEvent)
	}
	return p, nil
}

// Domain is the PDP's policy domain.
func (p *PDP) Domain() string { return p.cfg.Domain }

// Instance is the name this PDP reports its status under.
func (p *PDP) Instance() string { return p.cfg.Instance }

// Version is the active policy version (0: none or not loaded).
func (p *PDP) Version() int64 {
	if st := p.state.Load(); st != nil && st.active != nil {
		return st.active.Version
	}
	return 0
}

// Ready reports whether the PDP knows what to enforce.
func (p *PDP) Ready() bool { return p.state.Load() != nil }

// Stats are the PDP's counters.
type Stats struct {
	Decisions, Denials, ShadowDisagreements uint64
}

// Stats returns the PDP's counters.
func (p *PDP) Stats() Stats {
	return Stats{Decisions: p.decisions.Load(), Denials: p.denials.Load(), ShadowDisagreements: p.disagreements.Load()}
}

// Decide decides a request in ward's entity model (see Request). Without
// a version in the domain it allows (access lists alone decide); with one,
// Cedar's default deny applies.
func (p *PDP) Decide(ctx context.Context, in *Input) (Decision, error) {
	st := p.state.Load()
	if st == nil {
		return Decision{Reason: "not-ready"}, ErrNotReady
	}
	if st.none {
		return Decision{Allowed: true, Reason: ReasonNoPolicy}, nil
	}
	var u *principal
	if in.Passport != nil {
		u = p.principals.get(in.Passport)
	}
	req, entities := request(in, u)
	if len(p.cfg.Providers) > 0 {
		if err := p.provide(ctx, in, entities); err != nil {
			p.decisions.Add(1)
			p.denials.Add(1)
			return Decision{Enforced: true, Version: st.active.Version, Reason: ReasonEntities}, err
		}
	}
	d := st.active.Decide(entities, req)
	p.decisions.Add(1)
	if !d.Allowed {
		p.denials.Add(1)
	}
	if st.shadow != nil {
		sd := st.shadow.Decide(entities, req)
		if sd.Allowed != d.Allowed {
			p.disagreements.Add(1)
			p.log.LogAttrs(ctx, slog.LevelInfo, "pdp: shadow version disagrees",
				slog.String("domain", p.cfg.Domain), slog.Int64("active_version", d.Version), slog.Bool("active_allowed", d.Allowed),
				slog.Int64("shadow_version", sd.Version), slog.Bool("shadow_allowed", sd.Allowed),
				slog.String("principal_type", string(req.Principal.Type)), slog.String("action", in.Action),
				slog.String("resource", in.Resource), slog.String("correlation_id", in.CorrelationID),
				slog.Any("shadow_policies", sd.Policies))
		}
	}
	return d, nil
}

// provide runs the entity providers within the timeout and adds their
// entities to entities.
func (p *PDP) provide(ctx context.Context, in *Input, entities *modelEntities) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ProviderTimeout)
	defer cancel()
	for i, pr := range p.cfg.Providers {
		es, err := pr.Entities(ctx, in)
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("%w: provider %d: %v", ErrEntities, i, err)
		}
		if len(es)+len(entities.extra)+2 > MaxEntities {
			return fmt.Errorf("%w: more than %d entities", ErrEntities, MaxEntities)
		}
		if entities.extra == nil {
			entities.extra = make(types.EntityMap, len(es))
		}
		for _, e := range es {
			entities.extra[e.UID] = e
		}
	}
	return CheckEntities(entities.all())
}

// onEvent runs on the watch goroutine: wake the loop for a newer bundle
// of this domain, or after a (re)connect snapshot.
func (p *PDP) onEvent(kind string, payload []byte) {
	switch kind {
	case "snapshot":
	case EventKind:
		var ev struct {
			Domain   string `json:"domain"`
			Revision int64  `json:"revision"`
			Bundle   string `json:"bundle"`
		}
		if json.Unmarshal(payload, &ev) != nil || ev.Domain != p.cfg.Domain {
			return
		}
		if st := p.state.Load(); st != nil && !st.none && ev.Revision <= st.revision {
			return
		}
		if ev.Bundle != "" && len(ev.Bundle) <= MaxBundleSize {
			for { // replace an older pending bundle
				select {
				case p.inbox <- []byte(ev.Bundle):
					return
				default:
				}
				select {
				case <-p.inbox:
				default:
				}
			}
		}
	default:
		return
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Refresh fetches the bundle now.
func (p *PDP) Refresh(ctx context.Context) error { return p.fetch(ctx) }

// Run loads the cached bundle, fetches the current one, and follows
// announcements until ctx is done. Fetch failures are retried with
// backoff; the PDP keeps enforcing what it holds.
func (p *PDP) Run(ctx context.Context) error {
	if p.unsub != nil {
		defer p.unsub()
	}
	if p.state.Load() == nil && p.cfg.CacheDir != "" {
		if err := p.loadCache(); err != nil {
			p.log.Warn("pdp: cached bundle not used", "domain", p.cfg.Domain, "error", err)
		}
	}
	resync := time.NewTicker(p.cfg.ResyncInterval)
	defer resync.Stop()
	report := time.NewTicker(p.cfg.ReportInterval)
	defer report.Stop()
	go p.reporter(ctx, report.C)
	backoff := time.Duration(0)
	var pushed []byte
	for {
		var err error
		if pushed != nil {
			// An announced bundle: applied without a fetch; if it does
			// not verify or apply, fetch instead.
			if err = p.Apply(ctx, pushed); err != nil && !errors.Is(err, ErrStale) {
				p.log.Warn("pdp: announced bundle refused; fetching", "domain", p.cfg.Domain, "error", err)
				err = p.fetch(ctx)
			} else {
				err = nil
			}
			pushed = nil
		} else {
			err = p.fetch(ctx)
		}
		switch {
		case err == nil:
			backoff = 0
		case ctx.Err() != nil:
			return nil
		default:
			backoff = min(max(2*backoff, 500*time.Millisecond), 30*time.Second)
			p.log.Warn("pdp: bundle fetch failed; enforcing the policy held", "domain", p.cfg.Domain, "version", p.Version(), "retry_in", backoff, "error", err)
		}
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case pushed = <-p.inbox:
		case <-p.wake:
		case <-resync.C:
		case <-retry:
		}
	}
}

// maxReportJitter spreads the status reports of a fleet that applied a
// bundle at the same moment.
const maxReportJitter = 500 * time.Millisecond

// reporter sends status reports when asked and on every tick.
func (p *PDP) reporter(ctx context.Context, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.rep:
			// Spread a fleet's reports after a rollout.
			select {
			case <-ctx.Done():
				return
			case <-time.After(mrand.N(maxReportJitter)):
			}
		case <-tick:
		}
		st := p.state.Load()
		if st == nil {
			continue
		}
		s := Status{Domain: p.cfg.Domain, Instance: p.cfg.Instance, Revision: st.revision}
		if st.active != nil {
			s.Version = st.active.Version
		}
		if st.shadow != nil {
			s.ShadowVersion = st.shadow.Version
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := p.cfg.Fetcher.ReportStatus(rctx, s); err != nil && ctx.Err() == nil {
			p.log.Debug("pdp: status report failed", "domain", p.cfg.Domain, "error", err)
		}
		cancel()
	}
}

// fetch gets the bundle and applies it when it is newer.
func (p *PDP) fetch(ctx context.Context) error {
	p.fetchMu.Lock()
	defer p.fetchMu.Unlock()
	cur := p.state.Load()
	etag := ""
	if cur != nil {
		etag = cur.etag
	}
	jws, newTag, err := p.cfg.Fetcher.FetchBundle(ctx, etag)
	switch {
	case errors.Is(err, ErrNotModified):
		return nil
	case errors.Is(err, ErrNoPolicy):
		if cur == nil || cur.none {
			if cur == nil && p.cfg.CacheDir != "" {
				if err := p.saveNone(); err != nil {
					p.log.Warn("pdp: caching the no-policy state failed", "domain", p.cfg.Domain, "error", err)
				}
			}
			p.swap(&state{none: true})
			return nil
		}
		// A domain never loses its versions; refusing to fall back to
		// access lists alone is failing closed.
		return fmt.Errorf("pdp: the authority says domain %s has no policy, but version %d was applied; keeping it", p.cfg.Domain, cur.active.Version)
	case err != nil:
		return err
	}
	b, err := p.verify(ctx, jws)
	if err != nil {
		return err
	}
	return p.apply(b, jws, newTag, true)
}

// verify checks a bundle, refreshing the keys once when its key is not
// (yet) trusted.
func (p *PDP) verify(ctx context.Context, jws []byte) (*Bundle, error) {
	keys := p.keys.Load()
	if keys == nil {
		if err := p.fetchKeys(ctx); err != nil {
			return nil, err
		}
		keys = p.keys.Load()
	}
	b, err := ParseBundle(jws, keys, p.cfg.Domain)
	if errors.Is(err, ErrForged) {
		if kerr := p.fetchKeys(ctx); kerr != nil {
			return nil, err
		}
		b, err = ParseBundle(jws, p.keys.Load(), p.cfg.Domain)
	}
	return b, err
}

func (p *PDP) fetchKeys(ctx context.Context) error {
	raw, err := p.cfg.Fetcher.FetchKeys(ctx)
	if err != nil {
		return fmt.Errorf("pdp: fetch keys: %w", err)
	}
	ks, err := guard.ParseKeySet(raw, p.cfg.Bundle, p.cfg.TrustDomain, p.now())
	if err != nil {
		return fmt.Errorf("pdp: %w", err)
	}
	p.keys.Store(ks)
	p.raw.Store(&raw)
	return nil
}

// Apply verifies and applies a bundle handed over by other means (tests,
// a file); the same checks as a fetched one.
func (p *PDP) Apply(ctx context.Context, jws []byte) error {
	p.fetchMu.Lock()
	defer p.fetchMu.Unlock()
	b, err := p.verify(ctx, jws)
	if err != nil {
		return err
	}
	return p.apply(b, jws, "", true)
}

// apply compiles b and swaps it in unless it is older than what is held.
func (p *PDP) apply(b *Bundle, jws []byte, etag string, persist bool) error {
	cur := p.state.Load()
	if cur != nil && !cur.none {
		if b.Revision < cur.revision {
			return fmt.Errorf("%w: revision %d, holding %d", ErrStale, b.Revision, cur.revision)
		}
		if b.Revision == cur.revision {
			if etag != "" && etag != cur.etag {
				next := *cur
				next.etag = etag
				p.state.Store(&next)
			}
			return nil
		}
	}
	next := &state{revision: b.Revision, etag: etag}
	var err error
	if next.active, err = NewSet(b.Active); err != nil {
		return fmt.Errorf("pdp: bundle revision %d refused: %w", b.Revision, err)
	}
	if b.Shadow != nil {
		if next.shadow, err = NewSet(*b.Shadow); err != nil {
			return fmt.Errorf("pdp: bundle revision %d refused: shadow %w", b.Revision, err)
		}
	}
	p.swap(next)
	p.log.Info("pdp: policy applied", "domain", p.cfg.Domain, "version", next.active.Version, "revision", b.Revision, "digest", b.Active.Digest[:16], "shadow", next.shadow != nil)
	if persist && p.cfg.CacheDir != "" {
		if err := p.saveCache(jws); err != nil {
			p.log.Warn("pdp: caching the bundle failed", "domain", p.cfg.Domain, "error", err)
		}
	}
	return nil
}

// swap installs st and asks for a status report.
func (p *PDP) swap(st *state) {
	p.state.Store(st)
	select {
	case p.rep <- struct{}{}:
	default:
	}
}

// Cache files.
const (
	cacheBundle = "policy.jws"
	cacheKeys   = "keys.json"
	// cacheNone records that the authority said the domain has no
	// version. A cached bundle always wins over it.
	cacheNone = "no-policy"
)

// saveNone records the no-policy state unless a bundle is cached.
func (p *PDP) saveNone() error {
	if _, err := os.Stat(filepath.Join(p.cfg.CacheDir, cacheBundle)); err == nil {
		return nil
	}
	if err := os.MkdirAll(p.cfg.CacheDir, 0o700); err != nil {
		return err
	}
	return writeFile(filepath.Join(p.cfg.CacheDir, cacheNone), []byte(p.cfg.Domain+"\n"))
}

func (p *PDP) saveCache(jws []byte) error {
	if err := os.MkdirAll(p.cfg.CacheDir, 0o700); err != nil {
		return err
	}
	if raw := p.raw.Load(); raw != nil {
		if err := writeFile(filepath.Join(p.cfg.CacheDir, cacheKeys), *raw); err != nil {
			return err
		}
	}
	if err := writeFile(filepath.Join(p.cfg.CacheDir, cacheBundle), jws); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(p.cfg.CacheDir, cacheNone)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (p *PDP) loadCache() error {
	jws, err := readFile(filepath.Join(p.cfg.CacheDir, cacheBundle), MaxBundleSize)
	if errors.Is(err, os.ErrNotExist) {
		if none, err := readFile(filepath.Join(p.cfg.CacheDir, cacheNone), 256); err == nil && string(none) == p.cfg.Domain+"\n" {
			p.state.Store(&state{none: true})
		}
		return nil
	}
	if err != nil {
		return err
	}
	raw, err := readFile(filepath.Join(p.cfg.CacheDir, cacheKeys), guard.MaxKeySetSize)
	if err != nil {
		return err
	}
	ks, err := guard.ParseKeySet(raw, p.cfg.Bundle, p.cfg.TrustDomain, p.now())
	if err != nil {
		return err
	}
	b, err := ParseBundle(jws, ks, p.cfg.Domain)
	if err != nil {
		return err
	}
	p.keys.Store(ks)
	p.raw.Store(&raw)
	return p.apply(b, jws, "", false)
}

// writeFile replaces name atomically (temp file, fsync, rename).
func writeFile(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

// readFile reads at most limit bytes of name.
func readFile(name string, limit int) ([]byte, error) {
	st, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if st.Size() > int64(limit) {
		return nil, fmt.Errorf("pdp: %s is larger than %d bytes", name, limit)
	}
	return os.ReadFile(name)
}

// domainOf derives the policy domain of a SPIFFE ID: <name> of
// /svc/<name>, EdgeDomain for /ward/gateway.
func domainOf(id spiffeid.ID) (string, error) {
	if id.Path() == "/ward/gateway" {
		return EdgeDomain, nil
	}
	if name, ok := strings.CutPrefix(id.Path(), "/svc/"); ok && ValidDomain(name) {
		return name, nil
	}
	return "", fmt.Errorf("pdp: %s has no policy domain (want spiffe://<td>/svc/<name> or the gateway)", id)
}

// NewFixed returns a PDP that enforces set for domain and never changes:
// for tests, benchmarks, and services that compile their policy into the
// binary. It verifies nothing (set is trusted as given) and Run is not
// needed.
func NewFixed(domain string, set *Set) *PDP {
	p := &PDP{cfg: Config{Domain: domain, Instance: "fixed"}, log: slog.New(slog.DiscardHandler), now: time.Now,
		wake: make(chan struct{}, 1), rep: make(chan struct{}, 1), inbox: make(chan []byte, 1)}
	p.state.Store(&state{revision: set.Version, active: set})
	return p
}
