package authority

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/internal/store"
)

// env is a real authority over HTTPS on 127.0.0.1 with a SQLite store in a
// temporary directory.
type env struct {
	t          testing.TB
	a          *Authority
	st         *store.Store
	kms        kms.KMS
	url        string
	adminToken string
	logs       *syncBuffer
	cancel     context.CancelFunc
	served     chan error
	offset     atomic.Int64 // added to the authority's clock

	mu         sync.Mutex
	transports []*http.Transport
}

type envOption func(*Config, *tunables)

func withBus(b Bus) envOption { return func(c *Config, _ *tunables) { c.Bus = b } }
func withConfig(f func(*Config)) envOption {
	return func(c *Config, _ *tunables) { f(c) }
}
func withTunables(f func(*tunables)) envOption {
	return func(_ *Config, t *tunables) { f(t) }
}

// syncBuffer collects logs from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newKMS(t testing.TB) kms.KMS {
	t.Helper()
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	k, err := kms.NewLocal(kek)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// initStore opens a SQLite store in dir and runs Init on it.
func initStore(t testing.TB, dir string, k kms.KMS) (*store.Store, InitResult) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	res, err := Init(ctx, st, k, InitOptions{TrustDomain: spiffeid.RequireTrustDomainFromString("ward.test")})
	if err != nil {
		t.Fatal(err)
	}
	return st, res
}

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	k := newKMS(t)
	st, res := initStore(t, t.TempDir(), k)
	e := startEnv(t, st, k, opts...)
	e.adminToken = res.AdminToken
	return e
}

// startEnv starts an authority replica on an initialized store.
func startEnv(t testing.TB, st *store.Store, k kms.KMS, opts ...envOption) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg := Config{
		Store:     st,
		KMS:       k,
		PublicURL: "https://" + ln.Addr().String(),
		Logger:    slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		SVIDTTL:   map[string]time.Duration{"L3": 15 * time.Minute},
	}
	tun := defaultTunables
	for _, o := range opts {
		o(&cfg, &tun)
	}
	cfg.tun = &tun
	e := &env{t: t, st: st, kms: k, url: cfg.PublicURL, logs: logs, served: make(chan error, 1)}
	cfg.Now = func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }
	a, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.served <- a.Serve(ctx, ln) }()
	t.Cleanup(func() {
		e.closeClients()
		cancel()
		if err := <-e.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if logs := logs.String(); strings.Contains(logs, adminTokenPrefix) || strings.Contains(logs, bootstrapTokenPrefix) {
			t.Errorf("a token leaked into the logs:\n%s", logs)
		}
	})
	return e
}

// roots is the authority's current bundle as a pool.
func (e *env) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(e.a.BundlePEM()) {
		e.t.Fatal("empty bundle")
	}
	return pool
}

// client returns an HTTPS client trusting the current bundle, presenting
// cert when non-nil.
func (e *env) client(cert *tls.Certificate) *http.Client {
	roots := e.roots()
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	e.mu.Lock()
	e.transports = append(e.transports, tr)
	e.mu.Unlock()
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// closeClients closes the idle connections of every client made by
// client, so that graceful shutdown need not wait for HTTP/2 peers.
func (e *env) closeClients() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, tr := range e.transports {
		tr.CloseIdleConnections()
	}
}

// do sends a request with an optional bearer token and JSON (or raw []byte)
// body and returns the status and body.
func (e *env) do(c *http.Client, method, path, token string, body any) (*http.Response, []byte) {
	e.t.Helper()
	resp, data, err := e.try(c, method, path, token, body)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, data
}

func (e *env) try(c *http.Client, method, path, token string, body any) (*http.Response, []byte, error) {
	if c == nil {
		c = e.client(nil)
	}
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, nil, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		return nil, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp, data, err
}

// admin sends an admin request and requires the wanted status.
func (e *env) admin(method, path string, body any, want int, out any) {
	e.t.Helper()
	resp, data := e.do(nil, method, path, e.adminToken, body)
	if resp.StatusCode != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
}

// wantProblem checks a problem+json answer of status and slug.
func wantProblem(t *testing.T, resp *http.Response, body []byte, status int, slug string) *problem.Problem {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != problem.ContentType {
		t.Fatalf("content type %q, want %q: %s", ct, problem.ContentType, body)
	}
	var p problem.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	if slug != "" && p.Type != problem.TypeBase+slug {
		t.Fatalf("problem type %q, want %q: %s", p.Type, problem.TypeBase+slug, body)
	}
	if p.Status != status {
		t.Fatalf("problem status %d, want %d", p.Status, status)
	}
	return &p
}

// createService creates team (if needed) and service and returns the
// bootstrap token.
func (e *env) createService(team, name, level string) string {
	e.t.Helper()
	resp, body := e.do(nil, "POST", "/v1/teams", e.adminToken, map[string]string{"name": team})
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
		e.t.Fatalf("create team: %d %s", resp.StatusCode, body)
	}
	var svc struct {
		BootstrapToken string `json:"bootstrap_token"`
	}
	e.admin("POST", "/v1/services", map[string]string{"name": name, "team": team, "level": level}, http.StatusCreated, &svc)
	return svc.BootstrapToken
}

// svid is a workload's key and issued chain.
type svid struct {
	resp  svidResponse
	key   crypto.Signer
	certs []*x509.Certificate
}

func (s *svid) tlsCert() *tls.Certificate {
	c := &tls.Certificate{PrivateKey: s.key, Leaf: s.certs[0]}
	for _, x := range s.certs {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

func (s *svid) serial() string { return ca.SerialHex(s.certs[0].SerialNumber) }

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrPEM makes a CSR for key, optionally asking for a URI SAN.
func csrPEM(t testing.TB, key crypto.Signer, uri string, mod func(*x509.CertificateRequest)) string {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// caTrueExtension is a basicConstraints extension asking for CA:true.
func caTrueExtension(t testing.TB) func(*x509.CertificateRequest) {
	return func(r *x509.CertificateRequest) {
		val, err := asn1.Marshal(struct {
			IsCA bool `asn1:"optional"`
		}{true})
		if err != nil {
			t.Fatal(err)
		}
		r.ExtraExtensions = append(r.ExtraExtensions, pkixExtension(asn1.ObjectIdentifier{2, 5, 29, 19}, val))
	}
}

// fetch exchanges a bootstrap token for an SVID.
func (e *env) fetch(token string) *svid {
	e.t.Helper()
	key := newKey(e.t)
	resp, body := e.do(nil, "POST", "/v1/svid", token, map[string]string{"csr": csrPEM(e.t, key, "", nil)})
	if resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("POST /v1/svid: %d %s", resp.StatusCode, body)
	}
	return parseSVIDResponse(e.t, body, key)
}

func parseSVIDResponse(t testing.TB, body []byte, key crypto.Signer) *svid {
	t.Helper()
	var r svidResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	certs, err := ca.ParseCertsPEM([]byte(r.SVIDPEM))
	if err != nil {
		t.Fatal(err)
	}
	return &svid{resp: r, key: key, certs: certs}
}

// renew renews s over mTLS on c (which must present s).
func (e *env) renew(c *http.Client, s *svid) (*http.Response, []byte) {
	e.t.Helper()
	key := newKey(e.t)
	resp, body := e.do(c, "POST", "/v1/svid/renew", "", map[string]string{"csr": csrPEM(e.t, key, "", nil)})
	return resp, body
}

// watchStream is an open GET /v1/watch.
type watchStream struct {
	events chan wireEvent
	errs   chan error
	close  func()
}

func (e *env) watch(c *http.Client, since string) (*watchStream, error) {
	ctx, cancel := context.WithCancel(context.Background())
	path := "/v1/watch"
	if since != "" {
		path += "?since=" + since
	}
	req, err := http.NewRequestWithContext(ctx, "GET", e.url+path, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	c2 := *c
	c2.Timeout = 0
	resp, err := c2.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, &statusError{resp: resp, body: body}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		cancel()
		return nil, errors.New("watch content type " + ct)
	}
	ws := &watchStream{events: make(chan wireEvent, 1024), errs: make(chan error, 1), close: func() { cancel(); resp.Body.Close() }}
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev wireEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ws.errs <- err
				return
			}
			ws.events <- ev
		}
		ws.errs <- sc.Err()
		close(ws.events)
	}()
	return ws, nil
}

type statusError struct {
	resp *http.Response
	body []byte
}

func (s *statusError) Error() string { return s.resp.Status + ": " + string(s.body) }

// next returns the next non-heartbeat event, failing after timeout.
func (w *watchStream) next(t testing.TB, timeout time.Duration) wireEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-w.events:
			if !ok {
				t.Fatal("watch stream ended")
			}
			if ev.Kind == kindHeartbeat {
				continue
			}
			return ev
		case <-deadline:
			t.Fatal("no watch event in time")
		}
	}
}

// signingKeyOf fetches /v1/bundle and verifies the signing certificate
// against the bundle it carries; it returns the public key.
func (e *env) signingKeyOf() (ed25519.PublicKey, *x509.CertPool) {
	e.t.Helper()
	var b struct {
		TrustDomain    string `json:"trust_domain"`
		BundlePEM      string `json:"bundle_pem"`
		Version        int64  `json:"version"`
		SigningCertPEM string `json:"signing_cert_pem"`
	}
	resp, body := e.do(nil, "GET", "/v1/bundle", "", nil)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("bundle: %d %s", resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &b); err != nil {
		e.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(b.BundlePEM)) {
		e.t.Fatal("empty bundle_pem")
	}
	return verifySigningCert(e.t, []byte(b.SigningCertPEM), roots), roots
}

func verifySigningCert(t testing.TB, chainPEM []byte, roots *x509.CertPool) ed25519.PublicKey {
	t.Helper()
	chain, err := ca.ParseCertsPEM(chainPEM)
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("signing certificate does not verify: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://ward.test/ward/authority" {
		t.Fatalf("signing certificate URIs %v", leaf.URIs)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		t.Fatal("signing certificate lacks digitalSignature")
	}
	pub, ok := leaf.PublicKey.(ed25519.PublicKey)
	if !ok {
		t.Fatalf("signing key is %T", leaf.PublicKey)
	}
	return pub
}

// verifyEvent checks an event's signature and returns its payload.
func verifyEvent(t *testing.T, pub ed25519.PublicKey, ev wireEvent, out any) {
	t.Helper()
	if !ed25519.Verify(pub, ev.Payload, ev.Sig) {
		t.Fatalf("bad signature on %s event %d", ev.Kind, ev.Seq)
	}
	if err := json.Unmarshal(ev.Payload, out); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or fails after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// memBus is an in-memory Bus connecting replicas in one test.
type memBus struct {
	mu   sync.Mutex
	subs map[int]func(string, []byte)
	next int
}

func newMemBus() *memBus { return &memBus{subs: map[int]func(string, []byte){}} }

func (b *memBus) Publish(_ context.Context, subject string, data []byte) error {
	b.mu.Lock()
	fns := make([]func(string, []byte), 0, len(b.subs))
	for _, fn := range b.subs {
		fns = append(fns, fn)
	}
	b.mu.Unlock()
	for _, fn := range fns {
		go fn(subject, append([]byte(nil), data...))
	}
	return nil
}

func (b *memBus) Subscribe(subject string, fn func(string, []byte)) (func() error, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := b.next
	b.next++
	b.subs[id] = func(s string, d []byte) {
		if s == subject {
			fn(s, d)
		}
	}
	return func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs, id)
		return nil
	}, nil
}

var _ Bus = (*memBus)(nil)

func pkixExtension(id asn1.ObjectIdentifier, val []byte) pkix.Extension {
	return pkix.Extension{Id: id, Value: val}
}

// watchPastSnapshot opens a watch stream as a fresh service "mon" of team
// "ops", reads its snapshot and closes it when the test ends; it returns
// the stream and the watcher's SVID.
func (e *env) watchPastSnapshot() (*watchStream, *svid) {
	e.t.Helper()
	watcher := e.fetch(e.createService("ops", "mon", "L2"))
	ws, err := e.watch(e.client(watcher.tlsCert()), "")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(ws.close)
	ws.next(e.t, 5*time.Second)
	return ws, watcher
}
