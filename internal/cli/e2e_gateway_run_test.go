package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGatewayRunStandalone runs `ward gateway run` as production does: a
// bootstrap token from `ward gateway token`, its own certificate files, a
// config file, and nothing else (no admin token).
func TestGatewayRunStandalone(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startDev(t, t.TempDir())
	d.mustWard("team", "create", "id")
	whoDir := d.newService("id", "whoami", "L1")
	w := startWhoami(t, d, whoDir, "")

	var tok struct {
		Token    string `json:"token"`
		SPIFFEID string `json:"spiffe_id"`
	}
	if err := json.Unmarshal([]byte(d.mustWard("gateway", "token", "--ttl", "1h", "-o", "json")), &tok); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Token, "wardbt_") || tok.SPIFFEID != "spiffe://ward.test/ward/gateway" {
		t.Fatalf("gateway token: %+v", tok)
	}

	// The external certificate: the operator's own, not ward's.
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfgFile := filepath.Join(dir, "gateway.yaml")
	cfg := "data_dir: " + filepath.Join(dir, "data") + "\nlog: {format: text, level: warn}\ngateway:\n  listen: " + addr +
		"\n  authority_url: " + d.vars["WARD_AUTHORITY"] + "\n  ca_bundle: " + d.vars["WARD_CA_BUNDLE"] +
		"\n  tls_cert: " + certFile + "\n  tls_key: " + keyFile + "\n  passport_ttl: 20s\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WARD_GATEWAY_TOKEN", tok.Token)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config", cfgFile, "gateway", "run"}, strings.NewReader(""), io.Discard, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("ward gateway run did not stop")
		}
	})

	d.mustWard("route", "set", "who", "--prefix", "/", "--service", "whoami", "--upstream", "https://"+w.addr)
	var key struct {
		Key string `json:"api_key"`
	}
	if err := json.Unmarshal([]byte(d.mustWard("apikey", "create", "--subject", "dave", "-o", "json")), &key); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var ans gatewayAnswer
	waitFor(t, 15*time.Second, "the standalone gateway forwards", func() bool {
		select {
		case code := <-done:
			t.Fatalf("ward gateway run exited with %d", code)
		default:
		}
		req, _ := http.NewRequest("GET", "https://"+addr+"/x", nil)
		req.Header.Set("X-Api-Key", key.Key)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && json.Unmarshal(body, &ans) == nil
	})
	if ans.CallerSPIFFEID != "spiffe://ward.test/ward/gateway" || ans.Passport == nil || ans.Passport.Sub != "dave" {
		t.Fatalf("whoami through the standalone gateway: %+v %+v", ans, ans.Passport)
	}
	if ans.Passport.Exp-time.Now().Unix() > 20 {
		t.Fatalf("passport_ttl not applied: exp %d", ans.Passport.Exp)
	}
	// The SVID is kept for restarts.
	if _, err := os.Stat(filepath.Join(dir, "data", "gateway", "svid.pem")); err != nil {
		t.Fatalf("gateway SVID not kept: %v", err)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "gateway.example"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "gw.crt"), filepath.Join(dir, "gw.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}
