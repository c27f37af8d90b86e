package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/authority"
	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/passport"
)

// env is a real authority (SQLite, HTTPS on loopback), a real upstream
// service with its own SVID, and a gateway with its own SVID, all on
// 127.0.0.1.
type env struct {
	t         testing.TB
	ctx       context.Context
	a         *authority.Authority
	url       string // authority
	admin     string // admin token
	trust     *x509.CertPool
	upstream  string // https://127.0.0.1:port of the "orders" service
	upSrc     *identity.Source
	gw        *Gateway
	gwURL     string
	client    *http.Client // external client trusting the bundle
	passports *passport.Verifier
}

// newEnv starts the authority, a service "orders" (provides orders:
// read, write) serving echo, and a gateway with cfg tuned by tune.
func newEnv(t testing.TB, tune func(*Config)) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx}
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	k, err := kms.NewLocal(kek)
	if err != nil {
		t.Fatal(err)
	}
	res, err := authority.Init(ctx, st, k, authority.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.admin = res.AdminToken
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "https://" + ln.Addr().String()
	e.a, err = authority.New(ctx, authority.Config{Store: st, KMS: k, PublicURL: e.url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.a.Close() })
	served := make(chan struct{})
	go func() { _ = e.a.Serve(ctx, ln); close(served) }()
	t.Cleanup(func() { cancel(); <-served })
	e.trust = x509.NewCertPool()
	e.trust.AppendCertsFromPEM(e.a.BundlePEM())
	bundleFile := filepath.Join(dir, "bundle.pem")
	writeFile(t, bundleFile, e.a.BundlePEM())

	// The upstream service.
	e.adminDo("POST", "/v1/teams", map[string]any{"name": "shop"}, nil)
	var svc struct {
		Token string `json:"bootstrap_token"`
	}
	e.adminDo("POST", "/v1/services", map[string]any{"name": "orders", "team": "shop", "level": "L1"}, &svc)
	e.upSrc = e.source(svc.Token, bundleFile)
	e.declare(e.upSrc, "service: orders\nversion: 1.0.0\nprovides:\n  - resource: orders\n    actions: [read, write]\n")
	e.upstream = e.serveUpstream()

	// The gateway.
	tok, err := e.a.CreateComponentToken(ctx, "gateway", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gsrc := e.source(tok, bundleFile)
	edge, err := e.a.ComponentCertificate("edge", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Source: gsrc, Certificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &edge, nil },
		KeyPropagation: time.Millisecond}
	if tune != nil {
		tune(&cfg)
	}
	e.gw, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.gw.Close)
	if err := e.gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.gwURL = "https://" + gln.Addr().String()
	gdone := make(chan struct{})
	go func() { _ = e.gw.Serve(ctx, gln); close(gdone) }()
	t.Cleanup(func() { cancel(); <-gdone })
	e.client = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.trust, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64}}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := osWriteFile(path, data); err != nil {
		t.Fatal(err)
	}
}

// source runs an identity.Source from a bootstrap token.
func (e *env) source(token, bundleFile string) *identity.Source {
	e.t.Helper()
	src, err := identity.New(e.ctx, identity.Config{AuthorityURL: e.url, BootstrapToken: token, BundleFile: bundleFile})
	if err != nil {
		e.t.Fatal(err)
	}
	go func() { _ = src.Run(e.ctx) }()
	e.t.Cleanup(func() { src.Close() })
	return src
}

// declare posts a manifest as the service of src.
func (e *env) declare(src *identity.Source, manifest string) {
	e.t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: src.ClientTLSConfig(identity.AuthorizeAny())}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post(e.url+"/v1/catalog/declarations", "application/yaml", strings.NewReader(manifest))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("declare: %d %s", resp.StatusCode, b)
	}
}

// adminDo calls the admin API and decodes a 2xx answer into out.
func (e *env) adminDo(method, path string, in, out any) {
	e.t.Helper()
	if code, body := e.adminTry(method, path, in, out); code >= 300 {
		e.t.Fatalf("%s %s: %d %s", method, path, code, body)
	}
}

func (e *env) adminTry(method, path string, in, out any) (int, string) {
	e.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.url+path, body)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.trust}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	return resp.StatusCode, string(data)
}

// echo is what the upstream answers: the caller, the headers it got and
// the verified passport.
type echo struct {
	Caller   string              `json:"caller"`
	Path     string              `json:"path"`
	Headers  map[string][]string `json:"headers"`
	Passport *passport.Claims    `json:"passport"`
	Error    string              `json:"passport_error"`
}

// serveUpstream serves the orders service over mTLS (any caller of the
// trust domain) and echoes what it verified.
func (e *env) serveUpstream() string {
	e.t.Helper()
	v, err := passport.NewForSource(e.upSrc, passport.Config{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.passports = v
	e.t.Cleanup(v.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/orders/bench" { // the same small answer on every path of the benchmarks
			_, _ = w.Write([]byte(`{"ok":true}`))
			return
		}
		ans := echo{Path: r.URL.Path, Headers: r.Header}
		if id, ok := identity.PeerIDFromContext(r.Context()); ok {
			ans.Caller = id.String()
		}
		if raw := r.Header.Get(passport.Header); raw != "" {
			c, err := v.Verify(r.Context(), raw)
			if err != nil {
				ans.Error = err.Error()
			}
			ans.Passport = c
		}
		switch r.URL.Query().Get("do") {
		case "sleep":
			time.Sleep(2 * time.Second)
		case "leak":
			w.Header().Set("Ward-Passport", "leaked")
			w.Header().Set("ward_user", "leaked")
			w.Header().Set("X-Ward-Debug", "leaked")
			w.Header().Set("Trailer", "Ward-Passport")
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ans)
		if r.URL.Query().Get("do") == "leak" {
			w.Header().Set("Ward-Passport", "trailer-leak")
			w.Header().Set(http.TrailerPrefix+"X-Ward-Trailer", "leak")
		}
	})
	srv := &http.Server{Handler: e.upSrc.Middleware(h), TLSConfig: e.upSrc.ServerTLSConfig(identity.AuthorizeMemberOf(e.upSrc.ID().TrustDomain())),
		ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	e.t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

// setRoute stores a route and waits until the gateway applied it.
func (e *env) setRoute(name string, body map[string]any) {
	e.t.Helper()
	var r Route
	e.adminDo("PUT", "/v1/routes/"+name, body, &r)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if tbl := e.gw.routes.Load(); tbl != nil {
			for _, rt := range tbl.routes {
				if rt.Name == name && rt.Version >= r.Version {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("route %s not applied by the gateway", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// apiKey creates an API key and returns it and its ID.
func (e *env) apiKey(subject string, scopes ...string) (key, id string) {
	e.t.Helper()
	var out struct {
		ID  string `json:"id"`
		Key string `json:"api_key"`
	}
	e.adminDo("POST", "/v1/api-keys", map[string]any{"subject": subject, "tenant": "acme", "scopes": scopes}, &out)
	return out.Key, out.ID
}

// get sends an external request through the gateway.
func (e *env) get(path string, hdr map[string]string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest("GET", e.gwURL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = append(req.Header[k], v) // verbatim names: spoofing variants
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func decodeEcho(t testing.TB, body []byte) echo {
	t.Helper()
	var ans echo
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatalf("upstream answer: %v: %s", err, body)
	}
	return ans
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func problemType(t testing.TB, resp *http.Response, body []byte) string {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("status %d: content type %q, body %s", resp.StatusCode, ct, body)
	}
	var p struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &p)
	return strings.TrimPrefix(p.Type, "https://ward.dev/problems/")
}
