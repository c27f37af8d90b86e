package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/sidecar"
)

// TestSidecarEndToEnd: a plain HTTP service behind the sidecar is
// reachable only by mTLS callers on its access list and sees only the
// headers the sidecar set; an upstream that hangs or closes gets 504 and
// 502; the egress listener calls another ward service over mTLS as the
// service.
func TestSidecarEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startDev(t, t.TempDir(), "--vault=false")
	d.mustWard("team", "create", "ship")
	shipDir := d.newService("ship", "shipping", "L1")
	ordersDir := d.newService("ship", "orders", "L1")
	webDir := d.newService("ship", "web", "L1")
	whoDir := d.newService("ship", "whoami", "L1")
	w := startWhoami(t, d, whoDir, "")

	// The plain service: echoes the headers it received.
	seen := make(chan http.Header, 16)
	upstream := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hang":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		case "/close":
			c, _, _ := rw.(http.Hijacker).Hijack()
			c.Close()
			return
		}
		select {
		case seen <- r.Header.Clone():
		default:
		}
		rw.Header().Set("Ward-Internal-Leak", "x") // must not reach callers
		_, _ = io.WriteString(rw, "shipped")
	}))
	defer upstream.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- runSidecar(ctx, d.vars["WARD_AUTHORITY"], shipDir, "127.0.0.1:0", "127.0.0.1:0", sidecar.Config{
			Service: "shipping", Upstream: upstream.URL, UpstreamTimeout: 500 * time.Millisecond, CacheDir: shipDir,
			Egress: map[string]string{"whoami": "https://" + w.addr}, Logger: slog.New(slog.DiscardHandler),
		}, func(in, eg net.Addr) { addrs <- [2]net.Addr{in, eg} })
	}()
	var a [2]net.Addr
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("sidecar: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the sidecar did not start")
	}
	base := "https://" + a[0].String()

	// orders is granted shipping's "call"; web is not.
	manifest := filepath.Join(t.TempDir(), "ward.yaml")
	os.WriteFile(manifest, []byte("service: orders\nversion: 1.0.0\nconsumes:\n  - service: shipping\n    resource: shipping\n    actions: [call]\n"), 0o600)
	var decl declareAnswer
	waitFor(t, 10*time.Second, "the sidecar declared shipping's manifest", func() bool {
		out, err := d.ward("catalog", "declare", "--svid-dir", ordersDir, "--file", manifest, "-o", "json")
		return err == nil && json.Unmarshal([]byte(out), &decl) == nil
	})
	d.mustWard("catalog", "approve", decl.Consumes[0].RequestID)
	orders := newClient(t, ctx, d, ordersDir)
	web := newClient(t, ctx, d, webDir)

	call := func(c *sdkClient, path string, hdr map[string]string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		for k, v := range hdr {
			req.Header[k] = []string{v}
		}
		resp, err := c.fresh().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	spoofs := map[string]string{"Ward-Caller": "spiffe://ward.test/svc/admin", "ward_user": "root", "WARD-PASSPORT-CLAIMS": "e30",
		"Ward_Correlation_Id": "forged", "X-Ward-Role": "admin", "x_ward_anything": "1"}
	var code int
	var hdr http.Header
	var body string
	waitFor(t, 10*time.Second, "orders is let through", func() bool {
		code, hdr, body = call(orders, "/parcels", spoofs)
		if code != http.StatusOK {
			t.Logf("orders: %d %s", code, body)
		}
		return code == http.StatusOK
	})
	if body != "shipped" || hdr.Get("Ward-Internal-Leak") != "" {
		t.Fatalf("answer %q, headers %v", body, hdr)
	}
	got := <-seen
	if got.Get("Ward-Caller") != "spiffe://ward.test/svc/orders" || len(got.Get("Ward-Correlation-Id")) != 32 || got.Get("Ward-User") != "" || got.Get("Ward-Passport-Claims") != "" {
		t.Fatalf("upstream saw %v", got)
	}
	for k, vs := range got {
		if strings.HasPrefix(strings.ToLower(strings.ReplaceAll(k, "_", "-")), "x-ward-") || (strings.HasPrefix(strings.ToLower(strings.ReplaceAll(k, "_", "-")), "ward-") &&
			k != "Ward-Caller" && k != "Ward-Correlation-Id") {
			t.Errorf("the upstream saw %s: %v", k, vs)
		}
	}
	// A forged passport is refused, not passed on.
	if code, _, body := call(orders, "/parcels", map[string]string{"Ward-Passport": "forged.passport.value"}); code != http.StatusUnauthorized || !strings.Contains(body, "invalid-passport") {
		t.Fatalf("forged passport: %d %s", code, body)
	}
	// Not on the access list.
	if code, _, body := call(web, "/parcels", nil); code != http.StatusForbidden || !strings.Contains(body, "access-denied") {
		t.Fatalf("web: %d %s", code, body)
	}
	// No client certificate: no TLS.
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := plain.Get(base + "/parcels"); err == nil {
		resp.Body.Close()
		t.Fatalf("a caller without a certificate got %d", resp.StatusCode)
	}
	// An upstream that hangs, one that closes.
	if code, _, body := call(orders, "/hang", nil); code != http.StatusGatewayTimeout || !strings.Contains(body, "upstream-timeout") {
		t.Fatalf("hang: %d %s", code, body)
	}
	if code, _, body := call(orders, "/close", nil); code != http.StatusBadGateway || !strings.Contains(body, "upstream-unavailable") {
		t.Fatalf("close: %d %s", code, body)
	}

	// Egress: shipping calls whoami as itself once granted.
	manifest2 := filepath.Join(t.TempDir(), "ward.yaml")
	os.WriteFile(manifest2, []byte("service: shipping\nversion: 1.0.1\nprovides:\n  - resource: shipping\n    actions: [call]\nconsumes:\n  - service: whoami\n    resource: whoami\n    actions: [read]\n"), 0o600)
	var decl2 declareAnswer
	if err := json.Unmarshal([]byte(d.mustWard("catalog", "declare", "--svid-dir", shipDir, "--file", manifest2, "-o", "json")), &decl2); err != nil {
		t.Fatal(err)
	}
	for _, c := range decl2.Consumes {
		if c.State != "approved" {
			d.mustWard("catalog", "approve", c.RequestID)
		}
	}
	var who struct {
		Caller string `json:"caller_spiffe_id"`
	}
	waitFor(t, 10*time.Second, "shipping reaches whoami through the egress listener", func() bool {
		req, _ := http.NewRequest("GET", "http://"+a[1].String()+"/whoami/hello", nil)
		req.Header.Set("Ward-Caller", "spiffe://ward.test/svc/admin") // stripped
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Logf("egress: %d %s", resp.StatusCode, b)
			return false
		}
		return json.NewDecoder(resp.Body).Decode(&who) == nil
	})
	if who.Caller != "spiffe://ward.test/svc/shipping" {
		t.Fatalf("whoami saw %s", who.Caller)
	}
	resp, err := http.Get("http://" + a[1].String() + "/nosuch/x")
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown egress service: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
