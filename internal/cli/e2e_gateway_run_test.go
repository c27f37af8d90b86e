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

	addr, pool, stateDir := startGatewayRun(t, d, tok.Token)
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
	if _, err := os.Stat(filepath.Join(stateDir, "svid.pem")); err != nil {
		t.Fatalf("gateway SVID not kept: %v", err)
	}
}

// startGatewayRun runs `ward gateway run` in-process against d's
// authority with the bootstrap token, its own self-signed certificate and
// a config file; it returns the listen address, a pool trusting the
// certificate and the state directory.
func startGatewayRun(t *testing.T, d *devEnv, token string) (addr string, pool *x509.CertPool, stateDir string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	cfgFile := filepath.Join(dir, "gateway.yaml")
	cfg := "data_dir: " + filepath.Join(dir, "data") + "\nlog: {format: text, level: warn}\ngateway:\n  listen: " + addr +
		"\n  authority_url: " + d.vars["WARD_AUTHORITY"] + "\n  ca_bundle: " + d.vars["WARD_CA_BUNDLE"] +
		"\n  tls_cert: " + certFile + "\n  tls_key: " + keyFile + "\n  passport_ttl: 20s\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WARD_GATEWAY_TOKEN", token)
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
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	waitFor(t, 15*time.Second, "ward gateway run is ready", func() bool {
		select {
		case code := <-done:
			t.Fatalf("ward gateway run exited with %d", code)
		default:
		}
		resp, err := hc.Get("https://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return addr, pool, filepath.Join(dir, "data", "gateway")
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

// TestGatewayAcrossReplicas: a gateway attached to replica A follows
// routes set and API keys revoked on replica B (PostgreSQL + NATS).
func TestGatewayAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	a, b := startReplicas(t, "")
	b.mustWard("team", "create", "id")
	whoDir := b.newService("id", "whoami", "L1")
	w := startWhoami(t, a, whoDir, "")
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(b.mustWard("gateway", "token", "-o", "json")), &tok); err != nil {
		t.Fatal(err)
	}
	addr, pool, _ := startGatewayRun(t, a, tok.Token)
	var key struct {
		ID  string `json:"id"`
		Key string `json:"api_key"`
	}
	if err := json.Unmarshal([]byte(b.mustWard("apikey", "create", "--subject", "erin", "-o", "json")), &key); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	status := func() int {
		req, _ := http.NewRequest("GET", "https://"+addr+"/who/x", nil)
		req.Header.Set("Authorization", "Bearer "+key.Key)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(); got != http.StatusNotFound {
		t.Fatalf("before the route: %d", got)
	}
	waitFor(t, 10*time.Second, "whoami has declared", func() bool {
		_, err := b.ward("route", "set", "who", "--prefix", "/who", "--service", "whoami", "--upstream", "https://"+w.addr)
		return err == nil
	})
	set := time.Now()
	waitFor(t, 2*time.Second, "the route set on replica B works through the gateway on replica A", func() bool { return status() == http.StatusOK })
	t.Logf("route crossed replicas in %v", time.Since(set).Round(time.Millisecond))
	b.mustWard("apikey", "revoke", key.ID)
	revoked := time.Now()
	waitFor(t, time.Second, "the key revoked on replica B is refused", func() bool { return status() == http.StatusUnauthorized })
	t.Logf("revocation crossed replicas in %v", time.Since(revoked).Round(time.Millisecond))
}
