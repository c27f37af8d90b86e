package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

func FuzzParseCSR(f *testing.F) {
	key := mustP256(f)
	for _, tmpl := range []*x509.CertificateRequest{
		nil,
		{URIs: []*url.URL{mustURL(f, "spiffe://ward.test/svc/web")}},
		{URIs: []*url.URL{mustURL(f, "spiffe://ward.test/a"), mustURL(f, "https://x/")}},
		{ExtraExtensions: []pkix.Extension{basicConstraintsExt(f, true)}},
		{DNSNames: []string{"x.test"}, EmailAddresses: []string{"a@b.c"}},
	} {
		der := csrDER(f, key, tmpl)
		f.Add(der)
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	f.Add(csrDER(f, mustEd25519(f), nil))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := ParseCSR(data)
		if err != nil {
			if csr != nil {
				t.Fatal("CSR returned with an error")
			}
			for _, sentinel := range []error{ErrCSRMalformed, ErrCSRTooLarge, ErrCSRSignature, ErrCSRKey, ErrCSRRequestsCA, ErrCSRIdentity} {
				if errors.Is(err, sentinel) {
					return
				}
			}
			t.Fatalf("error without a sentinel: %v", err)
		}
		// Whatever passes ParseCSR must be within policy.
		if len(data) > MaxCSRSize || len(csr.URIs) > 1 || len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses) > 0 {
			t.Fatalf("accepted a CSR outside policy: %d bytes, %v", len(data), csr.URIs)
		}
		if err := checkPublicKey(csr.PublicKey); err != nil {
			t.Fatalf("accepted key: %v", err)
		}
	})
}

func FuzzParseOCSPRequest(f *testing.F) {
	now := time.Now()
	_, inter := newChain(f, now)
	leaf := issue(f, inter, now, time.Hour)
	req, err := ocsp.CreateRequest(leaf, inter.Cert, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(req)
	req256, err := ocsp.CreateRequest(leaf, inter.Cert, &ocsp.RequestOptions{Hash: 5 /* crypto.SHA256 */})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(req256)
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseOCSPRequest(data)
		if err != nil {
			if !errors.Is(err, ErrOCSPRequestMalformed) && !errors.Is(err, ErrOCSPRequestTooLarge) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if r.SerialNumber == nil {
			t.Fatal("nil serial accepted")
		}
		// A parsed request must be safe to route to a signer. (Signing a
		// response per input would make minimization crawl; OCSPResponse is
		// covered by TestOCSP.)
		inter.OCSPRequestMatches(r)
	})
}
