package ca

import (
	"bytes"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
)

func TestParseCSR(t *testing.T) {
	p256 := mustP256(t)
	good := csrDER(t, p256, nil)
	goodPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good})

	badSig := bytes.Clone(good)
	badSig[len(badSig)-1] ^= 0x01 // last byte of the ECDSA signature's s

	oversized := append(bytes.Clone(goodPEM), bytes.Repeat([]byte("\n"), MaxCSRSize+1-len(goodPEM))...)

	for _, tc := range []struct {
		name    string
		data    []byte
		wantErr error // nil = accepted
	}{
		// Accepted.
		{"DER P-256", good, nil},
		{"PEM P-256", goodPEM, nil},
		{"PEM with surrounding whitespace", append(append([]byte("\n  "), goodPEM...), "\n\n"...), nil},
		{"legacy NEW CERTIFICATE REQUEST", pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: good}), nil},
		{"P-384", csrDER(t, mustECDSA(t, elliptic.P384()), nil), nil},
		{"Ed25519", csrDER(t, mustEd25519(t), nil), nil},
		{"RSA-2048", csrDER(t, mustRSA(t, 2048), nil), nil},
		{"SPIFFE URI", csrDER(t, p256, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://ward.test/svc/web")}}), nil},
		{"CA:false requested", csrDER(t, p256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{basicConstraintsExt(t, false)}}), nil},
		{"exactly the size limit", append(bytes.Clone(goodPEM), bytes.Repeat([]byte("\n"), MaxCSRSize-len(goodPEM))...), nil},

		// Rejected.
		{"empty", nil, ErrCSRMalformed},
		{"garbage", []byte("this is not a csr"), ErrCSRMalformed},
		{"truncated DER", good[:len(good)/2], ErrCSRMalformed},
		{"DER with trailing data", append(bytes.Clone(good), 0), ErrCSRMalformed},
		{"broken PEM", []byte("-----BEGIN CERTIFICATE REQUEST-----\nnope\n"), ErrCSRMalformed},
		{"PEM of a certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: good}), ErrCSRMalformed},
		{"two PEM blocks", append(bytes.Clone(goodPEM), goodPEM...), ErrCSRMalformed},
		{"PEM with trailing text", append(bytes.Clone(goodPEM), "trailing"...), ErrCSRMalformed},
		{"oversized", oversized, ErrCSRTooLarge},
		{"oversized garbage", bytes.Repeat([]byte{0x30}, 1<<20), ErrCSRTooLarge},
		{"bad signature", badSig, ErrCSRSignature},
		{"CA:true requested", csrDER(t, p256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{basicConstraintsExt(t, true)}}), ErrCSRRequestsCA},
		{"bad basicConstraints", csrDER(t, p256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Value: []byte{1, 2, 3}}}}), ErrCSRMalformed},
		{"two URIs", csrDER(t, p256, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://ward.test/svc/a"), mustURL(t, "spiffe://ward.test/svc/b")}}), ErrCSRIdentity},
		{"https URI", csrDER(t, p256, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "https://ward.test/svc/web")}}), ErrCSRIdentity},
		{"SPIFFE URI with query", csrDER(t, p256, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://ward.test/svc/web?x=1")}}), ErrCSRIdentity},
		{"email SAN", csrDER(t, p256, &x509.CertificateRequest{EmailAddresses: []string{"a@example.com"}}), ErrCSRIdentity},
		{"IP SAN", csrDER(t, p256, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}), ErrCSRIdentity},
		{"DNS SAN", csrDER(t, p256, &x509.CertificateRequest{DNSNames: []string{"web.example.com"}}), ErrCSRIdentity},
		{"RSA-1024", csrDER(t, mustRSA(t, 1024), nil), ErrCSRKey},
		{"P-224", csrDER(t, mustECDSA(t, elliptic.P224()), nil), ErrCSRKey},
		{"P-521", csrDER(t, mustECDSA(t, elliptic.P521()), nil), ErrCSRKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := ParseCSR(tc.data)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseCSR: %v", err)
				}
				if csr == nil || csr.PublicKey == nil {
					t.Fatal("no CSR")
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ParseCSR err = %v, want %v", err, tc.wantErr)
			}
			if csr != nil {
				t.Fatal("ParseCSR returned a CSR with an error")
			}
			if !strings.HasPrefix(err.Error(), "ca: ") {
				t.Errorf("error %q does not start with \"ca: \"", err)
			}
		})
	}
}

// The sentinels are distinct so callers can map each to a status.
func TestCSRErrorsDistinct(t *testing.T) {
	errs := []error{ErrCSRMalformed, ErrCSRTooLarge, ErrCSRSignature, ErrCSRKey, ErrCSRRequestsCA, ErrCSRIdentity}
	for i, a := range errs {
		for j, b := range errs {
			if i != j && errors.Is(a, b) {
				t.Errorf("%v is %v", a, b)
			}
		}
	}
}
