package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	full := write("full.yaml", `
trust_domain: example.org
data_dir: /var/lib/ward
store:
  dsn: postgres://ward@db/ward
authority:
  listen: 0.0.0.0:9443
  public_url: https://ca.example.org
  svid_ttl: {L3: 5m}
log: {level: debug, format: text}
`)
	for _, tc := range []struct {
		name    string
		path    string
		env     map[string]string
		check   func(t *testing.T, c *Config)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, c *Config) {
			if c.TrustDomain != "ward.test" || c.Store.DSN != filepath.Join("ward-data", "ward.db") || c.Authority.PublicURL != "https://127.0.0.1:8443" || c.KMS.KEKFile != filepath.Join("ward-data", "kek") {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "file", path: full, check: func(t *testing.T, c *Config) {
			ttl, _ := c.svidTTLs()
			if c.TrustDomain != "example.org" || c.Store.DSN != "postgres://ward@db/ward" || c.Authority.PublicURL != "https://ca.example.org" || ttl["L3"] != 5*time.Minute || c.Log.Format != "text" {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "env overrides file", path: full, env: map[string]string{"WARD_TRUST_DOMAIN": "env.example", "WARD_STORE_DSN": "/tmp/x.db"}, check: func(t *testing.T, c *Config) {
			if c.TrustDomain != "env.example" || c.Store.DSN != "/tmp/x.db" {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "unknown field", path: write("typo.yaml", "trust_domian: x\n"), wantErr: "trust_domian"},
		{name: "not yaml", path: write("bad.yaml", "{{{"), wantErr: "config"},
		{name: "empty file", path: write("empty.yaml", ""), check: func(t *testing.T, c *Config) {}},
		{name: "http public url", env: map[string]string{"WARD_AUTHORITY_PUBLIC_URL": "http://x"}, wantErr: "https://"},
		{name: "ttl too long", path: write("ttl.yaml", "authority: {svid_ttl: {L1: 48h}}\n"), wantErr: "svid_ttl.L1"},
		{name: "ttl unknown level", path: write("lvl.yaml", "authority: {svid_ttl: {L7: 1h}}\n"), wantErr: "unknown level"},
		{name: "both kek sources", env: map[string]string{"WARD_KEK_FILE": "/k", "WARD_KEK_PASSPHRASE_ENV": "P"}, wantErr: "not both"},
		{name: "bad log format", env: map[string]string{"WARD_LOG_FORMAT": "xml"}, wantErr: "log.format"},
		{name: "missing file", path: filepath.Join(dir, "nope.yaml"), wantErr: "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadConfig(tc.path, func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("trust_domain: ward.test\nauthority: {listen: 127.0.0.1:1}\n"))
	f.Add([]byte("store: {dsn: x}\nlog: {level: debug}"))
	f.Add([]byte("authority: {svid_ttl: {L1: 1h}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Config
		if err := parseConfig(data, &c); err != nil {
			return
		}
		c.defaults()
		_ = c.validate()
	})
}

func TestEnvFileRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dev.env")
	in := map[string]string{"WARD_AUTHORITY": "https://127.0.0.1:1", "WARD_ADMIN_TOKEN": "wardadm_x-y"}
	if err := writeEnvFile(p, in); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	out, err := readEnvFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range in {
		if out[k] != v {
			t.Fatalf("%s = %q, want %q", k, out[k], v)
		}
	}
}

func TestCLIUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown command", []string{"frobnicate"}, 1, "unknown command"},
		{"bad output", []string{"version", "-o", "xml"}, 2, "--output"},
		{"missing arg", []string{"team", "create"}, 2, "arg"},
		{"no authority", []string{"--authority", "", "team", "list"}, 2, "WARD_AUTHORITY"},
		{"http authority", []string{"--authority", "http://x", "team", "list"}, 2, "https://"},
		{"unknown flag", []string{"version", "--nope"}, 2, "unknown flag"},
		{"deny without reason", []string{"catalog", "deny", "req-1"}, 2, "--reason"},
		{"revoke-grant without reason", []string{"catalog", "revoke-grant", "req-1"}, 2, "--reason"},
		{"revoke-grant without target", []string{"catalog", "revoke-grant", "--reason", "x"}, 2, "--consumer"},
		{"graph format", []string{"catalog", "graph", "--format", "svg"}, 2, "dot or mermaid"},
		{"declare without file", []string{"catalog", "declare", "--svid-dir", "x"}, 2, "--file"},
		{"declare without svid", []string{"--authority", "https://127.0.0.1:1", "catalog", "declare", "--file", "x"}, 2, "--svid-dir"},
		{"accesslist without svid", []string{"--authority", "https://127.0.0.1:1", "accesslist", "show"}, 2, "--svid-dir"},
		{"route without upstream", []string{"route", "set", "r", "--prefix", "/x", "--service", "s"}, 2, "--upstream"},
		{"route bad rate", []string{"--authority", "https://127.0.0.1:1", "route", "set", "r", "--prefix", "/x", "--service", "s", "--upstream", "https://h:1", "--rate", "fast"}, 2, "--rate"},
		{"route bad expose", []string{"--authority", "https://127.0.0.1:1", "route", "set", "r", "--prefix", "/x", "--service", "s", "--upstream", "https://h:1", "--expose", "orders"}, 2, "--expose"},
		{"gateway without certificate", []string{"gateway", "run"}, 2, "tls_cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb strings.Builder
			code := run(t.Context(), tc.args, strings.NewReader(""), &out, &errb)
			if code != tc.code || !strings.Contains(errb.String(), tc.want) || strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
				t.Fatalf("code %d stderr %q", code, errb.String())
			}
		})
	}
}
