package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// consume declares that the service in dir consumes the vault's resource
// with actions, and approves it.
func consume(t *testing.T, d *devEnv, dir, name, resource string, actions ...string) {
	t.Helper()
	manifest := filepath.Join(t.TempDir(), "ward.yaml")
	if err := os.WriteFile(manifest, []byte("service: "+name+"\nversion: 1.0.0\nconsumes:\n  - service: vault\n    resource: "+resource+
		"\n    actions: ["+strings.Join(actions, ", ")+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var decl declareAnswer
	waitFor(t, 15*time.Second, "the vault has declared its manifest", func() bool {
		out, err := d.ward("catalog", "declare", "--svid-dir", dir, "--file", manifest, "-o", "json")
		return err == nil && json.Unmarshal([]byte(out), &decl) == nil
	})
	for _, c := range decl.Consumes {
		if c.State != "approved" {
			d.mustWard("catalog", "approve", c.RequestID, "--reason", "the service keeps card data out of its own store")
		}
	}
}

// TestVaultEndToEnd is the vault issue's acceptance test: a service
// granted tokenize but not detokenize creates tokens and cannot reveal
// them, and the audit trail shows both attempts; after erase, every token
// of the subject fails to detokenize and export finds nothing.
func TestVaultEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startDev(t, t.TempDir())
	if !strings.HasPrefix(d.vars["WARD_VAULT"], "https://127.0.0.1:") {
		t.Fatalf("dev.env WARD_VAULT = %q", d.vars["WARD_VAULT"])
	}
	t.Setenv("WARD_VAULT", d.vars["WARD_VAULT"])
	d.mustWard("team", "create", "shop")
	billing := d.newService("shop", "billing", "L2")
	support := d.newService("shop", "support", "L2")
	consume(t, d, billing, "billing", "pan", "tokenize")
	consume(t, d, support, "support", "email", "tokenize", "detokenize", "erase", "export")

	// billing tokenizes (the grant reaches the vault within a second)…
	var tok struct {
		Token string `json:"token"`
	}
	waitFor(t, 15*time.Second, "billing tokenizes", func() bool {
		out, err := d.ward("vault", "tokenize", "--svid-dir", billing, "--type", "pan", "--value", "4111 1111 1111 1111", "-o", "json")
		return err == nil && json.Unmarshal([]byte(out), &tok) == nil && tok.Token != ""
	})
	if len(tok.Token) != 16 || !strings.HasSuffix(tok.Token, "1111") || tok.Token == "4111111111111111" {
		t.Fatalf("card token %q", tok.Token)
	}
	// …and cannot reveal.
	out, err := d.ward("vault", "detokenize", "--svid-dir", billing, "--type", "pan", "--token", tok.Token, "-o", "json")
	if err == nil || strings.Contains(out, "4111") || !strings.Contains(err.Error(), "403") {
		t.Fatalf("billing revealed a card: %v %s", err, out)
	}
	// The audit trail holds both attempts.
	type row struct {
		Event struct {
			Kind, Service, Caller, Action, Resource, Decision, Reason string
		} `json:"event"`
	}
	waitFor(t, 20*time.Second, "both attempts are in the audit trail", func() bool {
		out, err := d.ward("audit", "query", "--db", d.vars["WARD_AUDIT_DB"], "--caller", "spiffe://ward.test/svc/billing", "-o", "json")
		if err != nil {
			return false
		}
		var rows []row
		_ = json.Unmarshal([]byte(out), &rows)
		allowed, denied := false, false
		for _, r := range rows {
			e := r.Event
			if e.Service != "vault" || e.Kind != "authz.decision" || e.Resource != "pan" {
				continue
			}
			allowed = allowed || (e.Action == "tokenize" && e.Decision == "allow")
			denied = denied || (e.Action == "detokenize" && e.Decision == "deny" && e.Reason == "action-not-allowed")
		}
		return allowed && denied
	})

	// support stores two addresses of alice and one of carol, reveals,
	// exports, erases alice.
	var toks struct {
		Tokens []string `json:"tokens"`
	}
	waitFor(t, 15*time.Second, "support tokenizes", func() bool {
		out, err := d.ward("vault", "tokenize", "--svid-dir", support, "--type", "email", "--subject", "alice",
			"--value", "alice@example.com", "--value", "alice@work.example", "-o", "json")
		return err == nil && json.Unmarshal([]byte(out), &toks) == nil && len(toks.Tokens) == 2
	})
	var carol struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(d.mustWard("vault", "tokenize", "--svid-dir", support, "--type", "email", "--subject", "carol", "--value", "carol@example.com", "-o", "json")), &carol); err != nil {
		t.Fatal(err)
	}
	var revealed struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal([]byte(d.mustWard("vault", "detokenize", "--svid-dir", support, "--token", toks.Tokens[0], "-o", "json")), &revealed); err != nil || revealed.Value != "alice@example.com" {
		t.Fatalf("detokenize: %+v %v", revealed, err)
	}
	if out := d.mustWard("vault", "export", "--svid-dir", support, "--subject", "alice", "--type", "email", "-o", "json"); !strings.Contains(out, "alice@work.example") {
		t.Fatalf("export:\n%s", out)
	}
	if out := d.mustWard("vault", "erase", "--svid-dir", support, "--subject", "alice", "--type", "email", "-o", "json"); !strings.Contains(out, `"email": 2`) {
		t.Fatalf("erase:\n%s", out)
	}
	for _, tk := range toks.Tokens {
		if out, err := d.ward("vault", "detokenize", "--svid-dir", support, "--type", "email", "--token", tk, "-o", "json"); err == nil || strings.Contains(out, "alice@") {
			t.Fatalf("an erased value was revealed: %v %s", err, out)
		}
	}
	if out := d.mustWard("vault", "export", "--svid-dir", support, "--subject", "alice", "--type", "email", "-o", "json"); strings.Contains(out, "alice@") {
		t.Fatalf("export after erase:\n%s", out)
	}
	if err := json.Unmarshal([]byte(d.mustWard("vault", "detokenize", "--svid-dir", support, "--type", "email", "--token", carol.Token, "-o", "json")), &revealed); err != nil || revealed.Value != "carol@example.com" {
		t.Fatalf("carol's value after alice's erasure: %+v %v", revealed, err)
	}
	// No readable value of alice is left in the vault's files.
	for _, name := range []string{"vault.db", "vault.db-wal"} {
		data, _ := os.ReadFile(filepath.Join(d.dir, "vault", name))
		if strings.Contains(string(data), "alice@") {
			t.Fatalf("%s holds alice's address in clear", name)
		}
	}

	// The Art. 30 report lists who may do what.
	if out := d.mustWard("vault", "report"); !strings.Contains(out, "pan        billing  tokenize\n") || !strings.Contains(out, "email      support  detokenize, erase, export, tokenize") {
		t.Fatalf("report:\n%s", out)
	}
}
