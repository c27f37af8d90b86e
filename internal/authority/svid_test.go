package authority

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/internal/ca"
)

func TestSVIDIssuance(t *testing.T) {
	e := newEnv(t)
	token := e.createService("shop", "web", "L2")
	s := e.fetch(token)

	if s.resp.SPIFFEID != "spiffe://ward.test/svc/web" || s.resp.BundleVersion != 1 {
		t.Fatalf("response %+v", s.resp)
	}
	if len(s.certs) != 2 {
		t.Fatalf("svid_pem holds %d certificates, want leaf + intermediate", len(s.certs))
	}
	id, _, err := x509svid.Verify(s.certs, e.a.cas.Load().bundle)
	if err != nil || id.String() != s.resp.SPIFFEID {
		t.Fatalf("go-spiffe: %v %v", id, err)
	}
	leaf := s.certs[0]
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(leaf.Subject.SerialNumber) || leaf.Subject.SerialNumber != s.resp.InstanceID {
		t.Fatalf("instance id %q / %q", leaf.Subject.SerialNumber, s.resp.InstanceID)
	}
	if len(leaf.URIs) != 1 || len(leaf.DNSNames) != 0 || leaf.IsCA {
		t.Fatalf("leaf SANs %v %v CA %v", leaf.URIs, leaf.DNSNames, leaf.IsCA)
	}
	var teams []teamView
	e.admin("GET", "/v1/teams", nil, http.StatusOK, &teams)
	if len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != e.url+"/ocsp" {
		t.Fatalf("OCSP %v", leaf.OCSPServer)
	}
	if len(leaf.CRLDistributionPoints) != 1 || leaf.CRLDistributionPoints[0] != e.url+"/crl/"+teams[0].CAID+".crl" {
		t.Fatalf("CRL DP %v, team CA %s", leaf.CRLDistributionPoints, teams[0].CAID)
	}
	if life := time.Until(leaf.NotAfter); life > time.Hour || life < 59*time.Minute {
		t.Fatalf("L2 lifetime %v", life)
	}
	if !s.resp.ExpiresAt.Equal(leaf.NotAfter) || s.resp.Serial != s.serial() {
		t.Fatalf("expires_at %v serial %s", s.resp.ExpiresAt, s.resp.Serial)
	}
	bundle, err := ca.ParseCertsPEM([]byte(s.resp.BundlePEM))
	if err != nil || len(bundle) != 1 {
		t.Fatalf("bundle %d %v", len(bundle), err)
	}
	// Persisted, visible to admins.
	var info map[string]any
	e.admin("GET", "/v1/svids/"+strings.ToUpper(s.serial()), nil, http.StatusOK, &info)
	if info["serial"] != s.serial() || info["service"] != "web" || info["issuer_id"] != teams[0].CAID || info["revoked_at"] != nil {
		t.Fatalf("svid info %v", info)
	}

	// Other key types a CSR may carry.
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, csr := range map[string]string{
		"ed25519":        csrPEM(t, edKey, "", nil),
		"rsa":            csrPEM(t, rsaKey, "", nil),
		"own id":         csrPEM(t, newKey(t), "spiffe://ward.test/svc/web", nil),
		"leading spaces": "\n\n" + csrPEM(t, newKey(t), "", nil),
	} {
		resp, body := e.do(nil, "POST", "/v1/svid", token, map[string]string{"csr": csr})
		if resp.StatusCode != http.StatusCreated {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
}

func mustDER(t *testing.T, p string) []byte {
	b, _ := pem.Decode([]byte(p))
	if b == nil {
		t.Fatal("no PEM")
	}
	return b.Bytes
}

func TestSVIDBadInput(t *testing.T) {
	e := newEnv(t)
	token := e.createService("shop", "web", "L2")
	revokedToken := e.createService("shop", "gone", "L2")
	e.admin("POST", "/v1/services/gone/revoke", nil, http.StatusOK, nil)

	key := newKey(t)
	good := csrPEM(t, key, "", nil)
	block, _ := pem.Decode([]byte(good))
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-5] ^= 0xff
	p256 := newKey(t)
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hugeCSR := csrPEM(t, p256, "", func(r *x509.CertificateRequest) {
		r.Subject.CommonName = strings.Repeat("x", 20<<10)
	})

	for _, tc := range []struct {
		name   string
		token  string
		body   any
		status int
		slug   string
	}{
		{"no token", "", map[string]string{"csr": good}, 401, slugUnauthorized},
		{"wrong token", bootstrapTokenPrefix + strings.Repeat("A", 43), map[string]string{"csr": good}, 401, slugUnauthorized},
		{"malformed token", "wardbt_AAAA", map[string]string{"csr": good}, 401, slugUnauthorized},
		{"admin token", e.adminToken, map[string]string{"csr": good}, 401, slugUnauthorized},
		{"revoked token", revokedToken, map[string]string{"csr": good}, 401, slugUnauthorized},
		{"malformed csr", token, map[string]string{"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}, 400, slugBadCSR},
		{"garbage csr", token, map[string]string{"csr": "hello"}, 400, slugBadCSR},
		{"empty csr", token, map[string]string{"csr": ""}, 400, slugBadCSR},
		{"bad signature", token, map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}))}, 400, slugBadCSR},
		{"weak key", token, map[string]string{"csr": csrPEM(t, p224, "", nil)}, 400, slugBadCSR},
		{"oversized csr", token, map[string]string{"csr": hugeCSR}, 413, slugTooLarge},
		{"oversized body", token, map[string]string{"csr": strings.Repeat("A", maxBodySize)}, 413, slugTooLarge},
		{"another service's id", token, map[string]string{"csr": csrPEM(t, newKey(t), "spiffe://ward.test/svc/admin", nil)}, 403, slugForbiddenIdentity},
		{"another trust domain", token, map[string]string{"csr": csrPEM(t, newKey(t), "spiffe://evil.test/svc/web", nil)}, 403, slugForbiddenIdentity},
		{"component id", token, map[string]string{"csr": csrPEM(t, newKey(t), "spiffe://ward.test/ward/authority", nil)}, 403, slugForbiddenIdentity},
		{"ca true", token, map[string]string{"csr": csrPEM(t, newKey(t), "", caTrueExtension(t))}, 403, slugForbiddenIdentity},
		{"dns san", token, map[string]string{"csr": csrPEM(t, newKey(t), "", func(r *x509.CertificateRequest) { r.DNSNames = []string{"evil.example"} })}, 403, slugForbiddenIdentity},
		{"two uri sans", token, map[string]string{"csr": csrPEM(t, newKey(t), "spiffe://ward.test/svc/web", func(r *x509.CertificateRequest) {
			u, _ := url.Parse("spiffe://ward.test/svc/other")
			r.URIs = append(r.URIs, u)
		})}, 403, slugForbiddenIdentity},
		{"unknown field", token, map[string]string{"csr": good, "spiffe_id": "spiffe://ward.test/svc/admin"}, 400, slugInvalidRequest},
		{"not json", token, "csr=" + good, 400, slugInvalidRequest},
		{"csr not a string", token, `{"csr":42}`, 400, slugInvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(nil, "POST", "/v1/svid", tc.token, tc.body)
			wantProblem(t, resp, body, tc.status, tc.slug)
		})
	}

	// IssueSVID's errors for callers in Go.
	ctx := context.Background()
	if _, err := e.a.IssueSVID(ctx, "nope", mustDER(t, good)); !errors.Is(err, ErrUnknownService) {
		t.Fatalf("unknown service: %v", err)
	}
	if _, err := e.a.IssueSVID(ctx, "gone", mustDER(t, good)); !errors.Is(err, ErrServiceRevoked) {
		t.Fatalf("revoked service: %v", err)
	}
	if _, err := e.a.IssueSVID(ctx, "web", []byte("junk")); !errors.Is(err, ca.ErrCSRMalformed) {
		t.Fatalf("junk csr: %v", err)
	}
	s, err := e.a.IssueSVID(ctx, "web", mustDER(t, good))
	if err != nil || len(s.Certificates) != 2 || s.ID.String() != "spiffe://ward.test/svc/web" {
		t.Fatalf("IssueSVID: %+v %v", s, err)
	}
}

func TestRenew(t *testing.T) {
	e := newEnv(t)
	token := e.createService("shop", "web", "L1")
	s := e.fetch(token)
	c := e.client(s.tlsCert())

	resp, body := e.renew(c, s)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("renew: %d %s", resp.StatusCode, body)
	}
	renewed := parseSVIDResponse(t, body, nil)
	if renewed.resp.SPIFFEID != s.resp.SPIFFEID || renewed.serial() == s.serial() {
		t.Fatalf("renewed %+v", renewed.resp)
	}

	// Without a client certificate.
	resp, body = e.renew(e.client(nil), s)
	wantProblem(t, resp, body, 401, slugUnauthorized)

	// A CSR for another identity.
	resp, body = e.do(c, "POST", "/v1/svid/renew", "", map[string]string{"csr": csrPEM(t, newKey(t), "spiffe://ward.test/svc/other", nil)})
	wantProblem(t, resp, body, 403, slugForbiddenIdentity)
	resp, body = e.do(c, "POST", "/v1/svid/renew", "", map[string]string{"csr": "junk"})
	wantProblem(t, resp, body, 400, slugBadCSR)

	// A ward component certificate that takes no bootstrap token (only
	// the gateway does) cannot renew.
	comp, err := e.a.ComponentCertificate("nats", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body = e.do(e.client(&comp), "POST", "/v1/svid/renew", "", map[string]string{"csr": csrPEM(t, newKey(t), "", nil)})
	wantProblem(t, resp, body, 403, slugForbiddenIdentity)

	// A certificate from a foreign CA fails the handshake.
	foreign := foreignCert(t)
	if _, _, err := e.try(e.client(foreign), "POST", "/v1/svid/renew", "", map[string]string{"csr": "x"}); err == nil {
		t.Fatal("foreign client certificate accepted")
	}

	// Revoked SVID: the kept-alive connection and a new one both get a 403
	// problem (the handshake admits any chain of the bundle; every
	// certificate-authenticated request re-checks revocation).
	kept := e.client(s.tlsCert())
	if resp, body := e.do(kept, "GET", "/v1/bundle", "", nil); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	e.admin("POST", "/v1/svids/"+s.serial()+"/revoke", map[string]string{"reason": "keyCompromise"}, http.StatusOK, nil)
	resp, body = e.renew(kept, s)
	wantProblem(t, resp, body, 403, slugRevoked)
	resp, body = e.renew(e.client(s.tlsCert()), s)
	wantProblem(t, resp, body, 403, slugRevoked)

	// Revoked service: even an unrevoked SVID renews no more.
	keptRenewed := e.client(e.fetch(token).tlsCert())
	if resp, body := e.do(keptRenewed, "GET", "/v1/bundle", "", nil); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	e.admin("POST", "/v1/services/web/revoke", nil, http.StatusOK, nil)
	resp, body = e.renew(keptRenewed, nil)
	wantProblem(t, resp, body, 403, slugRevoked)

	// Expired SVID: 401, on a new connection too.
	fresh := e.fetch(e.createService("shop", "api", "L1"))
	e.offset.Store(int64(2 * time.Hour))
	resp, body = e.renew(e.client(fresh.tlsCert()), fresh)
	wantProblem(t, resp, body, 401, slugUnauthorized)
	if !strings.Contains(string(body), "expired") {
		t.Fatalf("expired renewal: %s", body)
	}
}

// foreignCert is a self-made SVID-looking certificate from an unrelated CA.
func foreignCert(t *testing.T) *tls.Certificate {
	t.Helper()
	td, _ := url.Parse("spiffe://ward.test")
	caKey := newKey(t)
	caTmpl := &x509.Certificate{SerialNumber: bigOne(), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{td}}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	id, _ := url.Parse("spiffe://ward.test/svc/web")
	key := newKey(t)
	leafTmpl := &x509.Certificate{SerialNumber: bigOne(), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{id}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key}
}

func bigOne() *big.Int { return big.NewInt(1) }

func TestBundleEndpoint(t *testing.T) {
	e := newEnv(t)
	resp, body := e.do(nil, "GET", "/v1/bundle", "", nil)
	var b map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(body, &b) != nil {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if b["trust_domain"] != "ward.test" || b["version"].(float64) != 1 || !strings.Contains(b["bundle_pem"].(string), "BEGIN CERTIFICATE") {
		t.Fatalf("bundle %v", b)
	}
	e.signingKeyOf() // verifies the signing certificate chain
}

// TestServeStops checks that Serve returns when its context ends, even with
// a watch stream open.
func TestServeStops(t *testing.T) {
	k := newKMS(t)
	st, res := initStore(t, t.TempDir(), k)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(context.Background(), Config{Store: st, KMS: k, PublicURL: "https://" + ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	e := &env{t: t, a: a, st: st, url: "https://" + ln.Addr().String(), adminToken: res.AdminToken}
	s := e.fetch(e.createService("shop", "web", "L1"))
	ws, err := e.watch(e.client(s.tlsCert()), "")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.close()
	ws.next(t, 5*time.Second)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}
