package credential_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
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

	"github.com/wardsec/ward/credential"
	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/internal/sts"
)

// authority is a real token service over TLS (requesting client
// certificates, trusting their URI SAN as the authority's verification
// would).
type authority struct {
	t   testing.TB
	s   *sts.Service
	srv *httptest.Server
	url string
}

func newAuthority(t testing.TB) *authority {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	k, _ := kms.NewLocal(kek)
	a := &authority{t: t}
	srv := httptest.NewUnstartedServer(nil)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	a.srv, a.url = srv, srv.URL
	a.s, err = sts.New(context.Background(), sts.Config{Store: st, KMS: k, Issuer: srv.URL, TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = a.s.Handler(func(r *http.Request) (sts.Peer, bool) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return sts.Peer{}, false
		}
		id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
		if err != nil {
			return sts.Peer{}, false
		}
		return sts.Peer{ID: id, Cert: r.TLS.PeerCertificates[0]}, true
	})
	return a
}

func (a *authority) client(cert *tls.Certificate) *http.Client {
	tr := a.srv.Client().Transport.(*http.Transport).Clone()
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (a *authority) token(hc *http.Client, form url.Values, id, secret string) string {
	a.t.Helper()
	req, _ := http.NewRequest("POST", a.url+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := hc.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &out) != nil {
		a.t.Fatalf("token: %d %s", resp.StatusCode, body)
	}
	return out.AccessToken
}

func svidCert(t *testing.T, id string) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

type events struct {
	mu sync.Mutex
	fn func(string, []byte)
}

func (e *events) Subscribe(fn func(string, []byte)) func() {
	e.mu.Lock()
	e.fn = fn
	e.mu.Unlock()
	return func() {}
}

func (e *events) emit(kind, payload string) {
	e.mu.Lock()
	fn := e.fn
	e.mu.Unlock()
	fn(kind, []byte(payload))
}

func TestVerifyAccessToken(t *testing.T) {
	a := newAuthority(t)
	ctx := context.Background()
	c, secret, err := a.s.CreateClient(ctx, sts.ClientSpec{Name: "billing", Scopes: []string{"orders:read"}, Audiences: []string{"orders"}})
	if err != nil {
		t.Fatal(err)
	}
	tok := a.token(a.client(nil), url.Values{"grant_type": {"client_credentials"}, "audience": {"orders"}}, c.ID, secret)
	ev := &events{}
	v, err := credential.New(credential.Config{Issuer: a.url, HTTPClient: a.client(nil), Audience: "orders", Events: ev})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.VerifyAccessToken(ctx, tok, nil)
	if err != nil || claims.ClientID != c.ID || !claims.HasScope("orders:read") || claims.Subject != "client:billing" {
		t.Fatalf("verify: %+v %v", claims, err)
	}
	other, _ := credential.New(credential.Config{Issuer: a.url, HTTPClient: a.client(nil), Audience: "payments"})
	if _, err := other.VerifyAccessToken(ctx, tok, nil); !errors.Is(err, credential.ErrInvalid) {
		t.Fatalf("another audience: %v", err)
	}
	tampered := tok[:len(tok)-4] + "AAAA"
	if _, err := v.VerifyAccessToken(ctx, tampered, nil); !errors.Is(err, credential.ErrInvalid) {
		t.Fatalf("tampered: %v", err)
	}
	late, _ := credential.New(credential.Config{Issuer: a.url, HTTPClient: a.client(nil), Now: func() time.Time { return time.Now().Add(time.Hour) }})
	if _, err := late.VerifyAccessToken(ctx, tok, nil); !errors.Is(err, credential.ErrInvalid) {
		t.Fatalf("expired: %v", err)
	}
	// A revocation pushed on the watch stream takes effect at once.
	ev.emit("credential-revocation", `{"kind":"token","id":"`+claims.ID+`","expires_at":"`+time.Now().Add(time.Hour).Format(time.RFC3339)+`"}`)
	if _, err := v.VerifyAccessToken(ctx, tok, nil); !errors.Is(err, credential.ErrRevoked) {
		t.Fatalf("after revocation: %v", err)
	}
}

// TestCertificateBoundToken: a token bound to one client certificate is
// refused over a connection with another (RFC 8705).
func TestCertificateBoundToken(t *testing.T) {
	a := newAuthority(t)
	ctx := context.Background()
	c, _, err := a.s.CreateClient(ctx, sts.ClientSpec{Name: "orders", AuthMethod: store.AuthTLSClient, TLSSubject: "spiffe://example.org/svc/orders"})
	if err != nil {
		t.Fatal(err)
	}
	mine := svidCert(t, "spiffe://example.org/svc/orders")
	tok := a.token(a.client(mine), url.Values{"grant_type": {"client_credentials"}, "client_id": {c.ID}}, "", "")
	v, _ := credential.New(credential.Config{Issuer: a.url, HTTPClient: a.client(nil)})
	if _, err := v.VerifyAccessToken(ctx, tok, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{mine.Leaf}}); err != nil {
		t.Fatalf("with its certificate: %v", err)
	}
	stranger := svidCert(t, "spiffe://example.org/svc/orders") // same ID, another key
	if _, err := v.VerifyAccessToken(ctx, tok, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{stranger.Leaf}}); !errors.Is(err, credential.ErrBindingMismatch) {
		t.Fatalf("with another certificate: %v", err)
	}
	if _, err := v.VerifyAccessToken(ctx, tok, nil); !errors.Is(err, credential.ErrBindingMismatch) {
		t.Fatalf("without a certificate: %v", err)
	}
}

func TestIntrospectAPIKeys(t *testing.T) {
	a := newAuthority(t)
	ctx := context.Background()
	c, secret, _ := a.s.CreateClient(ctx, sts.ClientSpec{Name: "gateway"})
	k, key, err := a.s.CreateAPIKey(ctx, sts.APIKeySpec{Subject: "partner-42", Scopes: []string{"orders:read"}})
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	v, _ := credential.New(credential.Config{Issuer: a.url, HTTPClient: a.client(nil), ClientID: c.ID, ClientSecret: secret, Events: ev})
	info, err := v.Introspect(ctx, key)
	if err != nil || info["sub"] != "partner-42" {
		t.Fatalf("introspect: %v %v", info, err)
	}
	if err := a.s.RevokeAPIKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Introspect(ctx, key); err != nil {
		t.Fatalf("within the cache TTL the cached answer stands: %v", err)
	}
	ev.emit("credential-revocation", `{"kind":"apikey","id":"`+k.ID+`","expires_at":"2100-01-01T00:00:00Z"}`)
	if _, err := v.Introspect(ctx, key); !errors.Is(err, credential.ErrInvalid) {
		t.Fatalf("after the revocation event: %v", err)
	}
	if _, err := v.Introspect(ctx, "nonsense"); !errors.Is(err, credential.ErrInvalid) {
		t.Fatalf("nonsense: %v", err)
	}
}

// TestBoundTokenOverRealConnections: a resource server that verifies with
// r.TLS accepts the bound token over a connection with the client's own
// certificate and refuses it over one with another certificate.
func TestBoundTokenOverRealConnections(t *testing.T) {
	a := newAuthority(t)
	ctx := context.Background()
	c, _, err := a.s.CreateClient(ctx, sts.ClientSpec{Name: "orders", AuthMethod: store.AuthTLSClient, TLSSubject: "spiffe://example.org/svc/orders"})
	if err != nil {
		t.Fatal(err)
	}
	mine := svidCert(t, "spiffe://example.org/svc/orders")
	tok := a.token(a.client(mine), url.Values{"grant_type": {"client_credentials"}, "client_id": {c.ID}}, "", "")
	v, _ := credential.New(credential.Config{Issuer: a.url, HTTPClient: a.client(nil)})
	rs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := v.VerifyAccessToken(r.Context(), strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), r.TLS); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	rs.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	rs.StartTLS()
	defer rs.Close()
	call := func(cert *tls.Certificate) int {
		tr := rs.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
		req, _ := http.NewRequest("GET", rs.URL, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := call(mine); got != http.StatusNoContent {
		t.Fatalf("with the bound certificate: %d", got)
	}
	if got := call(svidCert(t, "spiffe://example.org/svc/orders")); got != http.StatusUnauthorized {
		t.Fatalf("with another certificate: %d", got)
	}
}
