package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/ocsp"
)

// MaxOCSPRequestSize is the largest OCSP request ParseOCSPRequest accepts.
const MaxOCSPRequestSize = 4 << 10

// DefaultOCSPValidity is how long an OCSP response is valid when
// OCSPStatus.NextUpdate is zero.
const DefaultOCSPValidity = time.Hour

// Errors of the revocation helpers.
var (
	ErrOCSPRequestTooLarge  = errors.New("ca: ocsp request too large")
	ErrOCSPRequestMalformed = errors.New("ca: malformed ocsp request")
)

// CreateCRL signs a DER CRL (RFC 5280, version 2) listing entries, with the
// given CRL number and validity. Each entry needs SerialNumber and
// RevocationTime; a non-zero ReasonCode is encoded as the reasonCode entry
// extension (0, unspecified, is left out as RFC 5280 recommends).
func (s *Signer) CreateCRL(entries []x509.RevocationListEntry, number int64, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if number < 0 {
		return nil, errors.New("ca: crl number must not be negative")
	}
	if !nextUpdate.After(thisUpdate) {
		return nil, errors.New("ca: crl nextUpdate must be after thisUpdate")
	}
	for i, e := range entries {
		if e.SerialNumber == nil || e.SerialNumber.Sign() <= 0 {
			return nil, fmt.Errorf("ca: crl entry %d: invalid serial", i)
		}
		if e.RevocationTime.IsZero() {
			return nil, fmt.Errorf("ca: crl entry %d: no revocation time", i)
		}
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(number),
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: entries,
	}, s.Cert, s.Key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign crl: %w", err)
	}
	return der, nil
}

// ParseOCSPRequest parses an RFC 6960 OCSP request from untrusted bytes (at
// most MaxOCSPRequestSize). Only the first certificate in the request is
// returned, as golang.org/x/crypto/ocsp does.
func ParseOCSPRequest(data []byte) (*ocsp.Request, error) {
	if len(data) > MaxOCSPRequestSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrOCSPRequestTooLarge, len(data), MaxOCSPRequestSize)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrOCSPRequestMalformed)
	}
	req, err := ocsp.ParseRequest(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOCSPRequestMalformed, err)
	}
	if req.SerialNumber == nil {
		return nil, fmt.Errorf("%w: no serial number", ErrOCSPRequestMalformed)
	}
	return req, nil
}

// OCSPStatus is the revocation status of one certificate, for OCSPResponse.
type OCSPStatus struct {
	// Serial of the certificate asked about.
	Serial *big.Int
	// Status is ocsp.Good, ocsp.Revoked or ocsp.Unknown.
	Status int
	// RevokedAt and Reason (an RFC 5280 CRLReason) are used when Status is
	// ocsp.Revoked.
	RevokedAt time.Time
	Reason    int
	// Now is the response's thisUpdate; zero means time.Now().
	Now time.Time
	// NextUpdate; zero means Now + DefaultOCSPValidity.
	NextUpdate time.Time
	// IssuerHash is the hash of the request's CertID (ocsp.Request
	// HashAlgorithm), echoed in the response; zero means SHA-1, which is
	// what OpenSSL and most clients send.
	IssuerHash crypto.Hash
}

// OCSPResponse signs a successful OCSP response for one certificate issued
// by s. It is signed directly by the issuing CA (no delegated responder), so
// clients need no extra certificate to verify it.
func (s *Signer) OCSPResponse(st OCSPStatus) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if st.Serial == nil || st.Serial.Sign() <= 0 {
		return nil, errors.New("ca: ocsp: invalid serial")
	}
	now := orNow(st.Now)
	next := st.NextUpdate
	if next.IsZero() {
		next = now.Add(DefaultOCSPValidity)
	}
	if !next.After(now) {
		return nil, errors.New("ca: ocsp: nextUpdate must be after now")
	}
	tmpl := ocsp.Response{
		Status:       st.Status,
		SerialNumber: st.Serial,
		ThisUpdate:   now,
		NextUpdate:   next,
		IssuerHash:   st.IssuerHash,
	}
	switch st.Status {
	case ocsp.Good, ocsp.Unknown:
	case ocsp.Revoked:
		if st.RevokedAt.IsZero() {
			return nil, errors.New("ca: ocsp: revoked status needs RevokedAt")
		}
		if st.Reason < ocsp.Unspecified || st.Reason > ocsp.AACompromise || st.Reason == 7 {
			return nil, fmt.Errorf("ca: ocsp: invalid revocation reason %d", st.Reason)
		}
		tmpl.RevokedAt = st.RevokedAt
		tmpl.RevocationReason = st.Reason
	default:
		return nil, fmt.Errorf("ca: ocsp: invalid status %d", st.Status)
	}
	der, err := ocsp.CreateResponse(s.Cert, s.Cert, tmpl, s.Key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign ocsp response: %w", err)
	}
	return der, nil
}

// OCSPRequestMatches reports whether req asks about a certificate issued by
// s (its CertID issuer name and key hashes match s's certificate), so a
// responder serving several CAs can pick the signer.
func (s *Signer) OCSPRequestMatches(req *ocsp.Request) bool {
	if s == nil || s.Cert == nil || req == nil || !req.HashAlgorithm.Available() {
		return false
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(s.Cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		return false
	}
	h := req.HashAlgorithm.New()
	h.Write(spki.PublicKey.RightAlign())
	if !bytes.Equal(h.Sum(nil), req.IssuerKeyHash) {
		return false
	}
	h.Reset()
	h.Write(s.Cert.RawSubject)
	return bytes.Equal(h.Sum(nil), req.IssuerNameHash)
}
