package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Fetcher gets the provider's current access list and the authority's
// keys. *Client implements it over mTLS.
type Fetcher interface {
	// FetchAccessList returns the provider's compact JWS.
	FetchAccessList(ctx context.Context) ([]byte, error)
	// FetchKeys returns the authority's JWKS.
	FetchKeys(ctx context.Context) ([]byte, error)
}

// Declarer sends the service's manifest to the dependency catalogue.
// *Client implements it.
type Declarer interface {
	Declare(ctx context.Context, manifest []byte) error
}

// Events delivers verified watch-stream payloads; *identity.Source
// implements it. fn must not block.
type Events interface {
	Subscribe(fn func(kind string, payload []byte)) (unsubscribe func())
}

// Config configures New. Provider, Fetcher and Bundle are required.
type Config struct {
	// Provider is the local service's SPIFFE ID: the list is its own.
	Provider spiffeid.ID
	// Fetcher gets lists and keys.
	Fetcher Fetcher
	// Bundle verifies the certificates of the authority's signing keys.
	Bundle x509bundle.Source
	// Events, if set, pushes list changes (identity.Source).
	Events Events
	// CacheDir, if set, keeps the last verified list (accesslist.jws) and
	// keys (keys.json), so that a restart works while the authority is
	// down. Created with mode 0700; files are 0600.
	CacheDir string
	// Manifest, if set, is declared when Run starts (Fetcher must also be
	// a Declarer), retried with backoff until accepted; a refusal (4xx)
	// is logged and not retried, except unknown-dependency (a consumed
	// service has not declared yet), which is retried: services may start
	// in any order.
	Manifest []byte
	// MissRefreshInterval is the least time between two fetches caused by
	// unknown callers; 0 means 1s.
	MissRefreshInterval time.Duration
	// MissTTL is how long a (caller, resource, action) that was still
	// refused after a refresh is refused without another; 0 means 5s. A
	// new list version forgets every miss.
	MissTTL time.Duration
	// MaxMisses bounds the remembered misses; 0 means 4096.
	MaxMisses int
	// RefreshTimeout is how long Check waits for a refresh; 0 means 2s.
	RefreshTimeout time.Duration
	// ResyncInterval is the period of a safety-net fetch; 0 means 10m,
	// negative disables it.
	ResyncInterval time.Duration
	// Logger receives the guard's logs; nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Guard answers whether a caller may perform an action on a resource,
// from the provider's verified access list. It is safe for concurrent use.
type Guard struct {
	cfg  Config
	td   spiffeid.TrustDomain
	log  *slog.Logger
	now  func() time.Time
	ix   atomic.Pointer[index]
	keys atomic.Pointer[keyState]
	wake chan struct{}

	mu            sync.Mutex
	inflight      *fetchCall
	lastMissFetch time.Time
	misses        map[entryKey]miss

	// keysKID and keysAt are the key ID that last caused a key set fetch
	// and when; only the fetch in flight touches them (fetches are
	// serialized through inflight under mu).
	keysKID string
	keysAt  time.Time
}

type keyState struct {
	set *KeySet
	raw []byte
}

type miss struct {
	at      time.Time
	version int64
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// fetchTimeout bounds one fetch of list and keys.
const fetchTimeout = 15 * time.Second

// New validates cfg and loads the cached list, if any (no network). Call
// Run to fetch and follow the current one.
func New(ctx context.Context, cfg Config) (*Guard, error) {
	if cfg.Provider.IsZero() {
		return nil, errors.New("guard: Config.Provider is required")
	}
	if cfg.Fetcher == nil {
		return nil, errors.New("guard: Config.Fetcher is required")
	}
	if cfg.Bundle == nil {
		return nil, errors.New("guard: Config.Bundle is required")
	}
	if cfg.MissRefreshInterval < 0 || cfg.MissTTL < 0 || cfg.MaxMisses < 0 || cfg.RefreshTimeout < 0 {
		return nil, errors.New("guard: Config durations and MaxMisses must not be negative")
	}
	if cfg.MissRefreshInterval == 0 {
		cfg.MissRefreshInterval = time.Second
	}
	if cfg.MissTTL == 0 {
		cfg.MissTTL = 5 * time.Second
	}
	if cfg.MaxMisses == 0 {
		cfg.MaxMisses = 4096
	}
	if cfg.RefreshTimeout == 0 {
		cfg.RefreshTimeout = 2 * time.Second
	}
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = 10 * time.Minute
	}
	g := &Guard{
		cfg:    cfg,
		td:     cfg.Provider.TrustDomain(),
		log:    cfg.Logger,
		now:    cfg.Now,
		wake:   make(chan struct{}, 1),
		misses: map[entryKey]miss{},
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if cfg.CacheDir != "" {
		if err := g.loadCache(); err != nil {
			g.log.Warn("guard: cached access list not used", "dir", cfg.CacheDir, "error", err.Error())
		}
	}
	return g, nil
}

// Allowed reports whether caller may perform action on resource according
// to the list held now. It never blocks and never refreshes.
func (g *Guard) Allowed(caller spiffeid.ID, resource, action string) bool {
	ix := g.ix.Load()
	if ix == nil {
		return false
	}
	_, ok := ix.allowed[entryKey{caller, resource, action}]
	return ok
}

// Check is Allowed with the lazy refresh: on a miss it fetches the current
// list (coalesced with any fetch in flight, at most one miss-caused fetch
// per MissRefreshInterval, not again for a miss remembered within MissTTL)
// and checks again. It returns nil, ErrUnknownCaller, ErrActionNotAllowed
// or ErrNoAccessList.
func (g *Guard) Check(ctx context.Context, caller spiffeid.ID, resource, action string) error {
	ix := g.ix.Load()
	err := ix.decide(caller, resource, action)
	if err == nil {
		return nil
	}
	key := entryKey{caller, resource, action}
	now := g.now()
	g.mu.Lock()
	if m, ok := g.misses[key]; ok && now.Sub(m.at) < g.cfg.MissTTL && m.version == ix.version() {
		g.mu.Unlock()
		return err
	}
	c := g.inflight
	if c == nil {
		if !g.lastMissFetch.IsZero() && now.Sub(g.lastMissFetch) < g.cfg.MissRefreshInterval {
			g.rememberLocked(key, now, ix.version())
			g.mu.Unlock()
			return err
		}
		g.lastMissFetch = now
		c = g.startFetchLocked(false)
	}
	g.mu.Unlock()

	t := time.NewTimer(g.cfg.RefreshTimeout)
	select {
	case <-c.done:
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	ix = g.ix.Load()
	if err = ix.decide(caller, resource, action); err != nil {
		g.mu.Lock()
		g.rememberLocked(key, g.now(), ix.version())
		g.mu.Unlock()
	}
	return err
}

// rememberLocked records a miss, keeping at most MaxMisses: expired ones
// go first, then all.
func (g *Guard) rememberLocked(key entryKey, at time.Time, version int64) {
	if len(g.misses) >= g.cfg.MaxMisses {
		for k, m := range g.misses {
			if at.Sub(m.at) >= g.cfg.MissTTL || m.version != version {
				delete(g.misses, k)
			}
		}
		if len(g.misses) >= g.cfg.MaxMisses {
			clear(g.misses)
		}
	}
	g.misses[key] = miss{at: at, version: version}
}

// Version is the version of the list held, 0 if none.
func (g *Guard) Version() int64 { return g.ix.Load().version() }

// List returns a copy of the list held, nil if none.
func (g *Guard) List() *AccessList {
	ix := g.ix.Load()
	if ix == nil {
		return nil
	}
	l := *ix.list
	l.Consumers = make([]Consumer, len(ix.list.Consumers))
	for i, c := range ix.list.Consumers {
		l.Consumers[i] = Consumer{ID: c.ID, Grants: make([]Grant, len(c.Grants))}
		for j, gr := range c.Grants {
			l.Consumers[i].Grants[j] = Grant{Resource: gr.Resource, Actions: append([]string(nil), gr.Actions...)}
		}
	}
	return &l
}

// Refresh fetches the current list now, or waits for the fetch in flight.
func (g *Guard) Refresh(ctx context.Context) error { return g.fetchNow(ctx, false) }

// startFetchLocked starts a fetch; callers hold g.mu and checked that
// none is in flight.
func (g *Guard) startFetchLocked(forceKeys bool) *fetchCall {
	c := &fetchCall{done: make(chan struct{})}
	g.inflight = c
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		c.err = g.fetch(ctx, forceKeys)
		cancel()
		g.mu.Lock()
		g.inflight = nil
		g.mu.Unlock()
		close(c.done)
	}()
	return c
}

// fetch gets, verifies and installs the current list. The keys are
// fetched too when forceKeys, or when the list's key is unknown — at most
// once per MissRefreshInterval for the same unknown key, so a list signed
// by a key the authority does not publish cannot double the load.
func (g *Guard) fetch(ctx context.Context, forceKeys bool) error {
	jws, err := g.cfg.Fetcher.FetchAccessList(ctx)
	if err != nil {
		return fmt.Errorf("guard: fetch access list: %w", err)
	}
	ks := g.keys.Load()
	if kid := peekKeyID(jws); forceKeys || ks == nil || !ks.set.has(kid) {
		now := g.now()
		if forceKeys || kid != g.keysKID || g.keysAt.IsZero() || now.Sub(g.keysAt) >= g.cfg.MissRefreshInterval {
			g.keysKID, g.keysAt = kid, now
			fetched, err := g.fetchKeys(ctx)
			if err != nil {
				return err
			}
			ks = fetched
		}
	}
	var set *KeySet
	if ks != nil {
		set = ks.set
	}
	list, err := Verify(jws, set, g.cfg.Provider)
	if err != nil {
		g.log.Error("guard: access list refused", "provider", g.cfg.Provider.String(), "error", err.Error())
		return err
	}
	return g.install(list, jws, ks, true)
}

func (g *Guard) fetchKeys(ctx context.Context) (*keyState, error) {
	raw, err := g.cfg.Fetcher.FetchKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("guard: fetch keys: %w", err)
	}
	set, err := ParseKeySet(raw, g.cfg.Bundle, g.td, g.now())
	if err != nil {
		return nil, err
	}
	ks := &keyState{set: set, raw: raw}
	g.keys.Store(ks)
	return ks, nil
}

// peekKeyID returns the kid of a compact JWS, "" if unreadable.
func peekKeyID(jws []byte) string {
	obj, err := jose.ParseSignedCompact(strings.TrimSpace(string(jws)), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil || len(obj.Signatures) != 1 {
		return ""
	}
	return obj.Signatures[0].Protected.KeyID
}

// install makes a verified list current unless it is older than the one
// held (ErrRollback) or the same version.
func (g *Guard) install(list *AccessList, jws []byte, ks *keyState, persist bool) error {
	g.mu.Lock()
	cur := g.ix.Load()
	switch {
	case cur != nil && list.Version < cur.version():
		g.mu.Unlock()
		g.log.Warn("guard: older access list refused", "provider", g.cfg.Provider.String(), "version", list.Version, "held", cur.version())
		return fmt.Errorf("%w: version %d, holding %d", ErrRollback, list.Version, cur.version())
	case cur != nil && list.Version == cur.version():
		g.mu.Unlock()
		return nil
	}
	g.ix.Store(newIndex(list, jws))
	clear(g.misses)
	g.mu.Unlock()
	g.log.Info("guard: access list updated", "provider", g.cfg.Provider.String(), "version", list.Version, "consumers", len(list.Consumers))
	if persist && g.cfg.CacheDir != "" {
		if err := g.saveCache(jws, ks.raw); err != nil {
			g.log.Warn("guard: caching the access list failed", "dir", g.cfg.CacheDir, "error", err.Error())
		}
	}
	return nil
}

// Run declares the manifest, fetches the current list (retrying with
// backoff), follows Events and re-fetches every ResyncInterval, until ctx
// is done; it returns nil then.
func (g *Guard) Run(ctx context.Context) error {
	if g.cfg.Manifest != nil {
		if d, ok := g.cfg.Fetcher.(Declarer); ok {
			go g.declare(ctx, d)
		} else {
			g.log.Warn("guard: Config.Manifest is set but the Fetcher cannot declare it")
		}
	}
	if g.cfg.Events != nil {
		unsubscribe := g.cfg.Events.Subscribe(g.onEvent)
		defer unsubscribe()
	}
	var resync <-chan time.Time
	if g.cfg.ResyncInterval > 0 {
		t := time.NewTicker(g.cfg.ResyncInterval)
		defer t.Stop()
		resync = t.C
	}
	backoff := time.Duration(0)
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return nil
		case <-retry.C:
		case <-g.wake:
		case <-resync:
			force = true
		}
		err := g.fetchNow(ctx, force)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil || errors.Is(err, ErrRollback):
			backoff = 0
		default:
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			d := backoff/2 + rand.N(backoff/2+1)
			g.log.Warn("guard: access list fetch failed; enforcing the list held", "version", g.Version(), "retry_in", d.String(), "error", err.Error())
			retry.Reset(d)
		}
	}
}

// fetchNow runs (or joins) a fetch and waits for it.
func (g *Guard) fetchNow(ctx context.Context, forceKeys bool) error {
	g.mu.Lock()
	c := g.inflight
	if c == nil {
		c = g.startFetchLocked(forceKeys)
	}
	g.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// onEvent is the Events callback: a newer list version wakes Run.
func (g *Guard) onEvent(kind string, payload []byte) {
	if len(payload) > 1<<20 {
		return
	}
	var version int64
	switch kind {
	case "accesslist":
		var p struct {
			Provider    string `json:"provider"`
			ListVersion int64  `json:"list_version"`
		}
		if json.Unmarshal(payload, &p) != nil || p.Provider != g.cfg.Provider.String() {
			return
		}
		version = p.ListVersion
	case "snapshot":
		var p struct {
			AccessListVersion int64 `json:"access_list_version"`
		}
		if json.Unmarshal(payload, &p) != nil {
			return
		}
		version = p.AccessListVersion
	default:
		return
	}
	if version > g.Version() {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
}

// declare sends the manifest until the authority accepts or refuses it; a
// refusal because a consumed service has not declared yet is retried.
func (g *Guard) declare(ctx context.Context, d Declarer) {
	backoff := time.Second
	for {
		err := d.Declare(ctx, g.cfg.Manifest)
		if err == nil {
			g.log.Info("guard: manifest declared", "service", g.cfg.Provider.String())
			return
		}
		var ae *AuthorityError
		if errors.As(err, &ae) && strings.HasSuffix(ae.Type, "/unknown-dependency") {
			// A service it consumes has not declared yet: services start
			// in any order, so this passes once the provider is up.
			g.log.Warn("guard: the manifest names a service that has not declared yet; retrying", "retry_in", backoff.String(), "detail", ae.Detail)
		} else if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != 429 {
			g.log.Error("guard: manifest refused by the authority", "status", ae.Status, "type", ae.Type, "detail", ae.Detail)
			return
		} else {
			g.log.Warn("guard: declaring the manifest failed; retrying", "retry_in", backoff.String(), "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}
