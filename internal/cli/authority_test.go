package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

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
			if res["trust_domain"] != "prod.example" || !strings.HasPrefix(res["admin_token"], "wardadm_") || len(res["root_fingerprint"]) != 64 {
				t.Fatalf("init answered %v", res)
			}
			errb.Reset()
			if code := run(t.Context(), []string{"authority", "init", "--config", cfgPath}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "already initialized") {
				t.Fatalf("second init: %d %q", code, errb.String())
			}

			ctx, cancel := context.WithCancel(context.Background())
			logs := &syncBuffer{}
			done := make(chan int, 1)
			go func() {
				done <- run(ctx, []string{"authority", "run", "--config", cfgPath}, nil, &bytes.Buffer{}, logs)
			}()
			defer func() {
				cancel()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Error("authority run did not stop")
				}
			}()
			addrRe := regexp.MustCompile(`"msg":"authority serving","addr":"([0-9.:]+)"`)
			var addr string
			waitFor(t, 20*time.Second, "authority serving", func() bool {
				select {
				case code := <-done:
					t.Fatalf("authority run exited %d: %s", code, logs.String())
				default:
				}
				m := addrRe.FindStringSubmatch(logs.String())
				if m != nil {
					addr = m[1]
				}
				return addr != ""
			})
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
