package guard

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestNewValidatesConfig(t *testing.T) {
	a := newTestAuthority(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no provider", Config{Fetcher: a, Bundle: a.bundle}},
		{"no fetcher", Config{Provider: svc("whoami"), Bundle: a.bundle}},
		{"no bundle", Config{Provider: svc("whoami"), Fetcher: a}},
		{"negative interval", Config{Provider: svc("whoami"), Fetcher: a, Bundle: a.bundle, MissRefreshInterval: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(context.Background(), tt.cfg); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

func TestCheckWithoutList(t *testing.T) {
	a := newTestAuthority(t)
	a.setDown(true)
	g := newTestGuard(t, a, nil)
	if g.Allowed(svc("web"), "whoami", "read") {
		t.Fatal("allowed without a list")
	}
	if err := g.Check(context.Background(), svc("web"), "whoami", "read"); !errors.Is(err, ErrNoAccessList) {
		t.Fatalf("err = %v, want ErrNoAccessList", err)
	}
}

func TestCheckAndLazyRefresh(t *testing.T) {
	a := newTestAuthority(t)
	a.setList(1, []string{"web"})
	g := newTestGuard(t, a, func(c *Config) { c.MissRefreshInterval = time.Millisecond })
	ctx := context.Background()
	if err := g.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !g.Allowed(svc("web"), "whoami", "read") || g.Version() != 1 {
		t.Fatalf("web not allowed at version %d", g.Version())
	}
	if err := g.Check(ctx, svc("web"), "whoami", "write"); !errors.Is(err, ErrActionNotAllowed) {
		t.Fatalf("write: %v, want ErrActionNotAllowed", err)
	}
	// A new consumer is approved; the guard has not heard of it yet. The
	// miss refreshes and the second look allows it.
	a.setList(2, []string{"web", "api"})
	time.Sleep(2 * time.Millisecond)
	if g.Allowed(svc("api"), "whoami", "read") {
		t.Fatal("allowed before the refresh")
	}
	if err := g.Check(ctx, svc("api"), "whoami", "read"); err != nil {
		t.Fatalf("api after lazy refresh: %v", err)
	}
	if g.Version() != 2 {
		t.Fatalf("version %d", g.Version())
	}
	if err := g.Check(ctx, svc("evil"), "whoami", "read"); !errors.Is(err, ErrUnknownCaller) {
		t.Fatalf("evil: %v, want ErrUnknownCaller", err)
	}
	l := g.List()
	l.Consumers[0].ID = "mutated"
	if g.List().Consumers[0].ID == "mutated" {
		t.Fatal("List returned the guard's own list")
	}
}

// TestMissFlood fires 10,000 checks from distinct unknown callers (so the
// miss memory cannot absorb them: only the rate limit can) over several
// refresh intervals, and shows the authority saw no more fetches than the
// limit allows.
func TestMissFlood(t *testing.T) {
	a := newTestAuthority(t)
	a.setList(1, []string{"web"})
	const interval = 50 * time.Millisecond
	g := newTestGuard(t, a, func(c *Config) { c.MissRefreshInterval = interval; c.MaxMisses = 20000 })
	if err := g.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := a.listHits.Load()
	start := time.Now()
	const workers, perWorker = 50, 200
	var wg sync.WaitGroup
	var allowed atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				id := spiffeid.RequireFromSegments(testTD, "svc", fmt.Sprintf("intruder-%d-%d", w, i))
				if g.Check(context.Background(), id, "whoami", "read") == nil {
					allowed.Add(1)
				}
				if i%10 == 0 {
					time.Sleep(10 * time.Millisecond) // spread the flood over several intervals
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	fetches := a.listHits.Load() - before
	limit := 1 + int64(elapsed/interval)
	t.Logf("%d checks from distinct unknown callers in %v: %d fetches (limit 1 + elapsed/interval = %d at one per %v)", workers*perWorker, elapsed.Round(time.Millisecond), fetches, limit, interval)
	if allowed.Load() != 0 {
		t.Fatalf("%d unknown callers allowed", allowed.Load())
	}
	if fetches > limit {
		t.Fatalf("%d fetches in %v, more than the limit %d", fetches, elapsed, limit)
	}
	if fetches < 2 {
		t.Fatalf("%d fetches over %v: the lazy refresh did not run again after the interval", fetches, elapsed)
	}
}

// TestRememberedMiss: a caller that missed after a refresh is refused
// without another fetch until MissTTL passes; a new version forgets it.
func TestRememberedMiss(t *testing.T) {
	a := newTestAuthority(t)
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	g := newTestGuard(t, a, func(c *Config) {
		c.Now = clock
		c.MissRefreshInterval = time.Millisecond
		c.MissTTL = time.Minute
	})
	ctx := context.Background()
	if err := g.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	hits := a.listHits.Load()
	_ = g.Check(ctx, svc("web"), "whoami", "read") // refreshes once, then remembered
	if got := a.listHits.Load() - hits; got != 1 {
		t.Fatalf("first miss caused %d fetches, want 1", got)
	}
	advance(time.Second)
	_ = g.Check(ctx, svc("web"), "whoami", "read")
	if got := a.listHits.Load() - hits; got != 1 {
		t.Fatalf("remembered miss caused a fetch (%d)", got)
	}
	advance(2 * time.Minute)
	a.setList(2, []string{"web"})
	if err := g.Check(ctx, svc("web"), "whoami", "read"); err != nil {
		t.Fatalf("after MissTTL and approval: %v", err)
	}
}

func TestRollbackRefused(t *testing.T) {
	a := newTestAuthority(t)
	a.setList(5, []string{"web"})
	g := newTestGuard(t, a, nil)
	if err := g.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.setList(4, []string{"web", "evil"}) // a replayed older list
	if err := g.Refresh(context.Background()); !errors.Is(err, ErrRollback) {
		t.Fatalf("err = %v, want ErrRollback", err)
	}
	if g.Version() != 5 || g.Allowed(svc("evil"), "whoami", "read") {
		t.Fatalf("rollback applied: version %d", g.Version())
	}
}

func TestEventsTriggerRefresh(t *testing.T) {
	a := newTestAuthority(t)
	ev := &events{}
	g := newTestGuard(t, a, func(c *Config) { c.Events = ev })
	runGuard(t, g)
	waitUntil(t, "the first list", func() bool { return g.Version() == 1 })
	a.setList(2, []string{"web"})
	hits := a.listHits.Load()
	ev.emit("accesslist", `{"version":99,"provider":"spiffe://example.org/svc/other","list_version":7}`)
	ev.emit("revocation", `{"version":100,"serials":[]}`)
	ev.emit("accesslist", `not json`)
	time.Sleep(50 * time.Millisecond)
	if a.listHits.Load() != hits {
		t.Fatal("an event for another provider caused a fetch")
	}
	ev.emit("accesslist", `{"version":101,"provider":"spiffe://example.org/svc/whoami","list_version":2}`)
	waitUntil(t, "version 2 after the event", func() bool { return g.Allowed(svc("web"), "whoami", "read") })
	a.setList(3, nil)
	ev.emit("snapshot", `{"version":102,"access_list_version":3}`)
	waitUntil(t, "version 3 after a snapshot", func() bool { return g.Version() == 3 })
	if g.Allowed(svc("web"), "whoami", "read") {
		t.Fatal("web still allowed after revocation")
	}
}

func TestCacheSurvivesRestart(t *testing.T) {
	a := newTestAuthority(t)
	a.setList(7, []string{"web"})
	dir := filepath.Join(t.TempDir(), "accesslist")
	g := newTestGuard(t, a, func(c *Config) { c.CacheDir = dir })
	if err := g.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{cacheListFile, cacheKeysFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", f, st.Mode().Perm())
		}
	}
	// Restart with the authority down: the cached list is enforced.
	a.setDown(true)
	g2 := newTestGuard(t, a, func(c *Config) { c.CacheDir = dir })
	if g2.Version() != 7 || !g2.Allowed(svc("web"), "whoami", "read") || g2.Allowed(svc("evil"), "whoami", "read") {
		t.Fatalf("restarted guard: version %d", g2.Version())
	}
	if err := g2.Check(context.Background(), svc("evil"), "whoami", "read"); !errors.Is(err, ErrUnknownCaller) {
		t.Fatalf("evil with the authority down: %v", err)
	}

	// A tampered cache is not used.
	data, _ := os.ReadFile(filepath.Join(dir, cacheListFile))
	data[len(data)-5] ^= 1
	if err := os.WriteFile(filepath.Join(dir, cacheListFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	g3 := newTestGuard(t, a, func(c *Config) { c.CacheDir = dir })
	if g3.Version() != 0 || g3.Allowed(svc("web"), "whoami", "read") {
		t.Fatal("tampered cache was loaded")
	}
	// A cache for another provider is not used either.
	g4 := newTestGuard(t, a, func(c *Config) { c.CacheDir = dir; c.Provider = svc("orders") })
	if g4.Version() != 0 {
		t.Fatal("another provider's cache was loaded")
	}
}

type declarer struct {
	*testAuthority
	mu    sync.Mutex
	got   [][]byte
	errs  []error
	calls atomic.Int64
}

func (d *declarer) Declare(_ context.Context, m []byte) error {
	d.calls.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, m)
	if len(d.errs) > 0 {
		err := d.errs[0]
		d.errs = d.errs[1:]
		return err
	}
	return nil
}

func TestRunDeclaresManifest(t *testing.T) {
	a := newTestAuthority(t)
	d := &declarer{testAuthority: a, errs: []error{errors.New("connection refused")}}
	g := newTestGuard(t, a, func(c *Config) { c.Fetcher = d; c.Manifest = []byte("service: whoami\n") })
	runGuard(t, g)
	waitUntil(t, "the manifest is declared after a retry", func() bool { return d.calls.Load() == 2 })

	refused := &declarer{testAuthority: a, errs: []error{&AuthorityError{Status: 400, Type: "invalid-manifest"}}}
	g2 := newTestGuard(t, a, func(c *Config) { c.Fetcher = refused; c.Manifest = []byte("x") })
	runGuard(t, g2)
	// A consumed service that has not declared yet is transient: retried.
	early := &declarer{testAuthority: a, errs: []error{&AuthorityError{Status: 422, Type: "https://ward.dev/problems/unknown-dependency"}}}
	g3 := newTestGuard(t, a, func(c *Config) { c.Fetcher = early; c.Manifest = []byte("y") })
	runGuard(t, g3)
	waitUntil(t, "a manifest naming an undeclared service is sent again", func() bool { return early.calls.Load() == 2 })
	time.Sleep(500 * time.Millisecond)
	if n := refused.calls.Load(); n != 1 {
		t.Fatalf("a refused manifest was sent %d times", n)
	}
}

// TestKeyRotation: a list signed by a new key of the authority makes the
// guard fetch the key set again and accept it.
func TestKeyRotation(t *testing.T) {
	a := newTestAuthority(t)
	a.setList(1, []string{"web"})
	g := newTestGuard(t, a, nil)
	ctx := context.Background()
	if err := g.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	keyHits := a.keyHits.Load()
	a.setList(2, []string{"web"})
	if err := g.Refresh(ctx); err != nil || a.keyHits.Load() != keyHits {
		t.Fatalf("same key: err %v, %d key set fetches", err, a.keyHits.Load()-keyHits)
	}
	a.newKey()
	a.setList(3, []string{"web", "api"})
	if err := g.Refresh(ctx); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if g.Version() != 3 || a.keyHits.Load() != keyHits+1 {
		t.Fatalf("version %d, %d key set fetches", g.Version(), a.keyHits.Load()-keyHits)
	}
}

// TestUnknownKeyFetchRateLimited: a list whose key the authority does not
// publish is refused, and costs at most one key set fetch per
// MissRefreshInterval.
func TestUnknownKeyFetchRateLimited(t *testing.T) {
	a := newTestAuthority(t)
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	g := newTestGuard(t, a, func(c *Config) { c.Now = clock; c.MissRefreshInterval = time.Minute })
	ctx := context.Background()
	if err := g.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	other := newTestAuthority(t)
	a.setJWS(other.sign(other.listFor(9, "evil")))
	keyHits := a.keyHits.Load()
	for range 5 {
		if err := g.Refresh(ctx); !errors.Is(err, ErrNoTrustedKey) {
			t.Fatalf("err = %v, want ErrNoTrustedKey", err)
		}
	}
	if got := a.keyHits.Load() - keyHits; got != 1 {
		t.Fatalf("%d key set fetches within one interval, want 1", got)
	}
	advance(time.Minute)
	_ = g.Refresh(ctx)
	if got := a.keyHits.Load() - keyHits; got != 2 {
		t.Fatalf("%d key set fetches after the interval, want 2", got)
	}
	if g.Version() != 1 || g.Allowed(svc("evil"), "whoami", "read") {
		t.Fatalf("a list signed by an unknown key was installed (version %d)", g.Version())
	}
}

// TestMissMemoryBounded: many distinct unknown callers do not grow the
// miss memory past MaxMisses.
func TestMissMemoryBounded(t *testing.T) {
	a := newTestAuthority(t)
	g := newTestGuard(t, a, func(c *Config) { c.MaxMisses = 8; c.MissRefreshInterval = time.Hour })
	ctx := context.Background()
	if err := g.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		id := spiffeid.RequireFromSegments(testTD, "svc", "intruder", string(rune('a'+i/26)), string(rune('a'+i%26)))
		if err := g.Check(ctx, id, "whoami", "read"); !errors.Is(err, ErrUnknownCaller) {
			t.Fatalf("caller %d: %v", i, err)
		}
		g.mu.Lock()
		n := len(g.misses)
		g.mu.Unlock()
		if n > 8 {
			t.Fatalf("%d remembered misses, bound 8", n)
		}
	}
}
