package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gatewayAnswer is whoami's answer as the tests read it.
type gatewayAnswer struct {
	CallerSPIFFEID string              `json:"caller_spiffe_id"`
	Headers        map[string][]string `json:"headers"`
	Passport       *struct {
		Sub        string `json:"sub"`
		Tenant     string `json:"tenant"`
		Scope      string `json:"scope"`
		AuthMethod string `json:"auth_method"`
		Aud        string `json:"aud"`
		CID        string `json:"cid"`
		Exp        int64  `json:"exp"`
	} `json:"passport"`
}

func isInternal(name string) bool {
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	return strings.HasPrefix(n, "ward-") || strings.HasPrefix(n, "x-ward-")
}

// TestGatewayEndToEnd is issue 5's "done when", on a real ward dev: the
// gateway in front of a guarded whoami.
func TestGatewayEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	t.Setenv("WARD_GATEWAY_PASSPORT_TTL", "2s")
	d := startDev(t, t.TempDir())
	gw := d.vars["WARD_GATEWAY"]
	if !strings.HasPrefix(gw, "https://127.0.0.1:") {
		t.Fatalf("dev.env WARD_GATEWAY = %q", gw)
	}
	d.mustWard("team", "create", "id")
	whoDir := d.newService("id", "whoami", "L1")
	webDir := d.newService("id", "web", "L1")
	w := startWhoami(t, d, whoDir, "")

	// A route records the gateway's grant; an API key for alice.
	waitFor(t, 10*time.Second, "whoami has declared", func() bool {
		_, err := d.ward("route", "set", "who", "--prefix", "/who", "--service", "whoami", "--upstream", "https://"+w.addr, "--scopes", "whoami.read")
		return err == nil
	})
	if out := d.mustWard("route", "list"); !strings.Contains(out, "/who") || !strings.Contains(out, "whoami") {
		t.Fatalf("route list:\n%s", out)
	}
	if out := d.mustWard("catalog", "grants"); !strings.Contains(out, "ward/gateway") {
		t.Fatalf("the route's grant is not in the catalogue:\n%s", out)
	}
	var key struct {
		ID  string `json:"id"`
		Key string `json:"api_key"`
	}
	if err := json.Unmarshal([]byte(d.mustWard("apikey", "create", "--subject", "alice", "--tenant", "acme", "--scope", "whoami.read", "-o", "json")), &key); err != nil {
		t.Fatal(err)
	}

	hc := d.trustingClient(t)
	spoofs := map[string]string{"Ward-Passport": "forged", "ward_passport": "forged", "WARD-USER": "root", "X-Ward-Caller": "spiffe://ward.test/svc/admin", "x_ward_roles": "admin"}
	get := func(auth string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", gw+"/who/me", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		for k, v := range spoofs {
			req.Header[k] = []string{v}
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for k := range resp.Header {
			if isInternal(k) {
				t.Errorf("response carries internal header %s", k)
			}
		}
		return resp, body
	}
	var ans gatewayAnswer
	waitFor(t, 10*time.Second, "the gateway forwards to whoami", func() bool {
		resp, body := get(key.Key)
		if resp.StatusCode != http.StatusOK {
			return false
		}
		return json.Unmarshal(body, &ans) == nil
	})
	if ans.CallerSPIFFEID != "spiffe://ward.test/ward/gateway" {
		t.Errorf("whoami saw caller %s, want the gateway", ans.CallerSPIFFEID)
	}
	if p := ans.Passport; p == nil || p.Sub != "alice" || p.Tenant != "acme" || p.AuthMethod != "apikey" || p.Aud != "ward.test" || p.CID == "" {
		t.Fatalf("whoami passport: %+v", ans.Passport)
	}
	var raw string
	for k, vs := range ans.Headers {
		switch {
		case k == "Ward-Passport" && len(vs) == 1 && vs[0] != "forged":
			raw = vs[0]
		case isInternal(k):
			t.Errorf("spoofed header reached whoami: %s: %v", k, vs)
		case k == "Authorization":
			t.Error("the API key reached whoami")
		}
	}
	if raw == "" {
		t.Fatal("no passport header at whoami")
	}

	// Called directly without a client certificate, whoami refuses the
	// connection.
	pool := hc.Transport.(*http.Transport).TLSClientConfig.RootCAs
	conn, err := tls.Dial("tcp", w.addr, &tls.Config{RootCAs: pool, InsecureSkipVerify: true})
	if err == nil {
		_, err = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if err == nil {
			_, err = conn.Read(make([]byte, 1))
		}
		conn.Close()
	}
	if err == nil {
		t.Fatal("whoami answered a client without a certificate")
	}

	// A passport replayed by a mesh caller: accepted while valid, refused
	// once expired. web is granted whoami/read first.
	manifest := filepath.Join(t.TempDir(), "ward.yaml")
	if err := os.WriteFile(manifest, []byte("service: web\nversion: 1.0.0\nconsumes:\n  - service: whoami\n    resource: whoami\n    actions: [read]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var decl declareAnswer
	if err := json.Unmarshal([]byte(d.mustWard("catalog", "declare", "--svid-dir", webDir, "--file", manifest, "-o", "json")), &decl); err != nil {
		t.Fatal(err)
	}
	d.mustWard("catalog", "approve", decl.Consumes[0].RequestID)
	web := newClient(t, context.Background(), d, webDir)
	replay := func() (int, []byte) {
		req, _ := http.NewRequest("GET", "https://"+w.addr+"/", nil)
		req.Header.Set("Ward-Passport", raw)
		resp, err := web.fresh().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	waitFor(t, 5*time.Second, "web may call whoami", func() bool {
		_, body := get(key.Key)
		var a gatewayAnswer
		if json.Unmarshal(body, &a) != nil || len(a.Headers["Ward-Passport"]) != 1 {
			return false
		}
		raw = a.Headers["Ward-Passport"][0]
		code, _ := replay()
		return code == http.StatusOK
	})
	// Past exp (2 s) and the verifier's skew allowance (5 s).
	time.Sleep(8 * time.Second)
	if code, body := replay(); code != http.StatusUnauthorized || !strings.Contains(string(body), "invalid-passport") {
		t.Fatalf("expired passport replayed: %d %s", code, body)
	}

	// A revoked API key is refused within one second.
	d.mustWard("apikey", "revoke", key.ID)
	revoked := time.Now()
	waitFor(t, time.Second, "the revoked key is refused", func() bool {
		resp, _ := get(key.Key)
		return resp.StatusCode == http.StatusUnauthorized
	})
	t.Logf("revoked key refused after %v", time.Since(revoked).Round(time.Millisecond))

	// Deleting the route withdraws the grant.
	d.mustWard("route", "delete", "who")
	waitFor(t, 5*time.Second, "the route is gone", func() bool {
		resp, _ := get("x")
		return resp.StatusCode == http.StatusNotFound
	})
}
