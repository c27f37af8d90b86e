package ca

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// ErrSerial reports a serial number string that is not 1 to 40 hex digits
// of a positive number.
var ErrSerial = errors.New("ca: invalid serial number")

// SerialHex formats a serial number as lower-case hex without leading zeros,
// the form ward uses in its API, store and revocation lists.
func SerialHex(n *big.Int) string {
	if n == nil {
		return ""
	}
	return n.Text(16)
}

// ParseSerialHex parses a hex serial number (either case, optional "0x",
// optional ':' separators as printed by openssl). Serials are positive and at
// most 20 octets (RFC 5280).
func ParseSerialHex(s string) (*big.Int, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0x"), "0X")
	h = strings.ReplaceAll(h, ":", "")
	if h == "" || len(h) > 40 {
		return nil, fmt.Errorf("%w: %q", ErrSerial, s)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return nil, fmt.Errorf("%w: %q", ErrSerial, s)
		}
	}
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("%w: %q", ErrSerial, s)
	}
	return n, nil
}

// Fingerprint is the lower-case hex SHA-256 of the certificate's DER.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// EncodeCertsPEM encodes certificates as consecutive CERTIFICATE blocks,
// e.g. a leaf followed by its intermediates.
func EncodeCertsPEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// ParseCertsPEM parses every CERTIFICATE block in data, in order. Text
// between blocks is ignored; a block of another type or no certificate at
// all is an error.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("ca: unexpected PEM block %q", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: parse certificate %d: %w", len(certs), err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("ca: no certificates in PEM")
	}
	return certs, nil
}
