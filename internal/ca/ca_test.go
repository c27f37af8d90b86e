package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	oidKeyUsage          = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidBasicConstraintsT = asn1.ObjectIdentifier{2, 5, 29, 19}
)

func extension(cert *x509.Certificate, oid asn1.ObjectIdentifier) (critical, ok bool) {
	for _, e := range cert.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical, true
		}
	}
	return false, false
}

func TestCACertificates(t *testing.T) {
	now := testNow()
	root, inter := newChain(t, now)

	for _, tc := range []struct {
		name       string
		s          *Signer
		issuer     *x509.Certificate
		cnPrefix   string
		maxPathLen int
		notAfter   time.Time
	}{
		{"root", root, root.Cert, "ward root ", 1, now.Add(10 * 365 * 24 * time.Hour)},
		{"intermediate", inter, root.Cert, "ward intermediate payments", 0, now.Add(365 * 24 * time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.s.Cert
			if !c.IsCA || !c.BasicConstraintsValid {
				t.Error("not a CA")
			}
			if c.MaxPathLen != tc.maxPathLen || (tc.maxPathLen == 0 && !c.MaxPathLenZero) {
				t.Errorf("MaxPathLen = %d (zero %v), want %d", c.MaxPathLen, c.MaxPathLenZero, tc.maxPathLen)
			}
			if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("KeyUsage = %v", c.KeyUsage)
			}
			if crit, ok := extension(c, oidKeyUsage); !ok || !crit {
				t.Error("keyUsage missing or not critical")
			}
			if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://ward.test" {
				t.Errorf("URIs = %v, want [spiffe://ward.test]", c.URIs)
			}
			if len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) != 0 {
				t.Error("unexpected SANs")
			}
			if got := c.Subject.Organization; len(got) != 1 || got[0] != "ward" {
				t.Errorf("O = %v", got)
			}
			if !strings.HasPrefix(c.Subject.CommonName, tc.cnPrefix) {
				t.Errorf("CN = %q, want prefix %q", c.Subject.CommonName, tc.cnPrefix)
			}
			if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
				t.Errorf("key %T, want ECDSA P-256", c.PublicKey)
			}
			if c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
				t.Errorf("SignatureAlgorithm = %v", c.SignatureAlgorithm)
			}
			if len(c.SubjectKeyId) != 20 {
				t.Errorf("SubjectKeyId = %x", c.SubjectKeyId)
			}
			if c != tc.issuer && !bytes.Equal(c.AuthorityKeyId, tc.issuer.SubjectKeyId) {
				t.Errorf("AuthorityKeyId = %x, want %x", c.AuthorityKeyId, tc.issuer.SubjectKeyId)
			}
			if err := c.CheckSignatureFrom(tc.issuer); err != nil {
				t.Errorf("CheckSignatureFrom: %v", err)
			}
			if !c.NotBefore.Equal(now.Add(-Backdate)) || !c.NotAfter.Equal(tc.notAfter) {
				t.Errorf("validity %v..%v, want %v..%v", c.NotBefore, c.NotAfter, now.Add(-Backdate), tc.notAfter)
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v", c.SerialNumber)
			}
			if _, err := NewSigner(c, tc.s.Key); err != nil {
				t.Errorf("NewSigner: %v", err)
			}
			if td, ok := tc.s.TrustDomain(); !ok || td != testTD {
				t.Errorf("TrustDomain = %v, %v", td, ok)
			}
		})
	}

	// The root CN carries a short id of its key.
	if want := "ward root " + strings.ToLower(hexString(root.Cert.SubjectKeyId[:4])); root.Cert.Subject.CommonName != want {
		t.Errorf("root CN = %q, want %q", root.Cert.Subject.CommonName, want)
	}
}

func hexString(b []byte) string { return new(big.Int).SetBytes(append([]byte{1}, b...)).Text(16)[1:] }

func TestNewIntermediateValidity(t *testing.T) {
	now := testNow()
	root, err := NewRoot(testTD, 2*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		parent        *Signer
		td            spiffeid.TrustDomain
		ttl           time.Duration
		at            time.Time
		wantNotBefore time.Time
		wantNotAfter  time.Time
		wantErr       error
	}{
		{"within parent", root, testTD, time.Hour, now, now.Add(-Backdate), now.Add(time.Hour), nil},
		{"clipped to parent", root, testTD, 10 * time.Hour, now, now.Add(-Backdate), root.Cert.NotAfter, nil},
		{"not before parent", root, testTD, time.Hour, now.Add(-10 * time.Second), root.Cert.NotBefore, now.Add(-10*time.Second + time.Hour), nil},
		{"parent expired", root, testTD, time.Hour, now.Add(3 * time.Hour), time.Time{}, time.Time{}, ErrIssuerExpired},
		{"parent not yet valid", root, testTD, time.Hour, now.Add(-time.Hour), time.Time{}, time.Time{}, ErrIssuerExpired},
		{"zero ttl", root, testTD, 0, now, time.Time{}, time.Time{}, ErrTTL},
		{"other trust domain", root, spiffeid.RequireTrustDomainFromString("other.test"), time.Hour, now, time.Time{}, time.Time{}, ErrTrustDomain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewIntermediate(tc.parent, tc.td, "x", tc.ttl, tc.at)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !s.Cert.NotBefore.Equal(tc.wantNotBefore) || !s.Cert.NotAfter.Equal(tc.wantNotAfter) {
				t.Errorf("validity %v..%v, want %v..%v", s.Cert.NotBefore, s.Cert.NotAfter, tc.wantNotBefore, tc.wantNotAfter)
			}
		})
	}

	// An intermediate cannot sign another CA that verifies (path length 0).
	inter, err := NewIntermediate(root, testTD, "", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if inter.Cert.Subject.CommonName != "ward intermediate" {
		t.Errorf("CN = %q", inter.Cert.Subject.CommonName)
	}
	sub, err := NewIntermediate(inter, testTD, "sub", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root.Cert)
	inters := x509.NewCertPool()
	inters.AddCert(inter.Cert)
	inters.AddCert(sub.Cert)
	leaf := issue(t, sub, now, time.Minute)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inters, CurrentTime: now}); err == nil {
		t.Error("a leaf under a CA below a MaxPathLen 0 intermediate verified")
	}
}

func TestNewRootErrors(t *testing.T) {
	if _, err := NewRoot(spiffeid.TrustDomain{}, time.Hour, time.Time{}); err == nil {
		t.Error("empty trust domain accepted")
	}
	if _, err := NewRoot(testTD, -time.Hour, time.Time{}); !errors.Is(err, ErrTTL) {
		t.Errorf("negative ttl: err = %v", err)
	}
	r, err := NewRoot(testTD, time.Hour, time.Time{}) // zero now = time.Now
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(r.Cert.NotBefore); d < Backdate-2*time.Second || d > Backdate+2*time.Second {
		t.Errorf("NotBefore %v is not ~now-Backdate", r.Cert.NotBefore)
	}
}

func TestIssueSVID(t *testing.T) {
	now := testNow()
	root, inter := newChain(t, now)
	bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{root.Cert})

	p256 := mustP256(t)
	for _, tc := range []struct {
		name    string
		key     crypto.Signer
		csr     *x509.CertificateRequest
		ku      x509.KeyUsage
		sigAlgo x509.SignatureAlgorithm
	}{
		{"P-256 without URI", p256, nil, x509.KeyUsageDigitalSignature, x509.ECDSAWithSHA256},
		{"P-256 with matching URI", p256, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, testID.String())}}, x509.KeyUsageDigitalSignature, x509.ECDSAWithSHA256},
		{"P-384", mustECDSA(t, elliptic.P384()), nil, x509.KeyUsageDigitalSignature, x509.ECDSAWithSHA256},
		{"Ed25519", mustEd25519(t), nil, x509.KeyUsageDigitalSignature, x509.ECDSAWithSHA256},
		{"RSA-2048", mustRSA(t, 2048), nil, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, x509.ECDSAWithSHA256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr := mustParseCSR(t, csrDER(t, tc.key, tc.csr))
			leaf, err := inter.IssueSVID(IssueRequest{
				CSR:        csr,
				ID:         testID,
				InstanceID: "i-0123456789abcdef",
				TTL:        time.Hour,
				Now:        now,
				OCSPURL:    "https://127.0.0.1:8443/ocsp",
				CRLURL:     "https://127.0.0.1:8443/crl/int.crl",
			})
			if err != nil {
				t.Fatalf("IssueSVID: %v", err)
			}
			checkLeaf(t, leaf, inter, now, now.Add(time.Hour))
			if leaf.KeyUsage != tc.ku {
				t.Errorf("KeyUsage = %v, want %v", leaf.KeyUsage, tc.ku)
			}
			if leaf.SignatureAlgorithm != tc.sigAlgo {
				t.Errorf("SignatureAlgorithm = %v", leaf.SignatureAlgorithm)
			}
			if !publicKeyEqual(leaf.PublicKey, csr.PublicKey) {
				t.Error("leaf key is not the CSR key")
			}
			if leaf.Subject.SerialNumber != "i-0123456789abcdef" {
				t.Errorf("subject serialNumber = %q", leaf.Subject.SerialNumber)
			}
			if len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != "https://127.0.0.1:8443/ocsp" {
				t.Errorf("OCSPServer = %v", leaf.OCSPServer)
			}
			if len(leaf.CRLDistributionPoints) != 1 || leaf.CRLDistributionPoints[0] != "https://127.0.0.1:8443/crl/int.crl" {
				t.Errorf("CRLDistributionPoints = %v", leaf.CRLDistributionPoints)
			}

			// go-spiffe accepts leaf + intermediate against the root bundle.
			id, chains, err := x509svid.Verify([]*x509.Certificate{leaf, inter.Cert}, bundle, x509svid.WithTime(now))
			if err != nil {
				t.Fatalf("x509svid.Verify: %v", err)
			}
			if id != testID || len(chains) != 1 || len(chains[0]) != 3 {
				t.Errorf("Verify = %v, %d chains", id, len(chains))
			}
			// ...and refuses it without the intermediate, or once expired.
			if _, _, err := x509svid.Verify([]*x509.Certificate{leaf}, bundle, x509svid.WithTime(now)); err == nil {
				t.Error("verified without the intermediate")
			}
			if _, _, err := x509svid.Verify([]*x509.Certificate{leaf, inter.Cert}, bundle, x509svid.WithTime(now.Add(2*time.Hour))); err == nil {
				t.Error("verified after expiry")
			}
		})
	}
}

// checkLeaf asserts the SPIFFE X509-SVID leaf rules and ward's profile.
func checkLeaf(t *testing.T, leaf *x509.Certificate, issuer *Signer, now, notAfter time.Time) {
	t.Helper()
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != testID.String() {
		t.Errorf("URIs = %v, want exactly [%s]", leaf.URIs, testID)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("unexpected SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Error("leaf must have basicConstraints CA:false")
	}
	if _, ok := extension(leaf, oidBasicConstraintsT); !ok {
		t.Error("no basicConstraints extension")
	}
	if crit, ok := extension(leaf, oidKeyUsage); !ok || !crit {
		t.Error("keyUsage missing or not critical")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		t.Errorf("KeyUsage = %v", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	if o := leaf.Subject.Organization; len(o) != 1 || o[0] != "ward" {
		t.Errorf("O = %v", o)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("serial = %v", leaf.SerialNumber)
	}
	if len(leaf.SubjectKeyId) == 0 || !bytes.Equal(leaf.AuthorityKeyId, issuer.Cert.SubjectKeyId) {
		t.Errorf("SKI %x AKI %x (issuer SKI %x)", leaf.SubjectKeyId, leaf.AuthorityKeyId, issuer.Cert.SubjectKeyId)
	}
	wantNB := now.Add(-Backdate)
	if wantNB.Before(issuer.Cert.NotBefore) {
		wantNB = issuer.Cert.NotBefore
	}
	if !leaf.NotBefore.Equal(wantNB) || !leaf.NotAfter.Equal(notAfter) {
		t.Errorf("validity %v..%v, want %v..%v", leaf.NotBefore, leaf.NotAfter, wantNB, notAfter)
	}
	if err := leaf.CheckSignatureFrom(issuer.Cert); err != nil {
		t.Errorf("CheckSignatureFrom: %v", err)
	}
}

func TestIssueSVIDValidity(t *testing.T) {
	now := testNow()
	root, err := NewRoot(testTD, 10*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := NewIntermediate(root, testTD, "short", 2*time.Hour, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		at           time.Time
		ttl          time.Duration
		wantNotAfter time.Time
		wantErr      error
	}{
		{"3s", now.Add(time.Hour), 3 * time.Second, now.Add(time.Hour + 3*time.Second), nil},
		{"1h", now.Add(time.Hour), time.Hour, now.Add(2 * time.Hour), nil},
		{"clipped to issuer", now.Add(2 * time.Hour), 24 * time.Hour, inter.Cert.NotAfter, nil},
		{"backdate clamped to issuer NotBefore", now.Add(time.Hour - 10*time.Second), time.Hour, now.Add(2*time.Hour - 10*time.Second), nil},
		{"issuer expired", now.Add(4 * time.Hour), time.Hour, time.Time{}, ErrIssuerExpired},
		{"issuer expires now", inter.Cert.NotAfter, time.Hour, time.Time{}, ErrIssuerExpired},
		{"zero ttl", now.Add(time.Hour), 0, time.Time{}, ErrTTL},
		{"negative ttl", now.Add(time.Hour), -time.Second, time.Time{}, ErrTTL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf, err := inter.IssueSVID(IssueRequest{
				CSR: mustParseCSR(t, csrDER(t, mustP256(t), nil)),
				ID:  testID, TTL: tc.ttl, Now: tc.at,
			})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkLeaf(t, leaf, inter, tc.at, tc.wantNotAfter)
			if len(leaf.OCSPServer) != 0 || len(leaf.CRLDistributionPoints) != 0 || leaf.Subject.SerialNumber != "" {
				t.Error("empty OCSPURL/CRLURL/InstanceID should leave the fields out")
			}
		})
	}
}

func TestIssueSVIDRejects(t *testing.T) {
	now := testNow()
	_, inter := newChain(t, now)
	key := mustP256(t)
	good := mustParseCSR(t, csrDER(t, key, nil))
	other := mustParseCSR(t, csrDER(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://ward.test/svc/other")}}))
	otherTD := mustParseCSR(t, csrDER(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://evil.test/svc/web")}}))
	// A CSR that did not come through ParseCSR still gets the policy.
	caReq, err := x509.ParseCertificateRequest(csrDER(t, key, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{basicConstraintsExt(t, true)}}))
	if err != nil {
		t.Fatal(err)
	}
	dnsReq, err := x509.ParseCertificateRequest(csrDER(t, key, &x509.CertificateRequest{DNSNames: []string{"example.com"}}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		signer  *Signer
		req     IssueRequest
		wantErr error
	}{
		{"CSR for another ID", inter, IssueRequest{CSR: other, ID: testID, TTL: time.Hour, Now: now}, ErrCSRIdentity},
		{"CSR for another trust domain", inter, IssueRequest{CSR: otherTD, ID: testID, TTL: time.Hour, Now: now}, ErrCSRIdentity},
		{"ID in another trust domain", inter, IssueRequest{CSR: good, ID: spiffeid.RequireFromString("spiffe://evil.test/svc/web"), TTL: time.Hour, Now: now}, ErrTrustDomain},
		{"unparsed CA request", inter, IssueRequest{CSR: caReq, ID: testID, TTL: time.Hour, Now: now}, ErrCSRRequestsCA},
		{"unparsed DNS request", inter, IssueRequest{CSR: dnsReq, ID: testID, TTL: time.Hour, Now: now}, ErrCSRIdentity},
		{"weak public key", inter, IssueRequest{PublicKey: mustRSA(t, 1024).Public(), ID: testID, TTL: time.Hour, Now: now}, ErrCSRKey},
		{"no key", inter, IssueRequest{ID: testID, TTL: time.Hour, Now: now}, nil},
		{"empty ID", inter, IssueRequest{CSR: good, TTL: time.Hour, Now: now}, nil},
		{"long instance id", inter, IssueRequest{CSR: good, ID: testID, InstanceID: strings.Repeat("a", 65), TTL: time.Hour, Now: now}, nil},
		{"control char in instance id", inter, IssueRequest{CSR: good, ID: testID, InstanceID: "a\nb", TTL: time.Hour, Now: now}, nil},
		{"signer without key", &Signer{Cert: inter.Cert}, IssueRequest{CSR: good, ID: testID, TTL: time.Hour, Now: now}, nil},
		{"leaf as signer", &Signer{Cert: issue(t, inter, now, time.Hour), Key: key}, IssueRequest{CSR: good, ID: testID, TTL: time.Hour, Now: now}, ErrNotCA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf, err := tc.signer.IssueSVID(tc.req)
			if err == nil {
				t.Fatalf("IssueSVID succeeded: %v", leaf.URIs)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "ca: ") {
				t.Errorf("error %q does not start with \"ca: \"", err)
			}
		})
	}
}

// The authority's own certificates: serving cert with DNS/IP SANs, and the
// control-plane signing certificate for an Ed25519 key.
func TestIssueSVIDAuthorityCertificates(t *testing.T) {
	now := testNow()
	root, inter := newChain(t, now)
	authID := spiffeid.RequireFromPath(testTD, "/ward/authority")
	serving, err := inter.IssueSVID(IssueRequest{
		PublicKey:   mustP256(t).Public(),
		ID:          authID,
		TTL:         24 * time.Hour,
		Now:         now,
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(serving.URIs) != 1 || serving.DNSNames[0] != "localhost" || !serving.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("SANs: %v %v %v", serving.URIs, serving.DNSNames, serving.IPAddresses)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	inters := x509.NewCertPool()
	inters.AddCert(inter.Cert)
	if _, err := serving.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: roots, Intermediates: inters, CurrentTime: now}); err != nil {
		t.Errorf("serving cert does not verify for localhost: %v", err)
	}

	sign, err := inter.IssueSVID(IssueRequest{
		PublicKey:   mustEd25519(t).Public(),
		ID:          authID,
		TTL:         24 * time.Hour,
		Now:         now,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sign.ExtKeyUsage) != 1 || sign.ExtKeyUsage[0] != x509.ExtKeyUsageAny || sign.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("signing cert usages %v %v", sign.KeyUsage, sign.ExtKeyUsage)
	}
	bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{root.Cert})
	if id, _, err := x509svid.Verify([]*x509.Certificate{sign, inter.Cert}, bundle, x509svid.WithTime(now)); err != nil || id != authID {
		t.Errorf("signing cert: %v, %v", id, err)
	}
}

func TestSignerPEMRoundTrip(t *testing.T) {
	now := testNow()
	root, inter := newChain(t, now)

	der, err := MarshalKey(inter.Key)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ParseKey(der)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(inter.Cert, key)
	if err != nil {
		t.Fatal(err)
	}
	// The reloaded signer issues certificates that chain like before.
	checkLeaf(t, issue(t, s, now, time.Hour), inter, now, now.Add(time.Hour))

	keyPEM, err := EncodeKeyPEM(inter.Key)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(inter.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1PEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})
	chainPEM := EncodeCertsPEM(inter.Cert, root.Cert)
	rootKeyPEM, err := EncodeKeyPEM(root.Key)
	if err != nil {
		t.Fatal(err)
	}
	leafPEM := EncodeCertsPEM(issue(t, inter, now, time.Hour))

	for _, tc := range []struct {
		name            string
		certPEM, keyPEM []byte
		wantErr         error
		wantAnyErr      bool
	}{
		{"pkcs8", chainPEM, keyPEM, nil, false},
		{"sec1", chainPEM, sec1PEM, nil, false},
		{"wrong key", chainPEM, rootKeyPEM, ErrKeyMismatch, true},
		{"leaf cert", leafPEM, keyPEM, ErrNotCA, true},
		{"no key", chainPEM, nil, nil, true},
		{"no cert", nil, keyPEM, nil, true},
		{"rsa key block", chainPEM, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1}}), nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSignerFromPEM(tc.certPEM, tc.keyPEM)
			if !tc.wantAnyErr {
				if err != nil {
					t.Fatal(err)
				}
				if !s.Cert.Equal(inter.Cert) {
					t.Error("wrong certificate")
				}
				return
			}
			if err == nil {
				t.Fatal("NewSignerFromPEM succeeded")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}

	if _, err := ParseKey([]byte("junk")); err == nil {
		t.Error("ParseKey(junk) succeeded")
	}
}

func TestSerialHex(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"1", "1", false},
		{"00ff", "ff", false},
		{"DEADBEEF", "deadbeef", false},
		{"0xabc", "abc", false},
		{"de:ad:be:ef", "deadbeef", false},
		{strings.Repeat("f", 40), strings.Repeat("f", 40), false},
		{strings.Repeat("f", 41), "", true},
		{"", "", true},
		{"0", "", true},
		{"-1", "", true},
		{"xyz", "", true},
		{"12 34", "", true},
		{"+12", "", true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			n, err := ParseSerialHex(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrSerial) {
					t.Fatalf("ParseSerialHex(%q) = %v, %v; want ErrSerial", tc.in, n, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := SerialHex(n); got != tc.want {
				t.Fatalf("SerialHex = %q, want %q", got, tc.want)
			}
		})
	}
	if SerialHex(nil) != "" {
		t.Error("SerialHex(nil) != \"\"")
	}

	// Issued serials round-trip and are lower-case.
	now := testNow()
	_, inter := newChain(t, now)
	leaf := issue(t, inter, now, time.Hour)
	h := SerialHex(leaf.SerialNumber)
	if h != strings.ToLower(h) {
		t.Errorf("SerialHex not lower-case: %s", h)
	}
	n, err := ParseSerialHex(h)
	if err != nil || n.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("round trip %s: %v %v", h, n, err)
	}
}

func TestCertsPEM(t *testing.T) {
	now := testNow()
	root, inter := newChain(t, now)
	leaf := issue(t, inter, now, time.Hour)

	data := EncodeCertsPEM(leaf, inter.Cert, root.Cert)
	certs, err := ParseCertsPEM(append([]byte("# chain\n"), data...))
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 3 || !certs[0].Equal(leaf) || !certs[1].Equal(inter.Cert) || !certs[2].Equal(root.Cert) {
		t.Fatal("round trip mismatch")
	}
	keyPEM, _ := EncodeKeyPEM(inter.Key)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not pem")},
		{"key block", append(bytes.Clone(data), keyPEM...)},
		{"bad der", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseCertsPEM(tc.data); err == nil {
				t.Fatal("ParseCertsPEM succeeded")
			}
		})
	}

	fp := Fingerprint(root.Cert)
	if len(fp) != 64 || fp != strings.ToLower(fp) || fp == Fingerprint(inter.Cert) {
		t.Errorf("Fingerprint = %q", fp)
	}
}
