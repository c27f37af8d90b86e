package guard

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
	"math/big"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// testAuthority is an in-process stand-in for ward's authority: a root CA,
// an Ed25519 signing key certified as spiffe://<td>/ward/authority, and a
// Fetcher that serves the current signed list and key set.
type testAuthority struct {
	t       testing.TB
	td      spiffeid.TrustDomain
	bundle  *x509bundle.Bundle
	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	path    string
	key     ed25519.PrivateKey
	chain   []*x509.Certificate
	kid     string

	mu       sync.Mutex
	list     AccessList
	jws      []byte
	fail     error
	listHits atomic.Int64
	keyHits  atomic.Int64
	delay    time.Duration
}

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

func svc(name string) spiffeid.ID { return spiffeid.RequireFromPath(testTD, "/svc/"+name) }

func newTestAuthority(t testing.TB) *testAuthority {
	t.Helper()
	return newTestAuthorityFor(t, testTD, "/ward/authority")
}

func newTestAuthorityFor(t testing.TB, td spiffeid.TrustDomain, path string) *testAuthority {
	t.Helper()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: td.Name()}},
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	a := &testAuthority{
		t: t, td: td, bundle: x509bundle.FromX509Authorities(td, []*x509.Certificate{root}),
		root: root, rootKey: rootKey, path: path,
	}
	a.newKey()
	a.setList(1, nil)
	return a
}

// newKey gives the authority a new Ed25519 signing key, certified by its
// root, and makes the key set publish only that key.
func (a *testAuthority) newKey() {
	a.t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		a.t.Fatal(err)
	}
	now := time.Now()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	leafTmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(12 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		URIs: []*url.URL{{Scheme: "spiffe", Host: a.td.Name(), Path: a.path}},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, a.root, pub, a.rootKey)
	if err != nil {
		a.t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		a.t.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		a.t.Fatal(err)
	}
	a.mu.Lock()
	a.key, a.chain, a.kid = key, []*x509.Certificate{leaf}, base64.RawURLEncoding.EncodeToString(tp)
	a.mu.Unlock()
}

// sign signs l with the authority's key (and kid, typ as ward does).
func (a *testAuthority) sign(l AccessList) []byte {
	a.t.Helper()
	payload, err := json.Marshal(l)
	if err != nil {
		a.t.Fatal(err)
	}
	_, kid, _ := a.current()
	return a.signRaw(payload, JWSType, kid)
}

// current returns the signing key, its ID and its certificate chain.
func (a *testAuthority) current() (ed25519.PrivateKey, string, []*x509.Certificate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.key, a.kid, a.chain
}

func (a *testAuthority) signRaw(payload []byte, typ, kid string) []byte {
	a.t.Helper()
	key, _, _ := a.current()
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ))
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
	if err != nil {
		a.t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		a.t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		a.t.Fatal(err)
	}
	return []byte(s)
}

// listFor builds a list of provider "whoami" with consumers, each allowed
// read on "whoami".
func (a *testAuthority) listFor(version int64, consumers ...string) AccessList {
	l := AccessList{
		Issuer: AuthorityID(a.td).String(), Subject: spiffeid.RequireFromPath(a.td, "/svc/whoami").String(),
		Version: version, IssuedAt: time.Now().Unix(), Consumers: []Consumer{},
	}
	for _, c := range consumers {
		l.Consumers = append(l.Consumers, Consumer{ID: spiffeid.RequireFromPath(a.td, "/svc/"+c).String(), Grants: []Grant{{Resource: "whoami", Actions: []string{"read"}}}})
	}
	return l
}

// setList makes the fetcher serve a new list.
func (a *testAuthority) setList(version int64, consumers []string) {
	l := a.listFor(version, consumers...)
	jws := a.sign(l)
	a.mu.Lock()
	a.list, a.jws = l, jws
	a.mu.Unlock()
}

func (a *testAuthority) keySet() []byte {
	a.t.Helper()
	key, kid, chain := a.current()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: kid, Algorithm: "EdDSA", Use: "sig", Certificates: chain}}}
	b, err := json.Marshal(set)
	if err != nil {
		a.t.Fatal(err)
	}
	return b
}

func (a *testAuthority) keys() *KeySet {
	a.t.Helper()
	ks, err := ParseKeySet(a.keySet(), a.bundle, a.td, time.Now())
	if err != nil {
		a.t.Fatal(err)
	}
	return ks
}

var errDown = errors.New("authority down")

func (a *testAuthority) setDown(down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fail = nil
	if down {
		a.fail = errDown
	}
}

func (a *testAuthority) FetchAccessList(ctx context.Context) ([]byte, error) {
	a.listHits.Add(1)
	a.mu.Lock()
	jws, fail, delay := a.jws, a.fail, a.delay
	a.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	return jws, fail
}

func (a *testAuthority) FetchKeys(ctx context.Context) ([]byte, error) {
	a.keyHits.Add(1)
	a.mu.Lock()
	fail := a.fail
	a.mu.Unlock()
	return a.keySet(), fail
}

// events is a fake Events source.
type events struct {
	mu sync.Mutex
	fn func(kind string, payload []byte)
}

func (e *events) Subscribe(fn func(string, []byte)) func() {
	e.mu.Lock()
	e.fn = fn
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		e.fn = nil
		e.mu.Unlock()
	}
}

func (e *events) emit(kind, payload string) {
	e.mu.Lock()
	fn := e.fn
	e.mu.Unlock()
	if fn != nil {
		fn(kind, []byte(payload))
	}
}

func newTestGuard(t testing.TB, a *testAuthority, mod func(*Config)) *Guard {
	t.Helper()
	cfg := Config{Provider: svc("whoami"), Fetcher: a, Bundle: a.bundle, ResyncInterval: -1}
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// runGuard runs g until the test ends.
func runGuard(t testing.TB, g *Guard) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// setJWS makes the fetcher serve jws as it is.
func (a *testAuthority) setJWS(jws []byte) {
	a.mu.Lock()
	a.jws = jws
	a.mu.Unlock()
}
