package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/examples/whoami"
	"github.com/wardsec/ward/identity"
)

// serveWhoami serves the whoami handler with src's server TLS config on a
// loopback port and returns its address.
func serveWhoami(t *testing.T, ctx context.Context, src *identity.Source) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           src.Middleware(whoami.Handler(src)),
		TLSConfig:         src.ServerTLSConfig(identity.AuthorizeMemberOf(src.ID().TrustDomain())),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return ln.Addr().String()
}

// authorityGet fetches url from the dev authority over TLS (trusting the
// dev bundle) and returns the body.
func authorityGet(t *testing.T, d *devEnv, method, url, contentType string, body []byte) []byte {
	t.Helper()
	g := &globals{caBundle: d.vars["WARD_CA_BUNDLE"]}
	tlsConf, err := g.authorityTLS()
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, out)
	}
	return out
}

// checkOpenSSLRevoked asks the authority's OCSP responder and CRL about the
// revoked serial, and has openssl read both answers.
func checkOpenSSLRevoked(t *testing.T, d *devEnv, dir, serial string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	svid, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	leafPEM := filepath.Join(tmp, "leaf.pem")
	intPEM := filepath.Join(tmp, "int.pem")
	writePEM(t, leafPEM, svid.Certificates[0])
	writePEM(t, intPEM, svid.Certificates[1])
	leaf := svid.Certificates[0]

	// OCSP: openssl builds the request, the authority answers over HTTPS,
	// openssl verifies the signed response and reports the status.
	reqPath := filepath.Join(tmp, "req.der")
	runOpenSSL(t, "ocsp", "-issuer", intPEM, "-cert", leafPEM, "-no_nonce", "-reqout", reqPath)
	reqDER, err := os.ReadFile(reqPath)
	if err != nil {
		t.Fatal(err)
	}
	respDER := authorityGet(t, d, "POST", leaf.OCSPServer[0], "application/ocsp-request", reqDER)
	respPath := filepath.Join(tmp, "resp.der")
	if err := os.WriteFile(respPath, respDER, 0o600); err != nil {
		t.Fatal(err)
	}
	out := runOpenSSL(t, "ocsp", "-respin", respPath, "-issuer", intPEM, "-cert", leafPEM, "-CAfile", d.vars["WARD_CA_BUNDLE"])
	if !strings.Contains(out, ": revoked") || !strings.Contains(out, "Response verify OK") {
		t.Fatalf("openssl ocsp does not report revoked:\n%s", out)
	}

	// CRL: fetched from the certificate's distribution point.
	crlDER := authorityGet(t, d, "GET", leaf.CRLDistributionPoints[0], "", nil)
	crlPath := filepath.Join(tmp, "crl.der")
	if err := os.WriteFile(crlPath, crlDER, 0o600); err != nil {
		t.Fatal(err)
	}
	out = runOpenSSL(t, "crl", "-inform", "DER", "-in", crlPath, "-noout", "-text")
	if !strings.Contains(strings.ToLower(strings.ReplaceAll(out, ":", "")), strings.ToLower(padHex(serial))) {
		t.Fatalf("openssl crl does not list serial %s:\n%s", serial, out)
	}
	// The CRL is signed by the issuing intermediate.
	runOpenSSL(t, "crl", "-inform", "DER", "-in", crlPath, "-noout", "-CAfile", intPEM)
}

// padHex gives an even number of hex digits, as openssl prints serials.
func padHex(s string) string {
	if len(s)%2 == 1 {
		return "0" + s
	}
	return s
}

func writePEM(t *testing.T, path string, c *x509.Certificate) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func runOpenSSL(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func loadPEMCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out, nil
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}
