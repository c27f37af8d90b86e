// Package ca is ward's certificate authority: pure X.509 crypto with no store
// and no network. It creates root and intermediate CAs, validates workload
// CSRs, issues X509-SVIDs, and signs CRLs and OCSP responses.
//
// The authority uses it like this:
//
//	td := spiffeid.RequireTrustDomainFromString("ward.test")
//	root, err := ca.NewRoot(td, 10*365*24*time.Hour, time.Now())
//	inter, err := ca.NewIntermediate(root, td, "payments", 365*24*time.Hour, time.Now())
//
//	csr, err := ca.ParseCSR(body) // untrusted bytes: size, signature, key and SAN checks
//	leaf, err := inter.IssueSVID(ca.IssueRequest{
//		CSR:        csr,
//		ID:         spiffeid.RequireFromPath(td, "/svc/web"),
//		InstanceID: instanceID,
//		TTL:        time.Hour,
//		Now:        time.Now(),
//		OCSPURL:    "https://authority.example:8443/ocsp",
//		CRLURL:     "https://authority.example:8443/crl/" + caID + ".crl",
//	})
//	serial := ca.SerialHex(leaf.SerialNumber)
//
//	crl, err := inter.CreateCRL(entries, crlNumber, now, now.Add(time.Hour))
//
//	req, err := ca.ParseOCSPRequest(body) // untrusted bytes, at most 4 KiB
//	if inter.OCSPRequestMatches(req) {    // pick the CA that issued the cert
//		resp, err := inter.OCSPResponse(ca.OCSPStatus{
//			Serial: req.SerialNumber, Status: ocsp.Good, Now: now, IssuerHash: req.HashAlgorithm,
//		})
//	}
//
// CA keys are ECDSA P-256. They leave the package only as PKCS#8
// (MarshalKey, EncodeKeyPEM), for the caller to seal with a kms.KMS.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Backdate is how far before "now" a certificate's NotBefore is set, so a
// peer whose clock is slightly behind still accepts it. NotBefore is never
// earlier than the issuer's NotBefore.
const Backdate = 30 * time.Second

// Organization is the subject O of every certificate ward issues.
const Organization = "ward"

// Errors about CA material and issuance parameters.
var (
	// ErrNotCA reports a Signer whose certificate cannot sign certificates.
	ErrNotCA = errors.New("ca: certificate is not a CA")
	// ErrKeyMismatch reports a private key that does not match the certificate.
	ErrKeyMismatch = errors.New("ca: private key does not match certificate")
	// ErrIssuerExpired reports an issuer whose validity leaves no room for the
	// requested certificate (it has expired or is not yet valid).
	ErrIssuerExpired = errors.New("ca: issuer certificate is not valid at this time")
	// ErrTTL reports a non-positive lifetime.
	ErrTTL = errors.New("ca: ttl must be positive")
	// ErrTrustDomain reports a SPIFFE ID or CA outside the issuer's trust domain.
	ErrTrustDomain = errors.New("ca: trust domain mismatch")
)

// Signer is a CA that can sign: its certificate and private key.
type Signer struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewSigner checks that cert is a CA certificate allowed to sign
// certificates and CRLs and that key is its private key.
func NewSigner(cert *x509.Certificate, key crypto.Signer) (*Signer, error) {
	if cert == nil || key == nil {
		return nil, errors.New("ca: nil certificate or key")
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, ErrNotCA
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, ErrKeyMismatch
	}
	return &Signer{Cert: cert, Key: key}, nil
}

// NewSignerFromPEM builds a Signer from a PEM certificate (the first
// CERTIFICATE block; any following chain is ignored) and a PEM private key
// ("PRIVATE KEY" PKCS#8 or "EC PRIVATE KEY" SEC 1).
func NewSignerFromPEM(certPEM, keyPEM []byte) (*Signer, error) {
	certs, err := ParseCertsPEM(certPEM)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("ca: no PEM private key")
	}
	var key crypto.Signer
	switch block.Type {
	case "PRIVATE KEY":
		key, err = ParseKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("ca: unsupported PEM key type %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: parse private key: %w", err)
	}
	return NewSigner(certs[0], key)
}

// MarshalKey encodes a private key as PKCS#8 DER, ready to be sealed by a KMS.
func MarshalKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: marshal key: %w", err)
	}
	return der, nil
}

// ParseKey decodes a PKCS#8 DER private key produced by MarshalKey.
func ParseKey(der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: parse key: %T is not a signer", k)
	}
	return s, nil
}

// EncodeKeyPEM encodes a private key as a PKCS#8 "PRIVATE KEY" PEM block.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := MarshalKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// GenerateKey returns a new ECDSA P-256 private key, the key type of every
// ward CA and of the SVIDs the SDK requests.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate key: %w", err)
	}
	return k, nil
}

// NewRoot creates a self-signed root CA for td, valid from now (backdated by
// Backdate) for ttl: CA:true with a path length of 1 (root → intermediate →
// leaf), keyCertSign|cRLSign, URI SAN spiffe://td, subject O=ward,
// CN="ward root <first 8 hex digits of the key id>". A zero now means
// time.Now().
func NewRoot(td spiffeid.TrustDomain, ttl time.Duration, now time.Time) (*Signer, error) {
	if td.IsZero() {
		return nil, errors.New("ca: empty trust domain")
	}
	if ttl <= 0 {
		return nil, ErrTTL
	}
	now = orNow(now)
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{Organization},
			CommonName:   "ward root " + hex.EncodeToString(skid[:4]),
		},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		SubjectKeyId:          skid,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	cert, err := create(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return &Signer{Cert: cert, Key: key}, nil
}

// NewIntermediate creates an intermediate CA signed by parent: CA:true with
// MaxPathLen 0 (it signs leaves only), keyCertSign|cRLSign, URI SAN
// spiffe://td, subject O=ward, CN="ward intermediate <name>". It is valid
// from now (backdated, not before the parent) for ttl, clipped to the
// parent's NotAfter. A zero now means time.Now().
func NewIntermediate(parent *Signer, td spiffeid.TrustDomain, name string, ttl time.Duration, now time.Time) (*Signer, error) {
	if err := parent.check(); err != nil {
		return nil, err
	}
	if td.IsZero() {
		return nil, errors.New("ca: empty trust domain")
	}
	if ptd, ok := parent.TrustDomain(); ok && ptd != td {
		return nil, fmt.Errorf("%w: parent is %s, want %s", ErrTrustDomain, ptd, td)
	}
	if ttl <= 0 {
		return nil, ErrTTL
	}
	now = orNow(now)
	notBefore, notAfter, err := parent.validity(now, ttl)
	if err != nil {
		return nil, err
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	cn := "ward intermediate"
	if name != "" {
		cn += " " + name
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{Organization},
			CommonName:   cn,
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	cert, err := create(tmpl, parent.Cert, key.Public(), parent.Key)
	if err != nil {
		return nil, err
	}
	return &Signer{Cert: cert, Key: key}, nil
}

// TrustDomain returns the trust domain named by the CA certificate's URI SAN
// (spiffe://td), if it has exactly one.
func (s *Signer) TrustDomain() (spiffeid.TrustDomain, bool) {
	if s == nil || s.Cert == nil || len(s.Cert.URIs) != 1 {
		return spiffeid.TrustDomain{}, false
	}
	id, err := spiffeid.FromURI(s.Cert.URIs[0])
	if err != nil {
		return spiffeid.TrustDomain{}, false
	}
	return id.TrustDomain(), true
}

func (s *Signer) check() error {
	if s == nil || s.Cert == nil || s.Key == nil {
		return errors.New("ca: nil signer")
	}
	if !s.Cert.IsCA || s.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return ErrNotCA
	}
	return nil
}

// validity returns NotBefore/NotAfter for a certificate issued by s at now:
// [max(now-Backdate, issuer.NotBefore), min(now+ttl, issuer.NotAfter)].
func (s *Signer) validity(now time.Time, ttl time.Duration) (time.Time, time.Time, error) {
	notBefore := now.Add(-Backdate)
	if notBefore.Before(s.Cert.NotBefore) {
		notBefore = s.Cert.NotBefore
	}
	notAfter := now.Add(ttl)
	if notAfter.After(s.Cert.NotAfter) {
		notAfter = s.Cert.NotAfter
	}
	// X.509 times have second precision: compare what will be encoded.
	if !notAfter.Truncate(time.Second).After(now) || !notAfter.After(notBefore) || now.Before(s.Cert.NotBefore.Add(-Backdate)) {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: issuer valid %s to %s, now %s", ErrIssuerExpired,
			s.Cert.NotBefore.UTC().Format(time.RFC3339), s.Cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return notBefore, notAfter, nil
}

// create signs tmpl and returns the parsed certificate, so every field
// (times at second precision, generated extensions) is what peers will see.
func create(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse signed certificate: %w", err)
	}
	return cert, nil
}

// randomSerial returns a positive serial number of up to 128 random bits.
func randomSerial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("ca: serial: %w", err)
		}
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
}

// subjectKeyID computes the key identifier as in RFC 7093 section 2 method 1
// (the leftmost 160 bits of the SHA-256 of the subjectPublicKey BIT STRING),
// which is also what crypto/x509 generates for CA certificates.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	var bits []byte
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		b, err := k.Bytes() // uncompressed point: the BIT STRING contents
		if err != nil {
			return nil, fmt.Errorf("ca: public key: %w", err)
		}
		bits = b
	case ed25519.PublicKey:
		bits = k
	default:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("ca: public key: %w", err)
		}
		var spki struct {
			Algorithm pkix.AlgorithmIdentifier
			PublicKey asn1.BitString
		}
		if _, err := asn1.Unmarshal(der, &spki); err != nil {
			return nil, fmt.Errorf("ca: public key: %w", err)
		}
		bits = spki.PublicKey.Bytes
	}
	h := sha256.Sum256(bits)
	return h[:20], nil
}

func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

// isRSA reports whether pub is an RSA key (leaves get keyEncipherment).
func isRSA(pub crypto.PublicKey) bool {
	_, ok := pub.(*rsa.PublicKey)
	return ok
}
