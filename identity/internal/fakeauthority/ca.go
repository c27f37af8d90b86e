// Package fakeauthority is a small in-process stand-in for the ward
// authority, for the identity package's unit tests and examples. It
// speaks the wire protocol of the spec (GET /v1/bundle, POST /v1/svid,
// POST /v1/svid/renew, GET /v1/watch, POST /ocsp) over real TLS on
// 127.0.0.1, with a throwaway CA built from crypto/x509. It is not the
// authority: no store, no admin API, no policy. End-to-end tests use the
// real authority.
//
//	fa, err := fakeauthority.Start(fakeauthority.Options{SVIDTTL: 3 * time.Second})
//	defer fa.Close()
//	fa.AddToken("wardbt_web", spiffeid.RequireFromString("spiffe://ward.test/svc/web"))
//	// identity.Config{AuthorityURL: fa.URL(), BootstrapToken: "wardbt_web", RootFingerprint: fa.RootFingerprint()}
package fakeauthority

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is a signing certificate authority (root or intermediate).
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Chain is Cert followed by its parents, excluding the root: what a
	// leaf it issues sends after itself. Empty for a root.
	Chain []*x509.Certificate
	td    spiffeid.TrustDomain
}

// NewRoot creates a self-signed root for td, valid from an hour ago for a
// day.
func NewRoot(td spiffeid.TrustDomain) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{Organization: []string{"ward"}, CommonName: "fake root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, td: td}, nil
}

// NewIntermediate creates an intermediate CA under ca.
func (ca *CA) NewIntermediate(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{Organization: []string{"ward"}, CommonName: "fake intermediate " + name},
		NotBefore:             ca.Cert.NotBefore,
		NotAfter:              ca.Cert.NotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{ca.td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Chain: append([]*x509.Certificate{cert}, ca.Chain...), td: ca.td}, nil
}

// LeafOptions describes a leaf certificate.
type LeafOptions struct {
	ID        spiffeid.ID
	PublicKey crypto.PublicKey
	TTL       time.Duration // default 1h
	Now       time.Time     // default time.Now(); NotBefore is Now-30s like the real CA
	OCSPURL   string
	DNSNames  []string
	IPs       []net.IP
	KeyUsage  x509.KeyUsage      // default digitalSignature
	ExtUsage  []x509.ExtKeyUsage // default serverAuth+clientAuth
	NoExtUse  bool               // leave ExtKeyUsage empty (signing certificates)
}

// IssueLeaf signs a leaf certificate.
func (ca *CA) IssueLeaf(o LeafOptions) (*x509.Certificate, error) {
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.KeyUsage == 0 {
		o.KeyUsage = x509.KeyUsageDigitalSignature
	}
	if o.ExtUsage == nil && !o.NoExtUse {
		o.ExtUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	notBefore := o.Now.Add(-30 * time.Second)
	if notBefore.Before(ca.Cert.NotBefore) {
		notBefore = ca.Cert.NotBefore
	}
	notAfter := o.Now.Add(o.TTL)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{Organization: []string{"ward"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              o.KeyUsage,
		ExtKeyUsage:           o.ExtUsage,
		URIs:                  []*url.URL{o.ID.URL()},
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPs,
	}
	if o.OCSPURL != "" {
		tmpl.OCSPServer = []string{o.OCSPURL}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, o.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// NewSVID generates a key and an SVID for id issued by ca (for test
// peers that do not use the SDK).
func (ca *CA) NewSVID(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.IssueLeaf(LeafOptions{ID: id, PublicKey: &key.PublicKey, TTL: ttl})
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: append([]*x509.Certificate{leaf}, ca.Chain...), PrivateKey: key}, nil
}

// Fingerprint is the hex SHA-256 of a certificate.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// EncodePEM encodes certificates as PEM.
func EncodePEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func newSerial() *big.Int {
	for {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			panic(fmt.Sprintf("fakeauthority: random: %v", err))
		}
		n := new(big.Int).SetBytes(b)
		if n.Sign() > 0 {
			return n
		}
	}
}
