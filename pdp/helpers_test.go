package pdp

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

// testAuthority stands in for ward's authority: a root CA, an Ed25519
// key certified as spiffe://example.org/ward/authority, and a Fetcher that
// serves the current bundle.
type testAuthority struct {
	t      testing.TB
	bundle *x509bundle.Bundle
	key    ed25519.PrivateKey
	kid    string
	jwks   []byte

	mu       sync.Mutex
	jws      []byte
	etag     string
	down     bool
	reports  []Status
	fetches  int
	noPolicy bool
}

func newCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{{Scheme: "spiffe", Host: testTD.Name()}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	return root, rootKey
}

func newTestAuthority(t testing.TB) *testAuthority {
	t.Helper()
	root, rootKey := newCA(t)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(12 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		URIs: []*url.URL{{Scheme: "spiffe", Host: testTD.Name(), Path: "/ward/authority"}}}
	der, err := x509.CreateCertificate(rand.Reader, leafTmpl, root, pub, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	jwk := jose.JSONWebKey{Key: pub}
	tp, _ := jwk.Thumbprint(crypto.SHA256)
	a := &testAuthority{t: t, bundle: x509bundle.FromX509Authorities(testTD, []*x509.Certificate{root}), key: key,
		kid: base64.RawURLEncoding.EncodeToString(tp), noPolicy: true}
	a.jwks, _ = json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: a.kid, Algorithm: "EdDSA", Use: "sig", Certificates: []*x509.Certificate{leaf}}}})
	return a
}

func (a *testAuthority) keySet() *guard.KeySet {
	ks, err := guard.ParseKeySet(a.jwks, a.bundle, testTD, time.Now())
	if err != nil {
		a.t.Fatal(err)
	}
	return ks
}

// signWith signs payload as a bundle JWS with key.
func signWith(t testing.TB, key ed25519.PrivateKey, kid, typ string, payload []byte) []byte {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := obj.CompactSerialize()
	return []byte(s)
}

// content makes a version from policy text.
func content(version int64, text string) Content {
	files := []File{{Name: "p.cedar", Text: text}}
	return Content{Version: version, Policies: files, Digest: Digest(files, "")}
}

// bundle signs a bundle of domain "orders".
func (a *testAuthority) bundleJWS(revision int64, active Content, shadow *Content) []byte {
	b := Bundle{Issuer: "spiffe://example.org/ward/authority", Domain: "orders", Revision: revision, IssuedAt: time.Now().Unix(), Active: active, Shadow: shadow}
	payload, _ := json.Marshal(b)
	return signWith(a.t, a.key, a.kid, JWSType, payload)
}

// publish makes the fetcher serve a bundle.
func (a *testAuthority) publish(revision int64, active Content, shadow *Content) {
	jws := a.bundleJWS(revision, active, shadow)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.jws, a.etag, a.noPolicy = jws, fmt.Sprintf(`"orders.%d"`, revision), false
}

var errDown = errors.New("authority down")

func (a *testAuthority) FetchBundle(_ context.Context, etag string) ([]byte, string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fetches++
	switch {
	case a.down:
		return nil, "", errDown
	case a.noPolicy:
		return nil, "", ErrNoPolicy
	case etag == a.etag:
		return nil, etag, ErrNotModified
	}
	return a.jws, a.etag, nil
}

func (a *testAuthority) FetchKeys(context.Context) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down {
		return nil, errDown
	}
	return a.jwks, nil
}

func (a *testAuthority) ReportStatus(_ context.Context, s Status) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reports = append(a.reports, s)
	return nil
}

func (a *testAuthority) lastReport() (Status, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.reports) == 0 {
		return Status{}, false
	}
	return a.reports[len(a.reports)-1], true
}

func (a *testAuthority) setDown(down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down = down
}

// memEvents is an Events a test pushes to.
type memEvents struct {
	mu sync.Mutex
	fn func(string, []byte)
}

func (m *memEvents) Subscribe(fn func(kind string, payload []byte)) func() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fn = fn
	return func() {}
}

func (m *memEvents) send(kind string, payload any) {
	b, _ := json.Marshal(payload)
	m.mu.Lock()
	fn := m.fn
	m.mu.Unlock()
	if fn != nil {
		fn(kind, b)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
