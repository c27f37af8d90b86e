package pdp

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/passport"
)

const (
	allowRead = `@id("read") permit(principal, action == Action::"read", resource is orders);`
	denyBob   = `@id("no-bob") forbid(principal == User::"bob", action, resource);`
)

func newPDP(t *testing.T, a *testAuthority, mod func(*Config)) (*PDP, *memEvents) {
	t.Helper()
	ev := &memEvents{}
	cfg := Config{Domain: "orders", Fetcher: a, Bundle: a.bundle, TrustDomain: testTD, Events: ev, ReportInterval: time.Hour}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, ev
}

func run(t *testing.T, p *PDP) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func input(user string) *Input {
	in := &Input{Caller: spiffeid.RequireFromString("spiffe://example.org/svc/web"), Resource: "orders", ResourceID: "7", Action: "read"}
	if user != "" {
		in.Passport = &passport.Claims{Subject: user, Roles: []string{"clerk"}, Tenant: "acme", AuthMethod: "jwt"}
	}
	return in
}

func decide(t *testing.T, p *PDP, user string) Decision {
	t.Helper()
	d, err := p.Decide(context.Background(), input(user))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPDPLifecycle(t *testing.T) {
	a := newTestAuthority(t)
	p, ev := newPDP(t, a, nil)
	if _, err := p.Decide(context.Background(), input("alice")); !errors.Is(err, ErrNotReady) {
		t.Fatalf("before Run: %v, want ErrNotReady", err)
	}
	run(t, p)
	waitFor(t, "no-policy state", p.Ready)
	if d := decide(t, p, "alice"); !d.Allowed || d.Enforced || d.Reason != ReasonNoPolicy {
		t.Fatalf("without a version: %+v", d)
	}

	// Version 1 is announced and applied: Cedar's default deny now holds.
	a.publish(1, content(1, allowRead), nil)
	ev.send(EventKind, map[string]any{"domain": "orders", "revision": 1})
	waitFor(t, "version 1", func() bool { return p.Version() == 1 })
	if d := decide(t, p, "bob"); !d.Allowed || !d.Enforced || d.Version != 1 || d.Policies[0] != "read" {
		t.Fatalf("v1 bob: %+v", d)
	}
	in := input("bob")
	in.Action = "write"
	if d, _ := p.Decide(context.Background(), in); d.Allowed || d.Reason != ReasonNoPermit {
		t.Fatalf("v1 write: %+v", d)
	}
	waitFor(t, "status report", func() bool { s, ok := a.lastReport(); return ok && s.Version == 1 && s.Instance == p.Instance() })

	// Events of other domains and old revisions do not wake it.
	a.publish(2, content(2, allowRead+"\n"+denyBob), nil)
	ev.send(EventKind, map[string]any{"domain": "payments", "revision": 2})
	time.Sleep(50 * time.Millisecond)
	if p.Version() != 1 {
		t.Fatal("applied another domain's announcement")
	}
	ev.send(EventKind, map[string]any{"domain": "orders", "revision": 2})
	waitFor(t, "version 2", func() bool { return p.Version() == 2 })
	if d := decide(t, p, "bob"); d.Allowed || d.Reason != ReasonForbid || d.Policies[0] != "no-bob" {
		t.Fatalf("v2 bob: %+v", d)
	}

	// A lower revision (a replayed old bundle) is refused.
	if err := p.Apply(context.Background(), a.bundleJWS(1, content(1, allowRead), nil)); !errors.Is(err, ErrStale) {
		t.Fatalf("old revision: %v, want ErrStale", err)
	}
	// A forgery is refused and changes nothing.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	payload, _ := json.Marshal(Bundle{Issuer: "spiffe://example.org/ward/authority", Domain: "orders", Revision: 9, IssuedAt: 1, Active: content(9, `permit(principal, action, resource);`)})
	if err := p.Apply(context.Background(), signWith(t, other, a.kid, JWSType, payload)); !errors.Is(err, ErrForged) {
		t.Fatalf("forged: %v, want ErrForged", err)
	}
	if err := p.Apply(context.Background(), signWith(t, a.key, a.kid, "ward-accesslist+jws", payload)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("wrong typ: %v, want ErrMalformed", err)
	}
	if p.Version() != 2 {
		t.Fatalf("version %d after refused bundles", p.Version())
	}
}

func TestPDPRestartsFromCache(t *testing.T) {
	a := newTestAuthority(t)
	dir := filepath.Join(t.TempDir(), "policy")
	a.publish(4, content(4, allowRead+"\n"+denyBob), nil)
	p, _ := newPDP(t, a, func(c *Config) { c.CacheDir = dir })
	if err := p.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, cacheBundle)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v %v", fi, err)
	}

	// The authority is down; a new process enforces the cached version.
	a.setDown(true)
	q, _ := newPDP(t, a, func(c *Config) { c.CacheDir = dir })
	run(t, q)
	waitFor(t, "cached version", func() bool { return q.Version() == 4 })
	if d := decide(t, q, "bob"); d.Allowed {
		t.Fatalf("cached policy not enforced: %+v", d)
	}

	// A tampered cache is not used.
	jws, _ := os.ReadFile(filepath.Join(dir, cacheBundle))
	jws[len(jws)-5] ^= 1
	if err := os.WriteFile(filepath.Join(dir, cacheBundle), jws, 0o600); err != nil {
		t.Fatal(err)
	}
	r, _ := newPDP(t, a, func(c *Config) { c.CacheDir = dir })
	run(t, r)
	time.Sleep(50 * time.Millisecond)
	if r.Ready() {
		t.Fatal("a tampered cache made the PDP ready")
	}
}

func TestPDPRestartsWithoutPolicyFromCache(t *testing.T) {
	a := newTestAuthority(t)
	dir := filepath.Join(t.TempDir(), "policy")
	p, _ := newPDP(t, a, func(c *Config) { c.CacheDir = dir })
	if err := p.Refresh(context.Background()); err != nil || !p.Ready() {
		t.Fatalf("refresh: %v", err)
	}
	a.setDown(true)
	q, _ := newPDP(t, a, func(c *Config) { c.CacheDir = dir })
	run(t, q)
	waitFor(t, "cached no-policy state", q.Ready)
	if d := decide(t, q, "bob"); !d.Allowed || d.Reason != ReasonNoPolicy {
		t.Fatalf("decision %+v", d)
	}
	// Once a bundle is cached, the no-policy marker is gone.
	a.setDown(false)
	a.publish(1, content(1, denyBob), nil)
	if err := q.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, cacheNone)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no-policy marker kept: %v", err)
	}
}

func TestPDPKeepsPolicyWhenAuthorityForgetsIt(t *testing.T) {
	a := newTestAuthority(t)
	a.publish(1, content(1, allowRead), nil)
	p, _ := newPDP(t, a, nil)
	if err := p.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.noPolicy = true
	a.mu.Unlock()
	if err := p.Refresh(context.Background()); err == nil || p.Version() != 1 {
		t.Fatalf("no-policy after a version: %v, version %d", err, p.Version())
	}
}

func TestShadowDisagreements(t *testing.T) {
	a := newTestAuthority(t)
	shadow := content(2, allowRead+"\n"+denyBob)
	a.publish(2, content(1, allowRead), &shadow)
	p, _ := newPDP(t, a, nil)
	if err := p.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, p, "bob"); !d.Allowed || d.Version != 1 {
		t.Fatalf("shadow enforced: %+v", d)
	}
	decide(t, p, "alice")
	if s := p.Stats(); s.ShadowDisagreements != 1 || s.Decisions != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestEntityProviders(t *testing.T) {
	a := newTestAuthority(t)
	a.publish(1, content(1, `permit(principal, action, resource) when { resource in Store::"s1" };`), nil)
	order := types.NewEntityUID("orders", "7")
	for _, tc := range []struct {
		name    string
		fn      EntityProviderFunc
		allowed bool
		err     string
	}{
		{"provider supplies the parent", func(context.Context, *Input) ([]types.Entity, error) {
			return []types.Entity{{UID: order, Parents: types.NewEntityUIDSet(types.NewEntityUID("Store", "s1"))}}, nil
		}, true, ""},
		{"provider fails", func(context.Context, *Input) ([]types.Entity, error) { return nil, errors.New("db down") }, false, "db down"},
		{"provider too slow", func(ctx context.Context, _ *Input) ([]types.Entity, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, false, "deadline"},
		{"cycle", func(context.Context, *Input) ([]types.Entity, error) {
			s1 := types.NewEntityUID("Store", "s1")
			return []types.Entity{{UID: order, Parents: types.NewEntityUIDSet(s1)}, {UID: s1, Parents: types.NewEntityUIDSet(order)}}, nil
		}, false, "its own ancestor"},
		{"too many", func(context.Context, *Input) ([]types.Entity, error) {
			es := make([]types.Entity, MaxEntities)
			for i := range es {
				es[i].UID = types.NewEntityUID("X", types.String(strings.Repeat("x", i%50)+string(rune('a'+i%26))))
			}
			return es, nil
		}, false, "entities"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := newPDP(t, a, func(c *Config) { c.Providers = []EntityProvider{tc.fn}; c.ProviderTimeout = 20 * time.Millisecond })
			if err := p.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			d, err := p.Decide(context.Background(), input("alice"))
			if d.Allowed != tc.allowed {
				t.Fatalf("decision %+v", d)
			}
			if tc.err == "" && err != nil || tc.err != "" && (!errors.Is(err, ErrEntities) || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want ErrEntities with %q", err, tc.err)
			}
		})
	}
}

func TestRequestModel(t *testing.T) {
	req, entities := Request(input("alice"))
	if req.Principal.String() != `User::"alice"` || req.Action.String() != `Action::"read"` || req.Resource.String() != `orders::"7"` {
		t.Fatalf("request %v %v %v", req.Principal, req.Action, req.Resource)
	}
	if u, ok := entities[req.Principal]; !ok || !u.Parents.Contains(types.NewEntityUID(TypeRole, "clerk")) {
		t.Fatalf("user entity %+v", u)
	}
	for _, k := range []types.String{"caller", "scopes", "tenant", "auth_method", "correlation_id"} {
		if _, ok := req.Context.Get(k); !ok {
			t.Fatalf("context lacks %s", k)
		}
	}
	req, _ = Request(input(""))
	if req.Principal.String() != `Service::"spiffe://example.org/svc/web"` {
		t.Fatalf("service principal %v", req.Principal)
	}
	if got := ResourceType("order-items.v2"); got != "order_items_v2" {
		t.Fatalf("resource type %q", got)
	}
}

func TestNewValidates(t *testing.T) {
	a := newTestAuthority(t)
	for _, cfg := range []Config{
		{Domain: "Bad Domain", Fetcher: a, Bundle: a.bundle, TrustDomain: testTD},
		{Domain: "orders", Bundle: a.bundle, TrustDomain: testTD},
		{Domain: "orders", Fetcher: a},
	} {
		if _, err := New(cfg); err == nil {
			t.Fatalf("New(%+v) accepted", cfg)
		}
	}
}

// FuzzParseBundle feeds arbitrary payloads, signed by the trusted key so
// that they reach the decoder, and arbitrary JWS bytes.
func FuzzParseBundle(f *testing.F) {
	a := newTestAuthority(f)
	good, _ := json.Marshal(Bundle{Issuer: "spiffe://example.org/ward/authority", Domain: "orders", Revision: 1, IssuedAt: 1, Active: content(1, allowRead)})
	f.Add(good, []byte{})
	f.Add([]byte(`{"iss":"spiffe://example.org/ward/authority","domain":"orders","revision":1,"iat":1,"active":{"version":2}}`), []byte("a.b.c"))
	f.Add([]byte(`[]`), []byte("eyJhbGciOiJFZERTQSJ9.e30."))
	keys := a.keySet()
	f.Fuzz(func(t *testing.T, payload, raw []byte) {
		jws := signWith(t, a.key, a.kid, JWSType, payload)
		if b, err := ParseBundle(jws, keys, "orders"); err == nil {
			if b.Revision < 1 || b.Active.Version < 1 || b.Active.Version > b.Revision || b.Domain != "orders" {
				t.Fatalf("accepted an unsound bundle %+v", b)
			}
			_, _ = NewSet(b.Active)
		}
		if _, err := ParseBundle(raw, keys, "orders"); err == nil {
			t.Fatalf("accepted unsigned bytes %q", raw)
		}
	})
}

// TestEvaluationErrorsDeny: Cedar skips a policy that fails to evaluate,
// so a failing forbid would let a permit through; ward denies instead.
func TestEvaluationErrorsDeny(t *testing.T) {
	set, err := NewSet(content(1, `@id("ok") permit(principal, action, resource);
@id("broken") forbid(principal, action, resource) when { principal.missing == 1 };`))
	if err != nil {
		t.Fatal(err)
	}
	req, entities := Request(input("alice"))
	d := set.Decide(entities, req)
	if d.Allowed || d.Reason != ReasonPolicyError || len(d.Errors) != 1 || !strings.HasPrefix(d.Errors[0], "broken: ") {
		t.Fatalf("decision %+v", d)
	}
}
