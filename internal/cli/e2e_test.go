package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"golang.org/x/crypto/ocsp"

	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/bus"
)

// devEnv is a running `ward dev` (in-process, real listeners) and the
// variables it wrote to dev.env.
type devEnv struct {
	t      *testing.T
	dir    string
	vars   map[string]string
	cancel context.CancelFunc
	done   chan int
}

// startDev runs `ward dev --data dir --listen 127.0.0.1:0` and waits for dev.env.
func startDev(t *testing.T, dir string, extra ...string) *devEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devEnv{t: t, dir: dir, cancel: cancel, done: make(chan int, 1)}
	envPath := filepath.Join(dir, "dev.env")
	var before time.Time
	if st, err := os.Stat(envPath); err == nil {
		before = st.ModTime()
	}
	go func() {
		args := append([]string{"dev", "--data", dir, "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--vault-listen", "127.0.0.1:0"}, extra...)
		d.done <- run(ctx, args, strings.NewReader(""), io.Discard, io.Discard)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err := os.Stat(envPath); err == nil && st.ModTime().After(before) {
			vars, err := readEnvFile(envPath)
			if err == nil && vars["WARD_AUTHORITY"] != "" {
				d.vars = vars
				break
			}
		}
		select {
		case code := <-d.done:
			t.Fatalf("ward dev exited with %d", code)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("ward dev did not write dev.env in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(d.stop)
	return d
}

func (d *devEnv) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.t.Error("ward dev did not stop")
	}
}

// ward runs one CLI command against the dev environment and returns stdout.
func (d *devEnv) ward(args ...string) (string, error) {
	d.t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"--authority", d.vars["WARD_AUTHORITY"], "--ca-bundle", d.vars["WARD_CA_BUNDLE"], "--admin-token", d.vars["WARD_ADMIN_TOKEN"]}, args...)
	code := run(context.Background(), full, strings.NewReader(""), &out, &errb)
	if code != 0 {
		return out.String(), &cliError{code: code, stderr: errb.String()}
	}
	return out.String(), nil
}

func (d *devEnv) mustWard(args ...string) string {
	d.t.Helper()
	out, err := d.ward(args...)
	if err != nil {
		d.t.Fatalf("ward %s: %v", strings.Join(args, " "), err)
	}
	return out
}

type cliError struct {
	code   int
	stderr string
}

func (e *cliError) Error() string { return e.stderr }

// newService registers a service and fetches its SVID into a directory.
func (d *devEnv) newService(team, name, level string, extra ...string) (dir string) {
	d.t.Helper()
	var created map[string]any
	args := append([]string{"service", "create", name, "--team", team, "--level", level, "--output", "json"}, extra...)
	if err := json.Unmarshal([]byte(d.mustWard(args...)), &created); err != nil {
		d.t.Fatal(err)
	}
	if created["spiffe_id"] != "spiffe://ward.test/svc/"+name {
		d.t.Fatalf("spiffe_id = %v", created["spiffe_id"])
	}
	tok, _ := created["bootstrap_token"].(string)
	if !strings.HasPrefix(tok, "wardbt_") {
		d.t.Fatalf("bootstrap_token = %q", tok)
	}
	dir = filepath.Join(d.t.TempDir(), name)
	d.mustWard("svid", "fetch", "--bootstrap-token", tok, "--out", dir)
	return dir
}

func TestDevEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	data := t.TempDir()
	d := startDev(t, data)
	for _, k := range []string{"WARD_AUTHORITY", "WARD_CA_BUNDLE", "WARD_ADMIN_TOKEN", "WARD_TRUST_DOMAIN", "WARD_NATS_URL"} {
		if d.vars[k] == "" {
			t.Fatalf("dev.env lacks %s", k)
		}
	}
	d.mustWard("team", "create", "shop")
	webDir := d.newService("shop", "web", "L2")
	apiDir := d.newService("shop", "api", "L3")

	t.Run("svid files", func(t *testing.T) {
		st, err := os.Stat(filepath.Join(webDir, "svid.key"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("svid.key mode %v, want 0600", st.Mode().Perm())
		}
		svid, err := x509svid.Load(filepath.Join(webDir, "svid.pem"), filepath.Join(webDir, "svid.key"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString("ward.test"), filepath.Join(webDir, "bundle.pem"))
		if err != nil {
			t.Fatal(err)
		}
		id, _, err := x509svid.Verify(svid.Certificates, b)
		if err != nil {
			t.Fatalf("go-spiffe rejects the SVID: %v", err)
		}
		if id.String() != "spiffe://ward.test/svc/web" {
			t.Fatalf("id %s", id)
		}
		leaf := svid.Certificates[0]
		if len(leaf.URIs) != 1 || leaf.IsCA || leaf.Subject.SerialNumber == "" || len(leaf.OCSPServer) != 1 || len(leaf.CRLDistributionPoints) != 1 {
			t.Fatalf("leaf fields: uris=%v ca=%v instance=%q ocsp=%v crl=%v", leaf.URIs, leaf.IsCA, leaf.Subject.SerialNumber, leaf.OCSPServer, leaf.CRLDistributionPoints)
		}
		// L3 services get 15-minute SVIDs by default.
		api, err := x509svid.Load(filepath.Join(apiDir, "svid.pem"), filepath.Join(apiDir, "svid.key"))
		if err != nil {
			t.Fatal(err)
		}
		if life := time.Until(api.Certificates[0].NotAfter); life > 16*time.Minute || life < 10*time.Minute {
			t.Fatalf("L3 lifetime %v", life)
		}
		if _, err := exec.LookPath("openssl"); err == nil {
			out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(webDir, "bundle.pem"), "-untrusted", filepath.Join(webDir, "svid.pem"), filepath.Join(webDir, "svid.pem")).CombinedOutput()
			if err != nil || !strings.Contains(string(out), ": OK") {
				t.Fatalf("openssl verify: %v\n%s", err, out)
			}
		}
	})

	t.Run("svid show and renew", func(t *testing.T) {
		var before, after svidInfo
		if err := json.Unmarshal([]byte(d.mustWard("svid", "show", "--dir", webDir, "-o", "json")), &before); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(d.mustWard("svid", "renew", "--dir", webDir, "-o", "json")), &after); err != nil {
			t.Fatal(err)
		}
		if before.Serial == after.Serial || after.SPIFFEID != before.SPIFFEID {
			t.Fatalf("renew: before %+v after %+v", before, after)
		}
	})

	t.Run("whoami and revocation within one second", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		server := runSource(t, ctx, d, apiDir)
		addr := serveWhoami(t, ctx, server)

		client := newClient(t, ctx, d, webDir)
		var got struct {
			CallerSPIFFEID string `json:"caller_spiffe_id"`
		}
		if err := getJSON(client, "https://"+addr+"/anything", &got); err != nil {
			t.Fatal(err)
		}
		if got.CallerSPIFFEID != "spiffe://ward.test/svc/web" {
			t.Fatalf("caller %q", got.CallerSPIFFEID)
		}
		// The server staples its own OCSP response (fetched from the
		// authority after issuance) to its handshakes.
		waitFor(t, 5*time.Second, "an OCSP staple from whoami", func() bool {
			conn, err := tls.Dial("tcp", addr, client.src.ClientTLSConfig(identity.AuthorizeAny()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			staple := conn.ConnectionState().OCSPResponse
			if len(staple) == 0 {
				return false
			}
			chain := server.SVID().Certificates
			resp, err := ocsp.ParseResponseForCert(staple, chain[0], chain[1])
			if err != nil {
				t.Fatalf("staple: %v", err)
			}
			return resp.Status == ocsp.Good
		})

		serial := client.svidSerial()
		d.mustWard("svid", "revoke", "--serial", serial)
		revokedAt := time.Now()
		for {
			// Fresh connection each time: the handshake must be refused.
			fresh := client.fresh()
			err := getJSON(fresh, "https://"+addr+"/", &got)
			if err != nil {
				break
			}
			if time.Since(revokedAt) > time.Second {
				t.Fatal("revoked client still accepted after 1s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("revoked client refused %v after revoke returned", time.Since(revokedAt))
		checkOpenSSLRevoked(t, d, webDir, serial)
		// A revoked SVID cannot renew: a clear one-line refusal.
		if _, err := d.ward("svid", "renew", "--dir", webDir); err == nil || !strings.Contains(err.Error(), "revoked") || strings.Count(strings.TrimSpace(err.Error()), "\n") != 0 {
			t.Fatalf("renew with a revoked SVID: %v", err)
		}
	})

	t.Run("bus admits only ward components", func(t *testing.T) {
		svid, err := x509svid.Load(filepath.Join(apiDir, "svid.pem"), filepath.Join(apiDir, "svid.key"))
		if err != nil {
			t.Fatal(err)
		}
		roots, err := loadPEMCerts(d.vars["WARD_CA_BUNDLE"])
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		for _, r := range roots {
			pool.AddCert(r)
		}
		cert := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
		for _, c := range svid.Certificates {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		for name, conf := range map[string]*tls.Config{
			"no client certificate": {RootCAs: pool, MinVersion: tls.VersionTLS12},
			"service SVID":          {RootCAs: pool, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			conn, err := bus.Connect(ctx, d.vars["WARD_NATS_URL"], conf, "intruder")
			cancel()
			if err == nil {
				conn.Close()
				t.Fatalf("%s: connected to the bus", name)
			}
		}
	})

	t.Run("fetch trusting a pinned root fingerprint", func(t *testing.T) {
		roots, err := loadPEMCerts(d.vars["WARD_CA_BUNDLE"])
		if err != nil || len(roots) != 1 {
			t.Fatalf("bundle: %v %d", err, len(roots))
		}
		sum := sha256.Sum256(roots[0].Raw)
		var created map[string]any
		if err := json.Unmarshal([]byte(d.mustWard("service", "create", "pinned", "--team", "shop", "--token-ttl", "1h", "-o", "json")), &created); err != nil {
			t.Fatal(err)
		}
		if created["bootstrap_token_expires_at"] == nil {
			t.Fatalf("no token expiry in %v", created)
		}
		fetch := func(fp string) (int, string) {
			var out, errb bytes.Buffer
			code := run(context.Background(), []string{"--authority", d.vars["WARD_AUTHORITY"], "--ca-bundle", "", "svid", "fetch",
				"--root-fingerprint", fp, "--bootstrap-token", created["bootstrap_token"].(string), "--out", filepath.Join(t.TempDir(), "p")}, strings.NewReader(""), &out, &errb)
			return code, errb.String()
		}
		wrong := sha256.Sum256([]byte("another root"))
		if code, msg := fetch(hex.EncodeToString(wrong[:])); code == 0 {
			t.Fatal("fetch trusted an authority whose root does not match the pin")
		} else if strings.Count(strings.TrimSpace(msg), "\n") != 0 {
			t.Fatalf("error is not one line: %q", msg)
		}
		if code, msg := fetch(hex.EncodeToString(sum[:])); code != 0 {
			t.Fatalf("fetch with the right pin: %d %s", code, msg)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"unknown team", []string{"service", "create", "x", "--team", "nope"}, "team"},
			{"bad name", []string{"team", "create", "Bad Name"}, "name"},
			{"bad level", []string{"service", "create", "y", "--team", "shop", "--level", "L9"}, "level"},
			{"ttl over 24h", []string{"service", "create", "z", "--team", "shop", "--svid-ttl", "25h"}, "ttl"},
			{"wrong bootstrap token", []string{"svid", "fetch", "--bootstrap-token", "wardbt_AAAA", "--out", t.TempDir()}, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := d.ward(tc.args...)
				var ce *cliError
				if err == nil || !asCLIError(err, &ce) || ce.code != 1 {
					t.Fatalf("want exit 1, got %v", err)
				}
				if strings.Count(strings.TrimSpace(ce.stderr), "\n") != 0 {
					t.Fatalf("error is not one line: %q", ce.stderr)
				}
				if !strings.Contains(strings.ToLower(ce.stderr), tc.want) {
					t.Fatalf("stderr %q lacks %q", ce.stderr, tc.want)
				}
			})
		}
	})

	// Restart on the same directory keeps all state.
	d.stop()
	d2 := startDev(t, data)
	if d2.vars["WARD_ADMIN_TOKEN"] != d.vars["WARD_ADMIN_TOKEN"] {
		t.Fatal("admin token changed across restart")
	}
	out := d2.mustWard("service", "list", "-o", "json")
	if !strings.Contains(out, `"web"`) || !strings.Contains(out, `"api"`) {
		t.Fatalf("services lost across restart: %s", out)
	}
	d2.mustWard("svid", "renew", "--dir", apiDir)
}

func asCLIError(err error, target **cliError) bool {
	ce, ok := err.(*cliError)
	if ok {
		*target = ce
	}
	return ok
}

// runSource starts an identity.Source on the SVID directory dir (as
// written by `ward svid fetch`), renewing against the dev authority until
// ctx ends; it is closed when the test ends.
func runSource(t *testing.T, ctx context.Context, d *devEnv, dir string) *identity.Source {
	t.Helper()
	src, err := identity.New(ctx, identity.Config{AuthorityURL: d.vars["WARD_AUTHORITY"], Dir: dir, BundleFile: filepath.Join(dir, "bundle.pem")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	go func() { _ = src.Run(ctx) }()
	return src
}

// sdkClient is an HTTP client whose TLS comes from an identity.Source.
type sdkClient struct {
	*http.Client
	src *identity.Source
}

func newClient(t *testing.T, ctx context.Context, d *devEnv, dir string) *sdkClient {
	t.Helper()
	c := &sdkClient{src: runSource(t, ctx, d, dir)}
	c.Client = c.fresh().Client
	return c
}

func (c *sdkClient) fresh() *sdkClient {
	return &sdkClient{src: c.src, Client: &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: c.src.ClientTLSConfig(identity.AuthorizeAny()), DisableKeepAlives: true},
	}}
}

func (c *sdkClient) svidSerial() string { return c.src.SVID().Certificates[0].SerialNumber.Text(16) }

func getJSON(c *sdkClient, url string, out any) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return &cliError{code: resp.StatusCode, stderr: string(b)}
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
