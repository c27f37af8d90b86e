package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/wardsec/ward/internal/store/storetest"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAuthorityInitAndRun drives the production commands: `ward authority
// init` (once only) and `ward authority run` from a YAML config, on SQLite
// and PostgreSQL, with a KEK file or a passphrase.
func TestAuthorityInitAndRun(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	for _, tc := range []struct {
		name     string
		postgres bool
		pass     bool
	}{
		{name: "sqlite kek file"},
		{name: "sqlite passphrase", pass: true},
		{name: "postgres kek file", postgres: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := "trust_domain: prod.example\ndata_dir: " + dir + "\nauthority:\n  listen: 127.0.0.1:0\nlog: {format: json}\n"
			if tc.postgres {
				cfg += "store:\n  dsn: '" + storetest.PostgresDSN(t) + "'\n"
			}
			if tc.pass {
				cfg += "kms:\n  passphrase_env: WARD_TEST_KEK_PASSPHRASE\n"
				t.Setenv("WARD_TEST_KEK_PASSPHRASE", "correct horse battery staple")
			}
			cfgPath, res := initWithConfig(t, dir, cfg)
			var out, errb bytes.Buffer
			if res["trust_domain"] != "prod.example" || !strings.HasPrefix(res["admin_token"], "wardadm_") || len(res["root_fingerprint"]) != 64 {
				t.Fatalf("init answered %v", res)
			}
			errb.Reset()
			if code := run(t.Context(), []string{"authority", "init", "--config", cfgPath}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "already initialized") {
				t.Fatalf("second init: %d %q", code, errb.String())
			}

			if tc.pass {
				// The wrong passphrase cannot unseal the keys: a clear refusal.
				t.Setenv("WARD_TEST_KEK_PASSPHRASE", "incorrect horse battery staple")
				errb.Reset()
				if code := run(t.Context(), []string{"authority", "run", "--config", cfgPath}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "wrong key-encryption key") {
					t.Fatalf("run with a wrong passphrase: %d %q", code, errb.String())
				}
				t.Setenv("WARD_TEST_KEK_PASSPHRASE", "correct horse battery staple")
			}
			logs := &syncBuffer{}
			addr := startAuthorityRunLogs(t, cfgPath, logs)
			d := &devEnv{t: t, vars: map[string]string{
				"WARD_AUTHORITY":   "https://" + addr,
				"WARD_CA_BUNDLE":   filepath.Join(dir, "bundle.pem"),
				"WARD_ADMIN_TOKEN": res["admin_token"],
			}}
			d.mustWard("team", "create", "payments")
			var created map[string]any
			if err := json.Unmarshal([]byte(d.mustWard("service", "create", "ledger", "--team", "payments", "--level", "L3", "-o", "json")), &created); err != nil {
				t.Fatal(err)
			}
			if created["spiffe_id"] != "spiffe://prod.example/svc/ledger" {
				t.Fatalf("created %v", created)
			}
			svidDir := filepath.Join(t.TempDir(), "ledger")
			d.mustWard("svid", "fetch", "--bootstrap-token", created["bootstrap_token"].(string), "--out", svidDir)
			d.mustWard("svid", "renew", "--dir", svidDir)
			if strings.Contains(logs.String(), res["admin_token"]) || strings.Contains(logs.String(), created["bootstrap_token"].(string)) {
				t.Fatal("a token appears in the logs")
			}
		})
	}
}

func TestPlaintextBusOK(t *testing.T) {
	for _, tc := range []struct {
		url       string
		plain, ok bool
	}{
		{"tls://nats.example:4222", false, true},
		{"nats://127.0.0.1:4222", true, true},
		{"nats://localhost:4222", true, true},
		{"nats://[::1]:4222", true, true},
		{"nats://10.0.0.5:4222", false, false},
		{"nats://nats.example:4222", false, false},
		{"http://127.0.0.1:4222", false, false},
		{"://bad", false, false},
	} {
		t.Run(tc.url, func(t *testing.T) {
			plain, err := plaintextBusOK(tc.url)
			if plain != tc.plain || (err == nil) != tc.ok {
				t.Fatalf("plaintextBusOK(%q) = %v, %v", tc.url, plain, err)
			}
		})
	}
}

// startAuthorityRun runs `ward authority run --config cfgPath` in-process
// and returns its address once it serves.
func startAuthorityRun(t *testing.T, cfgPath string) string {
	t.Helper()
	return startAuthorityRunLogs(t, cfgPath, &syncBuffer{})
}

func startAuthorityRunLogs(t *testing.T, cfgPath string, logs *syncBuffer) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"authority", "run", "--config", cfgPath}, nil, &bytes.Buffer{}, logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("authority run did not stop")
		}
	})
	addrRe := regexp.MustCompile(`"msg":"authority serving","addr":"([0-9.:]+)"`)
	var addr string
	waitFor(t, 20*time.Second, "authority serving", func() bool {
		select {
		case code := <-done:
			t.Fatalf("authority run exited %d: %s", code, logs.String())
		default:
		}
		if m := addrRe.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	return addr
}

// TestReplicasOverExternalBus runs two authority replicas on one store,
// joined by an external NATS server: a revocation made on replica A reaches
// an SDK watching replica B within a second.
func TestReplicasOverExternalBus(t *testing.T) {
	natsURL := os.Getenv("WARD_TEST_NATS_URL")
	if natsURL == "" {
		t.Skip("WARD_TEST_NATS_URL not set; e.g. nats://127.0.0.1:4222")
	}
	dir := t.TempDir()
	cfg := "trust_domain: replicas.test\ndata_dir: " + dir + "\nauthority:\n  listen: 127.0.0.1:0\nbus:\n  url: " + natsURL + "\n"
	cfgPath, res := initWithConfig(t, dir, cfg)
	addrA, addrB := startAuthorityRun(t, cfgPath), startAuthorityRun(t, cfgPath)
	env := func(addr string) *devEnv {
		return &devEnv{t: t, vars: map[string]string{
			"WARD_AUTHORITY":   "https://" + addr,
			"WARD_CA_BUNDLE":   filepath.Join(dir, "bundle.pem"),
			"WARD_ADMIN_TOKEN": res["admin_token"],
		}}
	}
	a, b := env(addrA), env(addrB)
	a.mustWard("team", "create", "shop")
	fetch := func(name string) string {
		var created map[string]any
		if err := json.Unmarshal([]byte(a.mustWard("service", "create", name, "--team", "shop", "-o", "json")), &created); err != nil {
			t.Fatal(err)
		}
		svidDir := filepath.Join(t.TempDir(), name)
		a.mustWard("svid", "fetch", "--bootstrap-token", created["bootstrap_token"].(string), "--out", svidDir)
		return svidDir
	}
	serverDir, clientDir := fetch("api"), fetch("web")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	server := runSource(t, ctx, b, serverDir) // watches replica B
	addr := serveWhoami(t, ctx, server)
	client := newClient(t, ctx, a, clientDir)
	var got map[string]any
	if err := getJSON(client, "https://"+addr+"/", &got); err != nil {
		t.Fatal(err)
	}
	a.mustWard("svid", "revoke", "--serial", client.svidSerial()) // on replica A
	revokedAt := time.Now()
	waitFor(t, time.Second, "replica B's watcher refuses the revoked client", func() bool {
		return getJSON(client.fresh(), "https://"+addr+"/", &got) != nil
	})
	t.Logf("revocation crossed replicas over NATS in %v", time.Since(revokedAt))
}

// initWithConfig writes cfg to dir/authority.yaml, runs `ward authority
// init` on it and returns the path and init's JSON answer.
func initWithConfig(t *testing.T, dir, cfg string) (string, map[string]string) {
	t.Helper()
	cfgPath := filepath.Join(dir, "authority.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"authority", "init", "--config", cfgPath, "-o", "json"}, nil, &out, &errb); code != 0 {
		t.Fatalf("init: %d %s", code, errb.String())
	}
	var res map[string]string
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	return cfgPath, res
}

// TestCatalogAcrossReplicas: two authority replicas on one PostgreSQL store
// and an external NATS; the provider watches replica B, the reviewer
// approves and revokes on replica A, and the provider follows within a
// second each time.
func TestCatalogAcrossReplicas(t *testing.T) {
	a, b := startReplicas(t, "")
	a.mustWard("team", "create", "shop")
	apiDir := a.newService("shop", "api", "L2")
	webDir := a.newService("shop", "web", "L2")

	w := startWhoami(t, b, apiDir, "") // declares and watches through replica B
	url := "https://" + w.addr + "/"
	manifest := filepath.Join(t.TempDir(), "ward.yaml")
	if err := os.WriteFile(manifest, []byte("service: web\nversion: 1.0.0\nconsumes:\n  - service: api\n    resource: whoami\n    actions: [read]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var decl declareAnswer
	waitFor(t, 10*time.Second, "api's declaration is known", func() bool {
		out, err := a.ward("catalog", "declare", "--svid-dir", webDir, "--file", manifest, "-o", "json")
		return err == nil && json.Unmarshal([]byte(out), &decl) == nil
	})
	if _, refused, err := a.call(webDir, url); err != nil || !refused {
		t.Fatalf("before approval: refused=%v err=%v", refused, err)
	}
	a.mustWard("catalog", "approve", decl.Consumes[0].RequestID)
	approved := time.Now()
	waitFor(t, time.Second, "replica B's provider admits web after approval on replica A", func() bool {
		_, refused, err := a.call(webDir, url)
		return err == nil && !refused
	})
	t.Logf("approval crossed replicas in %v", time.Since(approved).Round(time.Millisecond))
	a.mustWard("catalog", "revoke-grant", decl.Consumes[0].RequestID, "--reason", "test over")
	revoked := time.Now()
	waitFor(t, time.Second, "replica B's provider refuses web after revoke-grant on replica A", func() bool {
		_, refused, err := a.call(webDir, url)
		return err == nil && refused
	})
	t.Logf("revocation of the grant crossed replicas in %v", time.Since(revoked).Round(time.Millisecond))
}

// TestTokenRevocationAcrossReplicas: a token revoked through replica A is
// inactive at replica B's introspection within a second (the revocation
// travels as an event over the shared store and NATS).
func TestTokenRevocationAcrossReplicas(t *testing.T) {
	// Replicas behind one load balancer share one public URL: the issuer
	// of every token.
	a, b := startReplicas(t, "https://authority.ward.test:8443")
	hc := a.trustingClient(t)
	var created struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal([]byte(a.mustWard("client", "create", "billing", "--scope", "orders:read", "-o", "json")), &created); err != nil {
		t.Fatal(err)
	}
	// Both replicas issue tokens with keys both publish (one store).
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
	tok, err := (&clientcredentials.Config{ClientID: created.ClientID, ClientSecret: created.ClientSecret, TokenURL: a.vars["WARD_AUTHORITY"] + "/oauth2/token"}).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	baseB := b.vars["WARD_AUTHORITY"]
	if got := introspect(t, hc, baseB, created.ClientID, created.ClientSecret, tok.AccessToken); got["active"] != true {
		t.Fatalf("replica B: %v", got)
	}
	req, _ := http.NewRequest("POST", a.vars["WARD_AUTHORITY"]+"/oauth2/revoke", strings.NewReader(url.Values{"token": {tok.AccessToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(created.ClientID, created.ClientSecret)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	revoked := time.Now()
	waitFor(t, time.Second, "replica B reports the token revoked on replica A inactive", func() bool {
		return introspect(t, hc, baseB, created.ClientID, created.ClientSecret, tok.AccessToken)["active"] == false
	})
	t.Logf("token revocation crossed replicas in %v", time.Since(revoked).Round(time.Millisecond))
}

// startReplicas starts two authority replicas (`ward authority run`) on one
// fresh PostgreSQL schema and the external NATS, skipping the test when
// either is not configured, and returns a CLI environment for each.
// publicURL, if set, is the public URL both share (as behind a load
// balancer); otherwise each advertises its own address.
func startReplicas(t *testing.T, publicURL string) (a, b *devEnv) {
	t.Helper()
	natsURL := os.Getenv("WARD_TEST_NATS_URL")
	if natsURL == "" {
		t.Skip("WARD_TEST_NATS_URL not set; e.g. nats://127.0.0.1:4222")
	}
	if os.Getenv("WARD_TEST_POSTGRES_DSN") == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN not set; e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	dir := t.TempDir()
	cfg := "trust_domain: ward.test\ndata_dir: " + dir + "\nauthority:\n  listen: 127.0.0.1:0\n"
	if publicURL != "" {
		cfg += "  public_url: " + publicURL + "\n"
	}
	cfg += "bus:\n  url: " + natsURL + "\nstore:\n  dsn: '" + storetest.PostgresDSN(t) + "'\n"
	cfgPath, res := initWithConfig(t, dir, cfg)
	env := func(addr string) *devEnv {
		return &devEnv{t: t, vars: map[string]string{
			"WARD_AUTHORITY":   "https://" + addr,
			"WARD_CA_BUNDLE":   filepath.Join(dir, "bundle.pem"),
			"WARD_ADMIN_TOKEN": res["admin_token"],
		}}
	}
	return env(startAuthorityRun(t, cfgPath)), env(startAuthorityRun(t, cfgPath))
}
