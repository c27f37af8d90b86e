package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	testTD = spiffeid.RequireTrustDomainFromString("ward.test")
	testID = spiffeid.RequireFromPath(testTD, "/svc/web")
)

// testNow is "now" at second precision, so encoded times compare exactly.
func testNow() time.Time { return time.Now().Truncate(time.Second) }

// newChain returns a root (10 years) and an intermediate (1 year) at now.
func newChain(t testing.TB, now time.Time) (root, inter *Signer) {
	t.Helper()
	root, err := NewRoot(testTD, 10*365*24*time.Hour, now)
	if err != nil {
		t.Fatalf("NewRoot: %v", err)
	}
	inter, err = NewIntermediate(root, testTD, "payments", 365*24*time.Hour, now)
	if err != nil {
		t.Fatalf("NewIntermediate: %v", err)
	}
	return root, inter
}

func mustP256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// RSA keys are slow to generate: make each size once per test binary.
var (
	rsaKeysMu sync.Mutex
	rsaKeys   = map[int]*rsa.PrivateKey{}
)

func mustRSA(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	rsaKeysMu.Lock()
	defer rsaKeysMu.Unlock()
	if k, ok := rsaKeys[bits]; ok {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	rsaKeys[bits] = k
	return k
}

func mustEd25519(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrDER builds a CSR signed by key from tmpl (nil = empty subject O=test).
func csrDER(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{Organization: []string{"test"}}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func mustParseCSR(t testing.TB, der []byte) *x509.CertificateRequest {
	t.Helper()
	csr, err := ParseCSR(der)
	if err != nil {
		t.Fatalf("ParseCSR: %v", err)
	}
	return csr
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// issue issues a leaf for testID from a fresh P-256 CSR.
func issue(t testing.TB, s *Signer, now time.Time, ttl time.Duration) *x509.Certificate {
	t.Helper()
	leaf, err := s.IssueSVID(IssueRequest{
		CSR:        mustParseCSR(t, csrDER(t, mustP256(t), nil)),
		ID:         testID,
		InstanceID: "instance-1",
		TTL:        ttl,
		Now:        now,
		OCSPURL:    "http://127.0.0.1:1/ocsp",
		CRLURL:     "http://127.0.0.1:1/crl/int.crl",
	})
	if err != nil {
		t.Fatalf("IssueSVID: %v", err)
	}
	return leaf
}

func mustECDSA(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// basicConstraintsExt is a requested basicConstraints extension.
func basicConstraintsExt(t testing.TB, isCA bool) pkix.Extension {
	t.Helper()
	var v []byte
	var err error
	if isCA {
		v, err = asn1.Marshal(struct{ IsCA bool }{true})
	} else {
		v, err = asn1.Marshal(struct{}{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: v}
}
