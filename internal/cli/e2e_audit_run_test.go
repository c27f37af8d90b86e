package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wardsec/ward/audit"
)

// TestAuditStandalone runs `ward agent run` and `ward audit run` as
// production does: component bootstrap tokens, a config file, the bus of
// a running authority (ward dev's NATS, mTLS with their own SVIDs).
func TestAuditStandalone(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startDev(t, t.TempDir())
	token := func(want string, args ...string) string {
		var tok struct {
			Token    string `json:"token"`
			SPIFFEID string `json:"spiffe_id"`
		}
		if err := json.Unmarshal([]byte(d.mustWard(append([]string{"component", "token", "-o", "json"}, args...)...)), &tok); err != nil {
			t.Fatal(err)
		}
		if tok.SPIFFEID != "spiffe://ward.test/ward/"+want {
			t.Fatalf("%v: token for %s", args, tok.SPIFFEID)
		}
		return tok.Token
	}
	// The agent is bound to its host: it may publish only that host's events.
	t.Setenv("WARD_AGENT_TOKEN", token("agent/standalone-host", "agent", "--host", "standalone-host"))
	t.Setenv("WARD_AUDIT_TOKEN", token("audit", "audit"))
	if out, err := d.ward("component", "token", "gateway", "--host", "x"); err == nil {
		t.Fatalf("a host-bound gateway token: %s", out)
	}
	t.Setenv("WARD_AUTHORITY", d.vars["WARD_AUTHORITY"])
	t.Setenv("WARD_CA_BUNDLE", d.vars["WARD_CA_BUNDLE"])
	t.Setenv("WARD_BUS_URL", d.vars["WARD_NATS_URL"])
	if out, err := d.ward("component", "token", "vault"); err == nil {
		t.Fatalf("token for an unknown component: %s", out)
	}

	dir := t.TempDir()
	auditDir, db := filepath.Join(dir, "audit"), filepath.Join(dir, "audit.db")
	cfg := "data_dir: " + dir + "\nlog: {format: text, level: warn}\naudit:\n  dir: " + auditDir + "\n  db: " + db +
		"\n  consumer: standalone\n  host: standalone-host\n  checkpoint_every: 200ms\n"
	cfgFile := filepath.Join(dir, "ward.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 2)
	var stderr [2]syncBuffer
	for i, args := range [][]string{{"agent", "run"}, {"audit", "run"}} {
		go func() {
			done <- run(ctx, append([]string{"--config", cfgFile}, args...), strings.NewReader(""), io.Discard, &stderr[i])
		}()
	}
	t.Cleanup(func() {
		cancel()
		for range 2 {
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Error("a standalone audit process did not stop")
			}
		}
	})

	w, err := audit.NewWriter(audit.Config{Dir: auditDir, Service: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	for range 25 {
		w.Write(audit.Event{Kind: audit.KindDecision, CorrelationID: "standalone-1", User: "zoe", Decision: audit.Deny,
			Reason: "mail zoe@example.com"})
	}
	w.Close()
	var rows []struct {
		Event struct {
			Host   string `json:"host"`
			Reason string `json:"reason"`
		} `json:"event"`
	}
	waitFor(t, 20*time.Second, "the standalone collector stores what the standalone agent shipped", func() bool {
		select {
		case code := <-done:
			t.Fatalf("a standalone audit process exited with %d: agent: %s collector: %s", code, stderr[0].String(), stderr[1].String())
		default:
		}
		out, err := d.ward("audit", "query", "--db", db, "--correlation-id", "standalone-1", "-o", "json")
		return err == nil && json.Unmarshal([]byte(out), &rows) == nil && len(rows) == 25
	})
	if rows[0].Event.Host != "standalone-host" || strings.Contains(rows[0].Event.Reason, "zoe@example.com") {
		t.Fatalf("event %+v", rows[0].Event)
	}
	waitFor(t, 10*time.Second, "ward audit verify passes on the standalone collector's database", func() bool {
		_, err := d.ward("audit", "verify", "--db", db)
		return err == nil
	})

	// Least privilege on the bus: the agent's identity may not read or
	// write the authority's change log.
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "agent", "svid.pem"), filepath.Join(dir, "agent", "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	bundle, _ := os.ReadFile(d.vars["WARD_CA_BUNDLE"])
	pool.AppendCertsFromPEM(bundle)
	errs := make(chan error, 10)
	nc, err := nats.Connect(d.vars["WARD_NATS_URL"], nats.Secure(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.SubscribeSync("ward.v1.events"); err != nil {
		t.Fatal(err)
	}
	_ = nc.Publish("ward.v1.events", []byte(`{"seq":1,"kind":"bundle"}`))
	_ = nc.Publish("ward.v1.audit.events.another-host", []byte(`{"v":1,"kind":"forged","time":"2026-11-24T00:00:00Z"}`))
	_ = nc.Flush()
	violations := 0
	for timeout := time.After(3 * time.Second); violations < 3; {
		select {
		case err := <-errs:
			if strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
				violations++
			}
		case <-timeout:
			t.Fatalf("%d permission violations reported, want 3 (subscribe, change log, another host's subject)", violations)
		}
	}
}
