package ca

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// maxInstanceIDLen is the X.520 upper bound of the serialNumber attribute.
const maxInstanceIDLen = 64

// IssueRequest describes an X509-SVID to issue.
type IssueRequest struct {
	// CSR is the workload's request, as returned by ParseCSR (its signature
	// is not checked again). Its public key is certified; if it carries a
	// URI SAN, that must equal ID.
	CSR *x509.CertificateRequest
	// ID is the SPIFFE ID to certify, the leaf's only URI SAN. Required; it
	// must be in the issuer's trust domain.
	ID spiffeid.ID
	// InstanceID goes into the subject serialNumber (at most 64 printable
	// characters); empty leaves it out.
	InstanceID string
	// TTL is the requested lifetime; NotAfter is min(Now+TTL, issuer
	// NotAfter). Must be positive.
	TTL time.Duration
	// Now is the issuance time; zero means time.Now().
	Now time.Time
	// OCSPURL and CRLURL become the AIA OCSP responder and the CRL
	// distribution point; empty leaves the extension out.
	OCSPURL, CRLURL string

	// The fields below are for certificates the authority issues to itself
	// (its serving certificate, the control-plane signing certificate). They
	// are never taken from a CSR.

	// PublicKey is certified when CSR is nil.
	PublicKey crypto.PublicKey
	// DNSNames and IPAddresses are added next to the URI SAN.
	DNSNames    []string
	IPAddresses []net.IP
	// ExtKeyUsage, when non-nil, replaces the default serverAuth+clientAuth
	// (an empty non-nil slice leaves the extension out; the control-plane
	// signing certificate uses x509.ExtKeyUsageAny).
	ExtKeyUsage []x509.ExtKeyUsage
}

var defaultExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}

// IssueSVID signs an X509-SVID leaf for req.ID following the SPIFFE X509-SVID
// rules: exactly one URI SAN (req.ID), CA:false, keyUsage digitalSignature
// (plus keyEncipherment for RSA keys), extKeyUsage serverAuth+clientAuth,
// subject O=ward with serialNumber=InstanceID, a 128-bit random serial,
// subject and authority key identifiers, NotBefore = Now-Backdate (not
// before the issuer) and NotAfter = min(Now+TTL, issuer NotAfter).
//
// A CSR whose URI SAN differs from req.ID fails with ErrCSRIdentity; the
// other CSR policy errors of ParseCSR apply too.
func (s *Signer) IssueSVID(req IssueRequest) (*x509.Certificate, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if req.ID.IsZero() {
		return nil, errors.New("ca: empty SPIFFE ID")
	}
	if td, ok := s.TrustDomain(); ok && !req.ID.MemberOf(td) {
		return nil, fmt.Errorf("%w: %s is not in %s", ErrTrustDomain, req.ID, td)
	}
	if req.TTL <= 0 {
		return nil, ErrTTL
	}
	if err := checkInstanceID(req.InstanceID); err != nil {
		return nil, err
	}

	pub := req.PublicKey
	if req.CSR != nil {
		if err := checkCSRPolicy(req.CSR); err != nil {
			return nil, err
		}
		if len(req.CSR.URIs) == 1 {
			// checkCSRPolicy has already parsed it as a SPIFFE ID.
			if asked, err := spiffeid.FromURI(req.CSR.URIs[0]); err != nil || asked != req.ID {
				return nil, fmt.Errorf("%w: csr asks for %s, caller is %s", ErrCSRIdentity, req.CSR.URIs[0], req.ID)
			}
		}
		pub = req.CSR.PublicKey
	} else if pub == nil {
		return nil, errors.New("ca: no CSR and no public key")
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}

	now := orNow(req.Now)
	notBefore, notAfter, err := s.validity(now, req.TTL)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	keyUsage := x509.KeyUsageDigitalSignature
	if isRSA(pub) {
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	eku := defaultExtKeyUsage
	if req.ExtKeyUsage != nil {
		eku = req.ExtKeyUsage
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{Organization},
			SerialNumber: req.InstanceID,
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              keyUsage,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          skid,
		URIs:                  []*url.URL{req.ID.URL()},
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPAddresses,
	}
	if req.OCSPURL != "" {
		tmpl.OCSPServer = []string{req.OCSPURL}
	}
	if req.CRLURL != "" {
		tmpl.CRLDistributionPoints = []string{req.CRLURL}
	}
	return create(tmpl, s.Cert, pub, s.Key)
}

func checkInstanceID(id string) error {
	if len(id) > maxInstanceIDLen || !utf8.ValidString(id) {
		return fmt.Errorf("ca: instance id must be at most %d UTF-8 bytes", maxInstanceIDLen)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return errors.New("ca: instance id has a non-printable character")
		}
	}
	return nil
}
