package gateway

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardsec/ward/credential"
	"github.com/wardsec/ward/identity"
)

// BenchmarkGateway runs the same upstream (mTLS, a small JSON answer)
// behind a bare httputil.ReverseProxy with the same mTLS client and behind
// the gateway, in one run, with parallel HTTPS clients. The gateway paths:
// cached credential (API key hit), JWT verified offline on every request
// (cache off), API key introspected on every request (caches off). Each
// reports p50 and p99 latency; every gateway request mints a passport.
func BenchmarkGateway(b *testing.B) {
	fast := func(c *Config) { c.PreAuthRate, c.PreAuthBurst, c.RouteRate, c.RouteBurst = 1e9, 1e9, 1e9, 1e9 }
	e := newEnv(b, fast)
	e.setRoute("orders", ordersRoute(map[string]any{"upstream": e.upstream}))
	key, _ := e.apiKey("alice")
	bare := e.bareProxy()

	b.Run("bare-reverse-proxy", func(b *testing.B) { e.load(b, bare+"/orders/bench", nil) })
	b.Run("gateway-cached", func(b *testing.B) { e.load(b, e.gwURL+"/orders/bench", bearer(key)) })

	// Caches off: every request verifies its credential.
	m := newEnv(b, func(c *Config) { fast(c); c.CacheMaxTTL = time.Nanosecond })
	m.setRoute("orders", ordersRoute(map[string]any{"upstream": m.upstream}))
	tok := m.accessToken()
	b.Run("gateway-jwt-uncached", func(b *testing.B) { m.load(b, m.gwURL+"/orders/bench", bearer(tok)) })

	in := newEnv(b, func(c *Config) { fast(c); c.CacheMaxTTL = time.Nanosecond })
	v, err := credential.New(credential.Config{Issuer: in.url, HTTPClient: in.gw.hc, APIKeyCacheTTL: time.Nanosecond})
	if err != nil {
		b.Fatal(err)
	}
	in.gw.verifier = v
	in.setRoute("orders", ordersRoute(map[string]any{"upstream": in.upstream}))
	ikey, _ := in.apiKey("alice")
	b.Run("gateway-introspection", func(b *testing.B) { in.load(b, in.gwURL+"/orders/bench", bearer(ikey)) })
}

// load sends b.N requests from parallel clients and reports latency
// percentiles.
func (e *env) load(b *testing.B, target string, hdr map[string]string) {
	var mu sync.Mutex
	lat := make([]time.Duration, 0, min(b.N, 1<<20))
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			req, _ := http.NewRequest("GET", target, nil)
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			start := time.Now()
			resp, err := e.client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
			local = append(local, time.Since(start))
		}
		mu.Lock()
		if len(lat) < cap(lat) {
			lat = append(lat, local...)
		}
		mu.Unlock()
	})
	b.StopTimer()
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}

// bareProxy serves HTTPS with a plain httputil.ReverseProxy to the
// upstream, over the same mTLS client the gateway uses.
func (e *env) bareProxy() string {
	e.t.Helper()
	up, _ := url.Parse(e.upstream)
	tc := e.gw.src.ClientTLSConfig(identity.AuthorizeID(e.upSrc.ID()))
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(up); pr.SetXForwarded() },
		Transport: &http.Transport{TLSClientConfig: tc, MaxIdleConns: 1024, MaxIdleConnsPerHost: 256},
	}
	edge, err := e.a.ComponentCertificate("edge", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		e.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	srv := &http.Server{Handler: rp, TLSConfig: &tls.Config{Certificates: []tls.Certificate{edge}}, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	e.t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

// accessToken registers an OAuth client and gets a JWT access token.
func (e *env) accessToken() string {
	e.t.Helper()
	var c struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	e.adminDo("POST", "/v1/oauth-clients", map[string]any{"name": "bench", "grant_types": []string{"client_credentials"}, "scopes": []string{"orders.read"}}, &c)
	req, _ := http.NewRequest("POST", e.url+"/oauth2/token", strings.NewReader("grant_type=client_credentials&scope=orders.read"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.trust}}}
	resp, err := hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"access_token"`
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || jsonUnmarshalBounded(body, &out) != nil || out.Token == "" {
		e.t.Fatalf("token: %d %s", resp.StatusCode, body)
	}
	return out.Token
}
