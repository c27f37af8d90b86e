package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxCSRSize is the largest CSR, PEM or DER, that ParseCSR accepts.
const MaxCSRSize = 16 << 10

// Sentinel errors of ParseCSR and IssueSVID. The authority maps
// ErrCSRTooLarge to 413, ErrCSRRequestsCA and ErrCSRIdentity to 403 and the
// others to 400.
var (
	ErrCSRMalformed  = errors.New("ca: malformed csr")
	ErrCSRTooLarge   = errors.New("ca: csr too large")
	ErrCSRSignature  = errors.New("ca: csr signature invalid")
	ErrCSRKey        = errors.New("ca: csr key type not allowed")
	ErrCSRRequestsCA = errors.New("ca: csr requests a CA certificate")
	ErrCSRIdentity   = errors.New("ca: csr identity not allowed")
)

// RSA keys are accepted from 2048 up to this many bits.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}

// ParseCSR parses and checks a certificate signing request from untrusted
// bytes: DER, or a single PEM "CERTIFICATE REQUEST" block, at most
// MaxCSRSize bytes. It verifies the self-signature and applies ward's
// policy:
//
//   - key: ECDSA P-256 or P-384, Ed25519, or RSA of 2048 to 8192 bits
//     (ErrCSRKey);
//   - no requested basicConstraints extension with cA true
//     (ErrCSRRequestsCA);
//   - at most one URI SAN, which must be a SPIFFE ID, and no DNS, email or
//     IP SANs (ErrCSRIdentity): the leaf carries only the URI SAN chosen by
//     the authority, and nothing a requester asks for is dropped silently.
//
// The subject and other requested extensions (key usages) are ignored: the
// issued SVID's subject and usages are fixed by IssueSVID. Whether a URI SAN
// matches the caller's identity is checked by IssueSVID.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) > MaxCSRSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrCSRTooLarge, len(data), MaxCSRSize)
	}
	der := data
	if trimmed := bytes.TrimLeft(data, " \t\r\n"); bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		block, rest := pem.Decode(trimmed)
		if block == nil {
			return nil, fmt.Errorf("%w: bad PEM", ErrCSRMalformed)
		}
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%w: PEM block type %q", ErrCSRMalformed, block.Type)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, fmt.Errorf("%w: data after the PEM block", ErrCSRMalformed)
		}
		der = block.Bytes
	}
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrCSRMalformed)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSRMalformed, err)
	}
	// Key type first: it is cheap and keeps odd keys away from the verifier.
	if err := checkCSRPolicy(csr); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSRSignature, err)
	}
	return csr, nil
}

// checkCSRPolicy applies the key, CA and SAN rules of ParseCSR (everything
// but the signature).
func checkCSRPolicy(csr *x509.CertificateRequest) error {
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return err
	}
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(oidBasicConstraints) {
			continue
		}
		var bc struct {
			IsCA       bool `asn1:"optional"`
			MaxPathLen int  `asn1:"optional,default:-1"`
		}
		rest, err := asn1.Unmarshal(ext.Value, &bc)
		if err != nil || len(rest) != 0 {
			return fmt.Errorf("%w: bad basicConstraints extension", ErrCSRMalformed)
		}
		if bc.IsCA {
			return ErrCSRRequestsCA
		}
	}
	switch {
	case len(csr.URIs) > 1:
		return fmt.Errorf("%w: %d URI SANs, at most one allowed", ErrCSRIdentity, len(csr.URIs))
	case len(csr.EmailAddresses) > 0:
		return fmt.Errorf("%w: email SANs not allowed", ErrCSRIdentity)
	case len(csr.IPAddresses) > 0:
		return fmt.Errorf("%w: IP SANs not allowed", ErrCSRIdentity)
	case len(csr.DNSNames) > 0:
		return fmt.Errorf("%w: DNS SANs not allowed", ErrCSRIdentity)
	}
	if len(csr.URIs) == 1 {
		if _, err := spiffeid.FromURI(csr.URIs[0]); err != nil {
			return fmt.Errorf("%w: URI SAN is not a SPIFFE ID", ErrCSRIdentity)
		}
	}
	return nil
}

// checkPublicKey enforces the key types ward certifies.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA curve %s", ErrCSRKey, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: Ed25519 key size", ErrCSRKey)
		}
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return fmt.Errorf("%w: RSA %d bits, want %d to %d", ErrCSRKey, bits, minRSABits, maxRSABits)
		}
	default:
		return fmt.Errorf("%w: %T", ErrCSRKey, pub)
	}
	return nil
}
