package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"testing"
	"time"
)

// partnerCA makes a CA and a client certificate for CN "partner-7".
func partnerCA(t *testing.T) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "partner CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "partner-7"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestPartnerCertificate(t *testing.T) {
	pool, cert := partnerCA(t)
	e := newEnv(t, func(c *Config) { c.PartnerCAs = pool })
	e.setRoute("partners", map[string]any{"prefix": "/partners", "service": "orders", "upstream": e.upstream, "credentials": []string{"mtls", "apikey"}})
	e.setRoute("orders", ordersRoute(map[string]any{"upstream": e.upstream}))
	pc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.trust, Certificates: []tls.Certificate{cert}}}}
	defer pc.CloseIdleConnections()
	get := func(path string) (int, []byte) {
		resp, err := pc.Get(e.gwURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, body := get("/partners/x")
	if code != 200 {
		t.Fatalf("partner: %d %s", code, body)
	}
	p := decodeEcho(t, body).Passport
	if p == nil || p.Subject != "partner-7" || p.AuthMethod != CredMTLS || p.Issuer != "CN=partner CA" || p.TokenFingerprint == "" {
		t.Fatalf("partner passport: %+v", p)
	}
	// A route that does not accept partner certificates refuses it.
	if code, body := get("/orders/x"); code != http.StatusUnauthorized {
		t.Fatalf("orders with a partner certificate: %d %s", code, body)
	}
	// A certificate from another CA fails the handshake.
	_, stranger := partnerCA(t)
	sc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.trust, Certificates: []tls.Certificate{stranger}}}}
	if resp, err := sc.Get(e.gwURL + "/partners/x"); err == nil {
		resp.Body.Close()
		t.Fatalf("a stranger's certificate was accepted: %d", resp.StatusCode)
	}
}
