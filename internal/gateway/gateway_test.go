package gateway

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardsec/ward/passport"
)

func ordersRoute(extra map[string]any) map[string]any {
	r := map[string]any{"prefix": "/orders", "service": "orders"}
	for k, v := range extra {
		r[k] = v
	}
	return r
}

func TestForwardWithPassport(t *testing.T) {
	e := newEnv(t, nil)
	e.setRoute("orders", ordersRoute(map[string]any{"upstream": e.upstream, "scopes": []string{"orders.read"}}))
	key, _ := e.apiKey("alice", "orders.read")

	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	hdr := bearer(key)
	hdr["Traceparent"] = tp
	resp, body := e.get("/orders/42", hdr)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	ans := decodeEcho(t, body)
	if ans.Caller != "spiffe://ward.test/ward/gateway" {
		t.Errorf("upstream saw caller %q, want the gateway", ans.Caller)
	}
	if ans.Error != "" || ans.Passport == nil {
		t.Fatalf("passport not verified by the upstream: %q", ans.Error)
	}
	p := ans.Passport
	if p.Subject != "alice" || p.Tenant != "acme" || p.AuthMethod != CredAPIKey || p.Audience != "ward.test" ||
		p.CorrelationID != "4bf92f3577b34da6a3ce929d0e0e4736" || p.Route != "orders" || !p.HasScope("orders.read") ||
		p.Gateway != "spiffe://ward.test/ward/gateway" || p.TokenFingerprint != fingerprint(key) || p.ID == "" {
		t.Errorf("passport claims = %+v", p)
	}
	if p.Expiry-p.IssuedAt > 60 {
		t.Errorf("passport lives %d s", p.Expiry-p.IssuedAt)
	}
	if got := resp.Header.Get("X-Correlation-ID"); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("X-Correlation-ID = %q", got)
	}
	if got := ans.Headers["Traceparent"]; len(got) != 1 || !strings.HasPrefix(got[0], "00-4bf92f3577b34da6a3ce929d0e0e4736-") || strings.Contains(got[0], "00f067aa0ba902b7") {
		t.Errorf("upstream traceparent = %v (same trace, the gateway's span)", got)
	}
	if _, ok := ans.Headers["Authorization"]; ok {
		t.Error("the external credential reached the upstream")
	}

	// A second request gets a fresh passport (never one reused).
	_, body2 := e.get("/orders/42", bearer(key))
	if p2 := decodeEcho(t, body2).Passport; p2 == nil || p2.ID == p.ID {
		t.Errorf("passport reused: %v", p2)
	}
	// Without a traceparent the gateway starts a trace.
	resp3, body3 := e.get("/orders", bearer(key))
	if cid := resp3.Header.Get("X-Correlation-ID"); len(cid) != 32 || decodeEcho(t, body3).Passport.CorrelationID != cid {
		t.Errorf("correlation ID %q not in passport", cid)
	}
}

// Every spoofing variant of an internal header is removed before the
// upstream, on every path, and no response carries one.
func TestHeaderHygiene(t *testing.T) {
	e := newEnv(t, nil)
	e.setRoute("orders", ordersRoute(map[string]any{"upstream": e.upstream}))
	e.setRoute("open", map[string]any{"prefix": "/open", "service": "orders", "upstream": e.upstream, "anonymous": true})
	key, _ := e.apiKey("alice")
	spoofs := map[string]string{
		"Ward-Passport": "forged", "ward-passport": "forged", "WARD-PASSPORT": "forged", "Ward_Passport": "forged",
		"ward_passport": "forged", "wArD-pAsSpOrT": "forged", "Ward-User": "admin", "Ward-Caller": "spiffe://ward.test/svc/admin",
		"X-Ward-User": "admin", "x_ward_user": "admin", "X_WARD_ROLES": "admin", "Ward-Passport-Claims": "{}", "Ward-Correlation-Id": "x",
	}
	check := func(name, path string, hdr map[string]string, wantStatus int) {
		t.Helper()
		for k, v := range spoofs {
			hdr[k] = v
		}
		resp, body := e.get(path, hdr)
		if resp.StatusCode != wantStatus {
			t.Fatalf("%s: status %d: %s", name, resp.StatusCode, body)
		}
		for k, vs := range resp.Header {
			if internalHeader(strings.TrimPrefix(k, http.TrailerPrefix)) {
				t.Errorf("%s: response carries %s: %v", name, k, vs)
			}
		}
		for k, vs := range resp.Trailer {
			if internalHeader(k) {
				t.Errorf("%s: response trailer %s: %v", name, k, vs)
			}
		}
		if wantStatus != http.StatusOK {
			return
		}
		ans := decodeEcho(t, body)
		for k, vs := range ans.Headers {
			if !internalHeader(k) {
				continue
			}
			if k != passport.Header || len(vs) != 1 || vs[0] == "forged" {
				t.Errorf("%s: upstream received %s: %v", name, k, vs)
			}
		}
		if ans.Passport == nil || ans.Error != "" {
			t.Errorf("%s: upstream passport: %v %q", name, ans.Passport, ans.Error)
		}
	}
	check("authenticated", "/orders/1", bearer(key), http.StatusOK)
	check("anonymous", "/open/1", map[string]string{}, http.StatusOK)
	check("upstream leaks", "/orders/1?do=leak", bearer(key), http.StatusOK)
	check("no credential", "/orders/1", map[string]string{}, http.StatusUnauthorized)
	check("bad credential", "/orders/1", bearer("ward_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA_00000000"), http.StatusUnauthorized)
	check("no route", "/nowhere", bearer(key), http.StatusNotFound)
	// An anonymous passport says so.
	_, body := e.get("/open/x", map[string]string{})
	if p := decodeEcho(t, body).Passport; p == nil || p.AuthMethod != "anonymous" || p.Subject != "anonymous" {
		t.Errorf("anonymous passport = %+v", p)
	}
}

func TestBadCredentials(t *testing.T) {
	e := newEnv(t, nil)
	e.setRoute("orders", ordersRoute(map[string]any{"upstream": e.upstream, "scopes": []string{"orders.read"}}))
	e.setRoute("keys", map[string]any{"prefix": "/keys-only", "service": "orders", "upstream": e.upstream, "credentials": []string{"jwt"}})
	good, _ := e.apiKey("alice", "orders.read")
	weak, _ := e.apiKey("bob", "other")
	cases := []struct {
		name   string
		path   string
		hdr    map[string]string
		status int
		slug   string
	}{
		{"missing", "/orders", map[string]string{}, 401, "unauthorized"},
		{"not bearer", "/orders", map[string]string{"Authorization": "Basic YTpi"}, 401, "unauthorized"},
		{"empty bearer", "/orders", map[string]string{"Authorization": "Bearer "}, 401, "unauthorized"},
		{"malformed jwt", "/orders", bearer("a.b.c"), 401, "unauthorized"},
		{"foreign issuer jwt", "/orders", bearer("eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJodHRwczovL2V2aWwuZXhhbXBsZSJ9.c2ln"), 401, "unauthorized"},
		{"unknown api key", "/orders", bearer("ward_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA_00000000"), 401, "unauthorized"},
		{"opaque unknown", "/orders", bearer("opaque-token-value"), 401, "unauthorized"},
		{"oversized", "/orders", bearer(strings.Repeat("a", maxCredential+1)), 401, "unauthorized"},
		{"two credentials", "/orders", map[string]string{"Authorization": "Bearer " + good, "X-Api-Key": good}, 401, "unauthorized"},
		{"kind not accepted", "/keys-only", bearer(good), 401, "unauthorized"},
		{"insufficient scope", "/orders", bearer(weak), 403, "insufficient-scope"},
		{"dot segments", "/orders/../admin", bearer(good), 400, "bad-path"},
	}
	for _, c := range cases {
		resp, body := e.get(c.path, c.hdr)
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, resp.StatusCode, c.status, body)
			continue
		}
		if got := problemType(t, resp, body); got != c.slug {
			t.Errorf("%s: problem %q, want %q", c.name, got, c.slug)
		}
		if c.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: no Bearer challenge", c.name)
		}
	}
	// The good key works on the same route.
	if resp, body := e.get("/orders", bearer(good)); resp.StatusCode != 200 {
		t.Fatalf("good key: %d %s", resp.StatusCode, body)
	}
}

// A revoked API key is refused within a second, although it was cached.
func TestRevokedAPIKeyRefusedWithinASecond(t *testing.T) {
	e := newEnv(t, nil)
	e.setRoute("orders", ordersRoute(map[string]any{"upstream": e.upstream}))
	key, id := e.apiKey("alice")
	if resp, body := e.get("/orders", bearer(key)); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if resp, _ := e.get("/orders", bearer(key)); resp.StatusCode != 200 { // now cached
		t.Fatal("second request refused")
	}
	e.adminDo("POST", "/v1/api-keys/"+id+"/revoke", nil, nil)
	revoked := time.Now()
	for {
		resp, body := e.get("/orders", bearer(key))
		if resp.StatusCode == http.StatusUnauthorized {
			break
		}
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if time.Since(revoked) > time.Second {
			t.Fatal("revoked API key still accepted after 1 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("revoked key refused after %v", time.Since(revoked).Round(time.Millisecond))
}

func TestUpstreamFailures(t *testing.T) {
	e := newEnv(t, nil)
	// Down: nothing listens.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "https://" + ln.Addr().String()
	ln.Close()
	e.setRoute("down", map[string]any{"prefix": "/down", "service": "orders", "upstream": down})
	// Wrong identity: the authority presents spiffe://ward.test/ward/authority, not orders.
	e.setRoute("wrong", map[string]any{"prefix": "/wrong", "service": "orders", "upstream": e.url})
	// Slow: answers after 2 s, the route waits 1 s.
	e.setRoute("slow", map[string]any{"prefix": "/slow", "service": "orders", "upstream": e.upstream, "timeout": "1s"})
	key, _ := e.apiKey("alice")
	for _, c := range []struct {
		path   string
		status int
		slug   string
	}{
		{"/down", 502, "upstream-unavailable"},
		{"/wrong", 502, "upstream-identity"},
		{"/slow/x?do=sleep", 504, "upstream-timeout"},
	} {
		resp, body := e.get(c.path, bearer(key))
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d %s", c.path, resp.StatusCode, body)
			continue
		}
		if got := problemType(t, resp, body); got != c.slug {
			t.Errorf("%s: problem %q, want %q", c.path, got, c.slug)
		}
	}
}

func TestRateLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PreAuthRate, c.PreAuthBurst = 1, 5 })
	e.setRoute("orders", ordersRoute(map[string]any{"upstream": e.upstream, "rate": map[string]any{"per_second": 1, "burst": 2}}))
	key, _ := e.apiKey("alice")
	other, _ := e.apiKey("bob")
	// Post-authentication: alice has a burst of 2 on this route.
	codes := []int{}
	for range 3 {
		resp, _ := e.get("/orders", bearer(key))
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
		t.Fatalf("alice: %v", codes)
	}
	// bob has his own budget.
	if resp, _ := e.get("/orders", bearer(other)); resp.StatusCode != 200 {
		t.Fatalf("bob: %d", resp.StatusCode)
	}
	// Pre-authentication: the address has spent 4 of 5; spraying is cut off.
	var last int
	for range 10 {
		resp, body := e.get("/orders", bearer("spray"))
		last = resp.StatusCode
		if last == 429 {
			if problemType(t, resp, body) != "rate-limited" {
				t.Error("wrong problem")
			}
			break
		}
	}
	if last != 429 {
		t.Fatalf("pre-auth limit not applied: %d", last)
	}
}

func TestLimiterSetBounded(t *testing.T) {
	s := newLimiterSet(1, 1, 100, time.Now)
	for i := range 10000 {
		s.allow(strings.Repeat("k", i%50) + string(rune('a'+i%26)) + time.Duration(i).String())
	}
	if n := s.size(); n > 100 {
		t.Fatalf("limiter set holds %d keys, bound 100", n)
	}
}

func TestOversizedAndSlow(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 1024 })
	e.setRoute("orders", ordersRoute(map[string]any{"upstream": e.upstream}))
	key, _ := e.apiKey("alice")
	// Declared too large.
	req, _ := http.NewRequest("POST", e.gwURL+"/orders", strings.NewReader(strings.Repeat("x", 2048)))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || problemType(t, resp, body) != "payload-too-large" {
		t.Errorf("large body: %d %s", resp.StatusCode, body)
	}
	// Streamed too large (no Content-Length).
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write([]byte(strings.Repeat("y", 4096))); pw.Close() }()
	req, _ = http.NewRequest("POST", e.gwURL+"/orders", pr)
	req.Header.Set("Authorization", "Bearer "+key)
	if resp, err = e.client.Do(req); err == nil {
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("streamed large body: %d %s", resp.StatusCode, body)
		}
	}
	// Oversized headers: the server refuses them (431).
	resp, _ = e.get("/orders", map[string]string{"Authorization": "Bearer " + key, "X-Big": strings.Repeat("b", 64<<10)})
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized headers: %d", resp.StatusCode)
	}
	// A slow client that never finishes its headers is cut off.
	c, err := tls.Dial("tcp", strings.TrimPrefix(e.gwURL, "https://"), &tls.Config{RootCAs: e.trust})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("GET /orders HTTP/1.1\r\nHost: x\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(c)
	if time.Since(start) > 12*time.Second {
		t.Errorf("slow client kept for %v (err %v)", time.Since(start), err)
	}
}

// Concurrent checks of one credential are coalesced into one
// verification; the cache is keyed by the token's hash and the scopes.
func TestCredentialCache(t *testing.T) {
	calls := 0
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	c := newCredCache(time.Minute, 5*time.Second, 10, 10, func() time.Time { return now })
	release := make(chan struct{})
	check := func() (*Principal, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		<-release
		return &Principal{Subject: "a", jti: "j1", Expiry: now.Add(10 * time.Second)}, nil
	}
	k := cacheKey("tok", []string{"s"})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := c.get(k, check); err != nil {
				t.Error(err)
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if calls != 1 {
		t.Fatalf("%d verifications for 20 concurrent checks", calls)
	}
	if cacheKey("tok", []string{"s"}) == cacheKey("tok", []string{"t"}) || cacheKey("tok", nil) == cacheKey("tok2", nil) {
		t.Fatal("cache key ignores scopes or token")
	}
	// Expiry: never beyond the token's own.
	now = now.Add(11 * time.Second)
	if _, err := c.get(k, func() (*Principal, error) { calls++; return &Principal{Subject: "a"}, nil }); err != nil || calls != 2 {
		t.Fatalf("expired entry served (calls %d)", calls)
	}
	// Revocation evicts.
	c.store(k, &Principal{Subject: "a", jti: "j2"}, nil)
	c.revoke("token", "j2")
	if p, _ := c.size(); p != 0 {
		t.Fatal("revoked entry kept")
	}
	// Bounded.
	for i := range 100 {
		c.store(cacheKey(string(rune(i)), nil), &Principal{}, nil)
		c.store(cacheKey(string(rune(i))+"n", nil), nil, errMalformed)
	}
	if p, n := c.size(); p > 10 || n > 10 {
		t.Fatalf("cache holds %d/%d entries, bound 10", p, n)
	}
}

func TestInternalHeader(t *testing.T) {
	for _, h := range []string{"Ward-Passport", "ward-passport", "WARD_PASSPORT", "ward_x", "X-Ward-User", "x_ward_user", "X_WARD-", "Ward-"} {
		if !internalHeader(h) {
			t.Errorf("%q not internal", h)
		}
	}
	for _, h := range []string{"Ward", "Wardrobe", "X-Warden", "Authorization", "X-Wardx", "", "X-War"} {
		if internalHeader(h) {
			t.Errorf("%q internal", h)
		}
	}
}

func TestTraceparent(t *testing.T) {
	for _, bad := range []string{"", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"} {
		if _, ok := parseTraceparent(bad); ok {
			t.Errorf("accepted %q", bad)
		}
	}
	tc, ok := parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if !ok || tc.traceID != "4bf92f3577b34da6a3ce929d0e0e4736" || tc.flags != "01" {
		t.Fatal(tc, ok)
	}
	if _, ok := parseTraceparent(newTrace().child()); !ok {
		t.Fatal("own traceparent invalid")
	}
}

func FuzzExtract(f *testing.F) {
	f.Add("Bearer a.b.c", "")
	f.Add("Bearer ward_x", "")
	f.Add("", "ward_0123456789abcdef_x_1")
	f.Add("Bearer eyJpc3MiOiJ4In0.eyJpc3MiOiJodHRwczovL2EifQ.x", "")
	f.Fuzz(func(t *testing.T, authz, key string) {
		r, _ := http.NewRequest("GET", "https://x/", nil)
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		if key != "" {
			r.Header.Set("X-Api-Key", key)
		}
		p, err := extract(r, "https://a", func(s string) bool { return s == "https://ext" })
		if err == nil && (p.token == "" || len(p.token) > maxCredential) {
			t.Fatalf("accepted %q", p.token)
		}
		_, _ = parseTraceparent(authz)
		_ = internalHeader(authz)
		_ = cleanPath(authz)
	})
}
