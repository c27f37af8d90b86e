package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePolicyDir writes a policy directory: files maps relative paths to
// contents.
func writePolicyDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const whoamiSchema = `entity Role;
entity User in [Role] { tenant: String, auth_method: String, issuer: String };
entity Service;
entity whoami;
action read appliesTo {
  principal: [User, Service],
  resource: whoami,
  context: { caller: String, scopes: Set<String>, tenant: String, auth_method: String, correlation_id: String },
};
`

const whoamiTest = `cases:
  - name: alice of acme reads
    principal: User::"alice"
    action: Action::"read"
    resource: whoami::"/who/me"
    context: {caller: "spiffe://ward.test/ward/gateway", scopes: [whoami.read], tenant: acme, auth_method: apikey, correlation_id: ""}
    entities:
      - uid: User::"alice"
        attrs: {tenant: acme, auth_method: apikey, issuer: ward}
    expect: %s
`

type policyAnswer struct {
	Decision *struct {
		Allowed  bool     `json:"allowed"`
		Enforced bool     `json:"enforced"`
		Reason   string   `json:"reason"`
		Version  int64    `json:"version"`
		Policies []string `json:"policies"`
	} `json:"decision"`
}

// TestPolicyEndToEnd is the policy issue's acceptance test: through the
// gateway, a request whoami allowed is denied within a second of pushing a
// policy that forbids it, with no restart, and allowed again after a
// rollback; `ward policy status` shows every running instance on the new
// version; a push with a failing test or a schema violation changes
// nothing; the edge domain refuses at the gateway.
func TestPolicyEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startDev(t, t.TempDir())
	gw := d.vars["WARD_GATEWAY"]
	d.mustWard("team", "create", "id")
	dir1 := d.newService("id", "whoami", "L1")
	var tok struct {
		Token string `json:"bootstrap_token"`
	}
	if err := json.Unmarshal([]byte(d.mustWard("service", "token", "whoami", "-o", "json")), &tok); err != nil {
		t.Fatal(err)
	}
	dir2 := filepath.Join(t.TempDir(), "whoami-2")
	d.mustWard("svid", "fetch", "--bootstrap-token", tok.Token, "--out", dir2)
	w1 := startWhoami(t, d, dir1, "")
	startWhoami(t, d, dir2, "")

	waitFor(t, 10*time.Second, "whoami has declared", func() bool {
		_, err := d.ward("route", "set", "who", "--prefix", "/who", "--service", "whoami", "--upstream", "https://"+w1.addr, "--scopes", "whoami.read")
		return err == nil
	})
	var key struct {
		Key string `json:"api_key"`
	}
	if err := json.Unmarshal([]byte(d.mustWard("apikey", "create", "--subject", "alice", "--tenant", "acme", "--scope", "whoami.read", "-o", "json")), &key); err != nil {
		t.Fatal(err)
	}
	hc := d.trustingClient(t)
	get := func() (int, policyAnswer, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", gw+"/who/me", nil)
		req.Header.Set("Authorization", "Bearer "+key.Key)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var a policyAnswer
		_ = json.Unmarshal(body, &a)
		return resp.StatusCode, a, string(body)
	}
	var ans policyAnswer
	waitFor(t, 10*time.Second, "whoami answers through the gateway", func() bool {
		code, a, _ := get()
		ans = a
		return code == http.StatusOK
	})
	if ans.Decision == nil || !ans.Decision.Allowed || ans.Decision.Enforced || ans.Decision.Reason != "no-policy" {
		t.Fatalf("before any policy, decision %+v", ans.Decision)
	}

	// Version 1 allows; whoami reports the version and the policy.
	allow := writePolicyDir(t, map[string]string{
		"whoami.cedar":       "@id(\"readers\")\npermit(principal, action == Action::\"read\", resource is whoami);\n",
		"schema.cedarschema": whoamiSchema, "tests/read.yaml": strings.Replace(whoamiTest, "%s", "allow", 1)})
	d.mustWard("policy", "push", "--domain", "whoami", "--dir", allow)
	waitFor(t, 5*time.Second, "version 1 enforced", func() bool {
		code, a, _ := get()
		ans = a
		return code == http.StatusOK && a.Decision != nil && a.Decision.Version == 1
	})
	if !ans.Decision.Enforced || ans.Decision.Reason != "permit" || len(ans.Decision.Policies) != 1 || ans.Decision.Policies[0] != "readers" {
		t.Fatalf("version 1 decision %+v", ans.Decision)
	}

	// Refused pushes change nothing: a failing test, a schema violation.
	failing := writePolicyDir(t, map[string]string{
		"whoami.cedar": "forbid(principal, action, resource);\n", "tests/read.yaml": strings.Replace(whoamiTest, "%s", "allow", 1)})
	if out, err := d.ward("policy", "push", "--domain", "whoami", "--dir", failing); err == nil || !strings.Contains(err.Error(), "expected allow, got deny") {
		t.Fatalf("push with a failing test: %v\n%s", err, out)
	}
	violating := writePolicyDir(t, map[string]string{
		"whoami.cedar":       "permit(principal, action, resource) when { principal.age > 21 };\n",
		"schema.cedarschema": whoamiSchema})
	if out, err := d.ward("policy", "push", "--domain", "whoami", "--dir", violating); err == nil || !strings.Contains(err.Error(), "violates the schema") {
		t.Fatalf("push with a schema violation: %v\n%s", err, out)
	}
	var hist []map[string]any
	if err := json.Unmarshal([]byte(d.mustWard("policy", "history", "--domain", "whoami", "-o", "json")), &hist); err != nil || len(hist) != 1 {
		t.Fatalf("history after refused pushes: %v %v", hist, err)
	}

	// Version 2 forbids alice's tenant: denied within a second, no restart.
	forbid := writePolicyDir(t, map[string]string{
		"whoami.cedar": "@id(\"readers\")\npermit(principal, action == Action::\"read\", resource is whoami);\n" +
			"@id(\"no-acme\")\nforbid(principal is User, action, resource) when { context.tenant == \"acme\" };\n",
		"schema.cedarschema": whoamiSchema, "tests/read.yaml": strings.Replace(whoamiTest, "%s", "deny", 1)})
	d.mustWard("policy", "push", "--domain", "whoami", "--dir", forbid)
	pushed := time.Now()
	var body string
	waitFor(t, 5*time.Second, "version 2 denies", func() bool {
		code, _, b := get()
		body = b
		return code == http.StatusForbidden
	})
	if took := time.Since(pushed); took > time.Second {
		t.Errorf("the denial took %v after the push, want within 1s", took)
	}
	if !strings.Contains(body, "policy-denied") {
		t.Fatalf("denial body %s", body)
	}

	// Both instances report version 2.
	var st struct {
		Revision  int64 `json:"revision"`
		Total     int   `json:"total"`
		Current   int   `json:"current"`
		Instances []struct {
			Version int64 `json:"version"`
		} `json:"instances"`
	}
	waitFor(t, 5*time.Second, "both instances on version 2", func() bool {
		if err := json.Unmarshal([]byte(d.mustWard("policy", "status", "--domain", "whoami", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		return st.Total == 2 && st.Current == 2 && st.Instances[0].Version == 2 && st.Instances[1].Version == 2
	})
	if out := d.mustWard("policy", "status", "--domain", "whoami"); !strings.Contains(out, "2 of 2 running instance(s) on the current revision") {
		t.Fatalf("status:\n%s", out)
	}
	if out := d.mustWard("policy", "diff", "--domain", "whoami"); !strings.Contains(out, "+forbid(principal is User") {
		t.Fatalf("diff:\n%s", out)
	}
	if out := d.mustWard("policy", "check", "--domain", "whoami", "--principal", "User::alice", "--action", "Action::read",
		"--resource", `whoami::"/who/me"`, "--context", `{"tenant":"acme"}`); !strings.Contains(out, "DENY (forbid) by version 2") || !strings.Contains(out, "no-acme at whoami.cedar:3") {
		t.Fatalf("check:\n%s", out)
	}

	// Rollback to version 1 (as version 3): allowed again.
	d.mustWard("policy", "rollback", "--domain", "whoami", "--to", "1")
	rolled := time.Now()
	waitFor(t, 5*time.Second, "allowed after rollback", func() bool {
		code, a, _ := get()
		ans = a
		return code == http.StatusOK
	})
	if took := time.Since(rolled); took > time.Second {
		t.Errorf("the rollback took %v to apply, want within 1s", took)
	}
	if ans.Decision == nil || ans.Decision.Version != 3 {
		t.Fatalf("after rollback, decision %+v", ans.Decision)
	}

	// The edge domain is the gateway's route-level check.
	edge := writePolicyDir(t, map[string]string{
		"edge.cedar": "permit(principal, action, resource);\n@id(\"no-get-who\")\nforbid(principal, action == Action::\"GET\", resource == Route::\"who\");\n"})
	d.mustWard("policy", "push", "--domain", "edge", "--dir", edge)
	waitFor(t, 5*time.Second, "the gateway enforces the edge policy", func() bool {
		code, _, b := get()
		body = b
		return code == http.StatusForbidden
	})
	if !strings.Contains(body, "edge policy") {
		t.Fatalf("edge denial body %s", body)
	}
	edgeOK := writePolicyDir(t, map[string]string{"edge.cedar": "permit(principal, action, resource);\n"})
	d.mustWard("policy", "push", "--domain", "edge", "--dir", edgeOK)
	waitFor(t, 5*time.Second, "the gateway admits again", func() bool {
		code, _, _ := get()
		return code == http.StatusOK
	})
}
