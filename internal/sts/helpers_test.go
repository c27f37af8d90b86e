package sts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/internal/store"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

const testIssuer = "https://issuer.example.org"

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t       testing.TB
	s       *Service
	st      *store.Store
	clock   *clock
	srv     *httptest.Server
	revoked []string
	mu      sync.Mutex
}

// newFixture serves a Service over real TLS. The server requests (but
// does not require) client certificates; peer trusts the URI SAN of any
// presented certificate, standing in for the authority's verification.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "ward.db"))
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
	f := &fixture{t: t, st: st, clock: &clock{t: time.Now()}}
	f.s, err = New(context.Background(), Config{
		Store: st, KMS: k, Issuer: testIssuer, TrustDomain: testTD, Now: f.clock.now,
		OnRevoke: func(_ context.Context, kind, id string, _ time.Time) error {
			f.mu.Lock()
			f.revoked = append(f.revoked, kind+":"+id)
			f.mu.Unlock()
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	peer := func(r *http.Request) (Peer, bool) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return Peer{}, false
		}
		id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
		if err != nil {
			return Peer{}, false
		}
		return Peer{ID: id, Cert: r.TLS.PeerCertificates[0]}, true
	}
	f.srv = httptest.NewUnstartedServer(f.s.Handler(peer))
	f.srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

// client returns an HTTPS client of the fixture, presenting cert if set.
func (f *fixture) client(cert *tls.Certificate) *http.Client {
	tr := f.srv.Client().Transport.(*http.Transport).Clone()
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// post sends a form; basic sets HTTP Basic credentials.
func (f *fixture) post(c *http.Client, path string, form url.Values, basic ...string) (int, map[string]any, http.Header) {
	f.t.Helper()
	if c == nil {
		c = f.client(nil)
	}
	req, err := http.NewRequest("POST", f.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if len(basic) == 2 {
		req.SetBasicAuth(url.QueryEscape(basic[0]), url.QueryEscape(basic[1]))
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if err := json.Unmarshal(body, &out); err != nil {
		f.t.Fatalf("%s: %d %q is not JSON", path, resp.StatusCode, body)
	}
	return resp.StatusCode, out, resp.Header
}

func (f *fixture) newClient(spec ClientSpec) (store.OAuthClient, string) {
	f.t.Helper()
	c, secret, err := f.s.CreateClient(context.Background(), spec)
	if err != nil {
		f.t.Fatal(err)
	}
	return c, secret
}

// token gets a client-credentials token with basic auth.
func (f *fixture) token(id, secret string, extra url.Values) string {
	f.t.Helper()
	form := url.Values{"grant_type": {GrantClientCredentials}}
	for k, v := range extra {
		form[k] = v
	}
	status, out, _ := f.post(nil, "/oauth2/token", form, id, secret)
	if status != http.StatusOK {
		f.t.Fatalf("token: %d %v", status, out)
	}
	return out["access_token"].(string)
}

// svidCert makes a self-signed certificate with a SPIFFE URI SAN.
func svidCert(t testing.TB, id string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
