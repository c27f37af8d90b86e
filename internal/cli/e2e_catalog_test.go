package cli

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// whoamiProc is `ward whoami` running in-process with its own context.
type whoamiProc struct {
	addr   string
	cancel context.CancelFunc
	done   chan int
}

// startWhoami runs `ward whoami` (guarded by its access list) on a free
// loopback port and waits until it answers TLS.
func startWhoami(t *testing.T, d *devEnv, dir, addr string) *whoamiProc {
	t.Helper()
	if addr == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &whoamiProc{addr: addr, cancel: cancel, done: make(chan int, 1)}
	args := []string{"--authority", d.vars["WARD_AUTHORITY"], "--ca-bundle", d.vars["WARD_CA_BUNDLE"],
		"whoami", "--svid-dir", dir, "--listen", addr}
	go func() { w.done <- run(ctx, args, strings.NewReader(""), io.Discard, io.Discard) }()
	waitFor(t, 10*time.Second, "whoami listens on "+addr, func() bool {
		select {
		case code := <-w.done:
			t.Fatalf("ward whoami exited with %d", code)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	t.Cleanup(w.stop)
	return w
}

func (w *whoamiProc) stop() {
	if w.cancel == nil {
		return
	}
	w.cancel()
	w.cancel = nil
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
	}
}

// whoamiAnswer is the part of whoami's JSON the tests read.
type whoamiAnswer struct {
	CallerSPIFFEID string `json:"caller_spiffe_id"`
	Access         *struct {
		Allowed     bool   `json:"allowed"`
		Resource    string `json:"resource"`
		Action      string `json:"action"`
		ListVersion int64  `json:"list_version"`
	} `json:"access"`
}

// call runs `ward call` as the service in dir; refused reports a 403.
func (d *devEnv) call(dir, url string) (ans whoamiAnswer, refused bool, err error) {
	out, err := d.ward("call", "--svid-dir", dir, url)
	if err != nil {
		var ce *cliError
		if errors.As(err, &ce) && strings.Contains(ce.stderr, "403") {
			return ans, true, nil
		}
		return ans, false, err
	}
	if err := json.Unmarshal([]byte(out), &ans); err != nil {
		return ans, false, err
	}
	return ans, false, nil
}

func TestCatalogEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startDev(t, t.TempDir())
	d.mustWard("team", "create", "id")
	d.mustWard("team", "create", "shop")
	whoDir := d.newService("id", "whoami", "L1")
	webDir := d.newService("shop", "web", "L1")
	evilDir := d.newService("shop", "evil", "L1")

	// The provider declares itself at start-up (whoami's embedded manifest).
	w := startWhoami(t, d, whoDir, "")
	url := "https://" + w.addr + "/"

	// The consumer declares what it needs.
	manifest := filepath.Join(t.TempDir(), "ward.yaml")
	writeManifest := func(version string) {
		body := "service: web\nversion: " + version + "\nconsumes:\n  - service: whoami\n    resource: whoami\n    actions: [read]\n"
		if err := os.WriteFile(manifest, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var decl declareAnswer
	writeManifest("1.0.0")
	waitFor(t, 10*time.Second, "whoami's declaration is known", func() bool {
		out, err := d.ward("catalog", "declare", "--svid-dir", webDir, "--file", manifest, "-o", "json")
		return err == nil && json.Unmarshal([]byte(out), &decl) == nil
	})
	if len(decl.Consumes) != 1 || decl.Consumes[0].State != "pending" || decl.Consumes[0].RequestID == "" {
		t.Fatalf("declaration: %+v", decl)
	}
	id := decl.Consumes[0].RequestID
	if out := d.mustWard("catalog", "pending"); !strings.Contains(out, id) || !strings.Contains(out, "whoami") {
		t.Fatalf("pending does not list %s:\n%s", id, out)
	}

	// Refused before approval.
	if _, refused, err := d.call(webDir, url); err != nil || !refused {
		t.Fatalf("call before approval: refused=%v err=%v", refused, err)
	}

	// Accepted within one second of approval, with nothing restarted.
	d.mustWard("catalog", "approve", id, "--reason", "web renders whoami")
	approved := time.Now()
	var ans whoamiAnswer
	waitFor(t, time.Second, "the call is accepted after approval", func() bool {
		a, refused, err := d.call(webDir, url)
		if err != nil {
			t.Fatal(err)
		}
		ans = a
		return !refused
	})
	t.Logf("accepted %v after approval", time.Since(approved).Round(time.Millisecond))
	if ans.CallerSPIFFEID != "spiffe://ward.test/svc/web" || ans.Access == nil || !ans.Access.Allowed ||
		ans.Access.Resource != "whoami" || ans.Access.Action != "read" || ans.Access.ListVersion < 1 {
		t.Fatalf("whoami answer: %+v access=%+v", ans, ans.Access)
	}
	out := d.mustWard("accesslist", "show", "--svid-dir", whoDir)
	if !strings.Contains(out, "spiffe://ward.test/svc/web") || !strings.Contains(out, "signature verified") {
		t.Fatalf("accesslist show:\n%s", out)
	}

	// Refused within one second of revoking the grant.
	d.mustWard("catalog", "revoke-grant", id, "--reason", "end of test contract")
	revoked := time.Now()
	waitFor(t, time.Second, "the call is refused after revoke-grant", func() bool {
		_, refused, err := d.call(webDir, url)
		if err != nil {
			t.Fatal(err)
		}
		return refused
	})
	t.Logf("refused %v after revoke-grant", time.Since(revoked).Round(time.Millisecond))

	// Grant again (a new version asks again), then stop the authority: the
	// provider keeps enforcing the list it holds.
	writeManifest("1.1.0")
	out = d.mustWard("catalog", "declare", "--svid-dir", webDir, "--file", manifest, "-o", "json")
	if err := json.Unmarshal([]byte(out), &decl); err != nil || decl.Consumes[0].State != "pending" {
		t.Fatalf("second declaration: %v %s", err, out)
	}
	d.mustWard("catalog", "approve", decl.Consumes[0].RequestID)
	waitFor(t, time.Second, "the call is accepted after the second approval", func() bool {
		_, refused, err := d.call(webDir, url)
		return err == nil && !refused
	})
	graph := d.mustWard("catalog", "graph", "--format", "mermaid")
	if !strings.Contains(graph, "web") || !strings.Contains(graph, "whoami") {
		t.Fatalf("graph:\n%s", graph)
	}
	posture := d.mustWard("posture")
	if !strings.Contains(posture, "whoami") || !strings.Contains(posture, "L1") {
		t.Fatalf("posture:\n%s", posture)
	}

	authority := d.vars["WARD_AUTHORITY"]
	d.stop()
	checkEnforced := func(when string) {
		t.Helper()
		if _, refused, err := d.call(webDir, url); err != nil || refused {
			t.Fatalf("%s: granted caller: refused=%v err=%v", when, refused, err)
		}
		if _, refused, err := d.call(evilDir, url); err != nil || !refused {
			t.Fatalf("%s: unknown caller: refused=%v err=%v", when, refused, err)
		}
	}
	checkEnforced("authority stopped")

	// Restart the provider with the authority still down: it starts from
	// its cached, verified list.
	addr := w.addr
	w.stop()
	if _, err := d.ward("call", "--svid-dir", webDir, url); err == nil {
		t.Fatal("whoami still answers after stop")
	}
	startWhoami(t, d, whoDir, addr)
	checkEnforced("provider restarted, authority stopped")
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(authority, "https://"), 200*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("the authority is still reachable")
	}
}
