package passport

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func newSigner(t testing.TB) *Signer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jwks(t testing.TB, signers ...*Signer) []byte {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, s := range signers {
		set.Keys = append(set.Keys, s.PublicJWK())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func claims(now time.Time) *Claims {
	return &Claims{Subject: "alice", Issuer: "https://a", AuthMethod: "apikey", ID: NewID(), CorrelationID: "c",
		Audience: "ward.test", IssuedAt: now.Unix(), Expiry: now.Unix() + 30, Scope: "a b", Roles: []string{"r"}}
}

type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time { return time.Unix(c.t.Load(), 0) }

func newVerifier(t testing.TB, clk *clock, signers ...*Signer) *Verifier {
	t.Helper()
	v, err := New(Config{Audience: "ward.test", Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetKeys(jwks(t, signers...)); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRoundTripAndChecks(t *testing.T) {
	clk := &clock{}
	clk.t.Store(1_700_000_000)
	s := newSigner(t)
	v := newVerifier(t, clk, s)
	raw, err := s.Mint(claims(clk.now()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(context.Background(), raw)
	if err != nil || c.Subject != "alice" || !c.HasScope("b") || !c.HasRole("r") {
		t.Fatalf("verify: %v %+v", err, c)
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0])
	if !strings.Contains(string(hdr), `"typ":"ward-passport+jwt"`) || !strings.Contains(string(hdr), `"alg":"EdDSA"`) {
		t.Fatalf("header %s", hdr)
	}
	// Cached: same answer; after expiry + leeway refused even from cache.
	if c2, _ := v.Verify(context.Background(), raw); c2 != c {
		t.Fatal("not served from cache")
	}
	clk.t.Add(34)
	if _, err := v.Verify(context.Background(), raw); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	clk.t.Add(1)
	if _, err := v.Verify(context.Background(), raw); !errors.Is(err, ErrExpired) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("expired replay: %v", err)
	}
	// A fresh verifier refuses it uncached too.
	if _, err := newVerifier(t, clk, s).Verify(context.Background(), raw); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired uncached: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	clk := &clock{}
	clk.t.Store(1_700_000_000)
	s, other := newSigner(t), newSigner(t)
	v := newVerifier(t, clk, s)
	good, _ := s.Mint(claims(clk.now()))
	parts := strings.Split(good, ".")
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	wrongAud := claims(clk.now())
	wrongAud.Audience = "other.test"
	long := claims(clk.now())
	long.Expiry = long.IssuedAt + 61
	future := claims(clk.now())
	future.IssuedAt, future.Expiry = clk.now().Unix()+100, clk.now().Unix()+120
	rawWrongAud := mintUnchecked(s, wrongAud)
	rawLong := mintUnchecked(s, long)
	rawFuture := mintUnchecked(s, future)
	byOther, _ := other.Mint(claims(clk.now()))
	for name, raw := range map[string]string{
		"empty":         "",
		"garbage":       "abc",
		"tampered":      parts[0] + "." + enc(map[string]any{"sub": "mallory", "aud": "ward.test", "jti": "x", "auth_method": "apikey", "iat": clk.now().Unix(), "exp": clk.now().Unix() + 10}) + "." + parts[2],
		"bad signature": parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64)),
		"alg none":      enc(map[string]string{"alg": "none", "typ": JWSType, "kid": s.KeyID()}) + "." + parts[1] + ".",
		"alg HS256":     enc(map[string]string{"alg": "HS256", "typ": JWSType, "kid": s.KeyID()}) + "." + parts[1] + "." + parts[2],
		"wrong typ":     enc(map[string]string{"alg": "EdDSA", "typ": "JWT", "kid": s.KeyID()}) + "." + parts[1] + "." + parts[2],
		"no kid":        enc(map[string]string{"alg": "EdDSA", "typ": JWSType}) + "." + parts[1] + "." + parts[2],
		"crit":          enc(map[string]any{"alg": "EdDSA", "typ": JWSType, "kid": s.KeyID(), "crit": []string{"x"}}) + "." + parts[1] + "." + parts[2],
		"unknown key":   byOther,
		"wrong aud":     rawWrongAud,
		"too long":      rawLong,
		"future":        rawFuture,
		"oversized":     strings.Repeat("a", MaxSize+1),
	} {
		if _, err := v.Verify(context.Background(), raw); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := s.Mint(long); err == nil {
		t.Error("Mint accepted a 61 s passport")
	}
}

// mintUnchecked signs claims Mint would refuse, as a forger with the key could.
func mintUnchecked(s *Signer, c *Claims) string {
	p, _ := json.Marshal(c)
	in := s.header + base64.RawURLEncoding.EncodeToString(p)
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(s.key, []byte(in)))
}

func TestKeyRemovalAndFetch(t *testing.T) {
	clk := &clock{}
	clk.t.Store(time.Now().Unix())
	s := newSigner(t)
	var fetches atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/passport/keys" {
			http.NotFound(w, r)
			return
		}
		fetches.Add(1)
		time.Sleep(20 * time.Millisecond)
		_, _ = w.Write(jwks(t, s))
	}))
	defer srv.Close()
	ev := &events{}
	v, err := New(Config{Audience: "ward.test", AuthorityURL: srv.URL, HTTPClient: srv.Client(), Events: ev, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	raw, _ := s.Mint(claims(clk.now()))
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := v.Verify(context.Background(), raw); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for 10 concurrent verifications of one unknown kid", n)
	}
	// Unknown kids do not make it fetch more than once per interval.
	forged, _ := newSigner(t).Mint(claims(clk.now()))
	for range 5 {
		_, _ = v.Verify(context.Background(), forged)
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after unknown kids within the interval", n)
	}
	// The key is withdrawn on the watch stream: the cached passport fails.
	ev.send("passport-keys", []byte(`{"keys":[]}`))
	if _, err := v.Verify(context.Background(), raw); err == nil {
		t.Fatal("passport of a withdrawn key accepted")
	}
}

type events struct{ fn func(string, []byte) }

func (e *events) Subscribe(fn func(string, []byte)) func() { e.fn = fn; return func() {} }
func (e *events) send(kind string, p []byte)               { e.fn(kind, p) }

func TestTransportForwards(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = append(got, r.Header.Get(Header)) }))
	defer srv.Close()
	hc := Client(srv.Client())
	ctx := NewContext(context.Background(), "raw-passport", &Claims{Subject: "a"})
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	if _, err := hc.Do(req); err != nil {
		t.Fatal(err)
	}
	req2, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	req2.Header.Set(Header, "explicit")
	if _, err := hc.Do(req2); err != nil {
		t.Fatal(err)
	}
	req3, _ := http.NewRequest("GET", srv.URL, nil)
	if _, err := hc.Do(req3); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != "raw-passport" || got[1] != "explicit" || got[2] != "" {
		t.Fatalf("forwarded %q", got)
	}
	if req.Header.Get(Header) != "" {
		t.Fatal("caller's request mutated")
	}
}

func TestCacheBounded(t *testing.T) {
	clk := &clock{}
	clk.t.Store(1_700_000_000)
	s := newSigner(t)
	v, _ := New(Config{Audience: "ward.test", Now: clk.now, CacheSize: 50})
	_ = v.SetKeys(jwks(t, s))
	for range 500 {
		raw, _ := s.Mint(claims(clk.now()))
		if _, err := v.Verify(context.Background(), raw); err != nil {
			t.Fatal(err)
		}
	}
	v.mu.RLock()
	n := len(v.cache)
	v.mu.RUnlock()
	if n > 50 {
		t.Fatalf("cache holds %d, bound 50", n)
	}
}

func FuzzVerify(f *testing.F) {
	clk := &clock{}
	clk.t.Store(1_700_000_000)
	s := newSigner(f)
	good, _ := s.Mint(claims(clk.now()))
	f.Add(good)
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0..")
	v := newVerifier(f, clk, s)
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := v.Verify(context.Background(), raw)
		if err == nil && (c == nil || c.Audience != "ward.test") {
			t.Fatalf("accepted %q", raw)
		}
		_ = v.SetKeys([]byte(raw))
		_ = v.SetKeys(jwks(t, s))
	})
}
