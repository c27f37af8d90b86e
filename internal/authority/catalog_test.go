package authority

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/wardsec/ward/guard"
)

// catalogEnv is an authority with a provider and a consumer that have
// SVIDs, and helpers to declare and to read lists.
type catalogEnv struct {
	*env
	clients map[string]*http.Client // by service name
}

func newCatalogEnv(t *testing.T) *catalogEnv {
	return &catalogEnv{env: newEnv(t), clients: map[string]*http.Client{}}
}

// service registers a service of team at level and returns its mTLS client.
func (c *catalogEnv) service(team, name, level string) *http.Client {
	c.t.Helper()
	s := c.fetch(c.createService(team, name, level))
	cl := c.client(s.tlsCert())
	c.clients[name] = cl
	return cl
}

func (c *catalogEnv) declare(name, manifest string, want int) map[string]any {
	c.t.Helper()
	resp, body := c.do(c.clients[name], "POST", "/v1/catalog/declarations", "", manifest)
	if resp.StatusCode != want {
		c.t.Fatalf("declare %s: status %d, want %d: %s", name, resp.StatusCode, want, body)
	}
	out := map[string]any{}
	_ = json.Unmarshal(body, &out)
	return out
}

// requestID returns the request ID of the first consumes entry of a
// declaration answer.
func requestID(t *testing.T, decl map[string]any) (id, state string) {
	t.Helper()
	cs, _ := decl["consumes"].([]any)
	if len(cs) == 0 {
		t.Fatalf("declaration answer has no consumes: %v", decl)
	}
	c := cs[0].(map[string]any)
	id, _ = c["request_id"].(string)
	state, _ = c["state"].(string)
	return id, state
}

// list fetches and verifies name's access list with go-jose and /v1/keys.
func (c *catalogEnv) list(name string) guard.AccessList {
	c.t.Helper()
	resp, body := c.do(c.clients[name], "GET", "/v1/accesslist", "", nil)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET /v1/accesslist: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != guard.MediaType {
		c.t.Fatalf("content type %q", ct)
	}
	obj, err := jose.ParseSignedCompact(string(body), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		c.t.Fatal(err)
	}
	if typ, _ := obj.Signatures[0].Protected.ExtraHeaders[jose.HeaderType].(string); typ != guard.JWSType {
		c.t.Fatalf("typ %q, want %q", typ, guard.JWSType)
	}
	var set jose.JSONWebKeySet
	_, keys := c.do(nil, "GET", "/v1/keys", "", nil)
	if err := json.Unmarshal(keys, &set); err != nil {
		c.t.Fatal(err)
	}
	k := set.Key(obj.Signatures[0].Header.KeyID)
	if len(k) != 1 {
		c.t.Fatalf("kid %q not in /v1/keys", obj.Signatures[0].Header.KeyID)
	}
	payload, err := obj.Verify(k[0].Key)
	if err != nil {
		c.t.Fatal(err)
	}
	var l guard.AccessList
	if err := json.Unmarshal(payload, &l); err != nil {
		c.t.Fatal(err)
	}
	return l
}

func allows(l guard.AccessList, consumer, resource, action string) bool {
	for _, c := range l.Consumers {
		if !strings.HasSuffix(c.ID, "/svc/"+consumer) {
			continue
		}
		for _, g := range c.Grants {
			if g.Resource != resource {
				continue
			}
			for _, a := range g.Actions {
				if a == action {
					return true
				}
			}
		}
	}
	return false
}

const whoamiManifest = "service: whoami\nversion: 1.0.0\nprovides:\n  - resource: whoami\n    actions: [read, write]\n"

func webManifest(version string, actions ...string) string {
	return fmt.Sprintf("service: web\nversion: %s\nconsumes:\n  - service: whoami\n    resource: whoami\n    actions: [%s]\n", version, strings.Join(actions, ", "))
}

func TestCatalogApproveAndRevoke(t *testing.T) {
	c := newCatalogEnv(t)
	c.service("id", "whoami", "L2")
	c.service("web", "web", "L2")
	c.declare("whoami", whoamiManifest, http.StatusOK)

	l0 := c.list("whoami")
	if l0.Version < 1 || len(l0.Consumers) != 0 || !strings.HasSuffix(l0.Subject, "/svc/whoami") || !strings.HasSuffix(l0.Issuer, "/ward/authority") {
		t.Fatalf("initial list %+v", l0)
	}

	id, state := requestID(t, c.declare("web", webManifest("1.0.0", "read"), http.StatusOK))
	if state != "pending" || !strings.HasPrefix(id, "req-") {
		t.Fatalf("declaration made %q %q, want a pending request", id, state)
	}
	// Declaring the same again asks nothing new.
	if id2, state2 := requestID(t, c.declare("web", webManifest("1.0.0", "read"), http.StatusOK)); id2 != id || state2 != "pending" {
		t.Fatalf("re-declaration: %q %q", id2, state2)
	}
	if l := c.list("whoami"); allows(l, "web", "whoami", "read") {
		t.Fatal("web allowed before approval")
	}

	var pending []requestView
	c.admin("GET", "/v1/catalog/requests?state=pending", nil, http.StatusOK, &pending)
	if len(pending) != 1 || pending[0].ID != id || pending[0].ProviderLevel != "L2" || len(pending[0].Approvers) == 0 {
		t.Fatalf("pending = %+v", pending)
	}

	var approved requestView
	c.admin("POST", "/v1/catalog/requests/"+id+"/approve", map[string]string{"reason": "reviewed contract"}, http.StatusOK, &approved)
	if approved.State != "approved" || approved.DecidedBy == "" || approved.DecidedRole != "admin" || approved.Reason != "reviewed contract" || approved.DecidedAt == nil {
		t.Fatalf("approved = %+v", approved)
	}
	l1 := c.list("whoami")
	if !allows(l1, "web", "whoami", "read") || allows(l1, "web", "whoami", "write") || l1.Version <= l0.Version {
		t.Fatalf("list after approval: %+v (before: version %d)", l1, l0.Version)
	}

	// Approving twice is a conflict that says so.
	resp, body := c.do(nil, "POST", "/v1/catalog/requests/"+id+"/approve", c.adminToken, map[string]string{})
	if p := wantProblem(t, resp, body, http.StatusConflict, slugConflict); !strings.Contains(p.Detail, "already approved") {
		t.Fatalf("detail %q", p.Detail)
	}
	// Already granted: a re-declaration asks nothing.
	if _, st := requestID(t, c.declare("web", webManifest("1.0.0", "read"), http.StatusOK)); st != "granted" {
		t.Fatalf("state after grant %q", st)
	}
	// Widening asks only for the new action.
	wid, st := requestID(t, c.declare("web", webManifest("1.1.0", "read", "write"), http.StatusOK))
	if st != "pending" {
		t.Fatalf("widened state %q", st)
	}
	var wreq requestView
	c.admin("GET", "/v1/catalog/requests/"+wid, nil, http.StatusOK, &wreq)
	if strings.Join(wreq.Actions, ",") != "write" {
		t.Fatalf("widened request asks %v, want [write]", wreq.Actions)
	}
	// Deny needs a reason; denied requests cannot be approved.
	resp, body = c.do(nil, "POST", "/v1/catalog/requests/"+wid+"/deny", c.adminToken, map[string]string{})
	wantProblem(t, resp, body, http.StatusBadRequest, slugInvalidRequest)
	c.admin("POST", "/v1/catalog/requests/"+wid+"/deny", map[string]string{"reason": "read is enough"}, http.StatusOK, nil)
	resp, body = c.do(nil, "POST", "/v1/catalog/requests/"+wid+"/approve", c.adminToken, map[string]string{})
	if p := wantProblem(t, resp, body, http.StatusConflict, slugConflict); !strings.Contains(p.Detail, "denied") {
		t.Fatalf("detail %q", p.Detail)
	}
	// The same declaration does not ask again after a denial.
	if _, st := requestID(t, c.declare("web", webManifest("1.1.0", "read", "write"), http.StatusOK)); st != "denied" {
		t.Fatalf("state after denial %q", st)
	}

	var revoked requestView
	c.admin("POST", "/v1/catalog/grants/"+id+"/revoke", map[string]string{"reason": "contract ended"}, http.StatusOK, &revoked)
	if revoked.State != "revoked" || revoked.RevokeReason != "contract ended" || revoked.RevokedAt == nil {
		t.Fatalf("revoked = %+v", revoked)
	}
	l2 := c.list("whoami")
	if allows(l2, "web", "whoami", "read") || l2.Version <= l1.Version {
		t.Fatalf("list after revocation: %+v", l2)
	}
	resp, body = c.do(nil, "POST", "/v1/catalog/grants/"+id+"/revoke", c.adminToken, map[string]string{"reason": "again"})
	wantProblem(t, resp, body, http.StatusConflict, slugConflict)
	resp, body = c.do(nil, "POST", "/v1/catalog/requests/req-0000000000000000/approve", c.adminToken, map[string]string{})
	wantProblem(t, resp, body, http.StatusNotFound, slugNotFound)
}

func TestCatalogApprovalRules(t *testing.T) {
	c := newCatalogEnv(t)
	c.service("vault", "vault", "L3")
	c.service("front", "front", "L1")
	c.service("front", "cache", "L1")
	c.service("back", "batch", "L2")
	c.declare("vault", "service: vault\nversion: 1.0.0\nprovides:\n  - resource: secrets\n    actions: [read]\n", http.StatusOK)
	c.declare("cache", "service: cache\nversion: 2.0.0\nauto_approve_l1: true\nprovides:\n  - resource: entries\n    actions: [get]\n", http.StatusOK)

	tokenFor := func(name string, roles ...string) string {
		var out struct {
			Token string `json:"token"`
		}
		c.admin("POST", "/v1/admin-tokens", map[string]any{"name": name, "roles": roles}, http.StatusCreated, &out)
		return out.Token
	}
	vaultTeam := tokenFor("vault-team", "team:vault")
	security := tokenFor("sec", "security")

	// L1 → L1 with opt-in: approved at once.
	auto := c.declare("front", "service: front\nversion: 1.0.0\nconsumes:\n  - service: cache\n    resource: entries\n    actions: [get]\n", http.StatusOK)
	if _, st := requestID(t, auto); st != "approved" {
		t.Fatalf("L1→L1 opt-in: state %q, want approved", st)
	}
	if l := c.list("cache"); !allows(l, "front", "entries", "get") {
		t.Fatalf("auto grant missing from list: %+v", l)
	}
	// L2 → L1 with opt-in: still reviewed.
	if _, st := requestID(t, c.declare("batch", "service: batch\nversion: 1.0.0\nconsumes:\n  - service: cache\n    resource: entries\n    actions: [get]\n", http.StatusOK)); st != "pending" {
		t.Fatalf("L2→L1: state %q, want pending", st)
	}

	// L1 → L3: security only, and only with a justification.
	requestID(t, c.declare("front", "service: front\nversion: 1.1.0\nconsumes:\n  - service: cache\n    resource: entries\n    actions: [get]\n  - service: vault\n    resource: secrets\n    actions: [read]\n", http.StatusOK))
	reqs := []requestView{}
	c.admin("GET", "/v1/catalog/requests?provider=vault", nil, http.StatusOK, &reqs)
	if len(reqs) != 1 || !reqs[0].NeedsReason || strings.Join(reqs[0].Approvers, ",") != "security,admin" {
		t.Fatalf("vault requests %+v", reqs)
	}
	id := reqs[0].ID
	resp, body := c.do(nil, "POST", "/v1/catalog/requests/"+id+"/approve", vaultTeam, map[string]string{"reason": "we own the vault, trust us"})
	if p := wantProblem(t, resp, body, http.StatusForbidden, slugForbidden); !strings.Contains(p.Detail, "L3") {
		t.Fatalf("detail %q", p.Detail)
	}
	resp, body = c.do(nil, "POST", "/v1/catalog/requests/"+id+"/approve", security, map[string]string{"reason": "short"})
	if p := wantProblem(t, resp, body, http.StatusBadRequest, slugInvalidRequest); !strings.Contains(p.Detail, "justification") {
		t.Fatalf("detail %q", p.Detail)
	}
	var ok requestView
	resp, body = c.do(nil, "POST", "/v1/catalog/requests/"+id+"/approve", security, map[string]string{"reason": "front renders the masked card number; ticket SEC-42"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("security approval: %d %s", resp.StatusCode, body)
	}
	_ = json.Unmarshal(body, &ok)
	if ok.DecidedRole != "security" || ok.DecidedBy != "sec" {
		t.Fatalf("decision record %+v", ok)
	}

	// A team token sees only requests that touch its team, and may not
	// approve for another team's provider.
	var seen []requestView
	resp, body = c.do(nil, "GET", "/v1/catalog/requests?state=all", vaultTeam, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("team list: %d %s", resp.StatusCode, body)
	}
	_ = json.Unmarshal(body, &seen)
	for _, r := range seen {
		if r.Provider != "vault" && r.Consumer != "vault" {
			t.Fatalf("team:vault sees %+v", r)
		}
	}

	// Posture reports the level of every service and no violation here.
	var rep struct {
		Services []struct {
			Name  string `json:"name"`
			Level string `json:"level"`
		} `json:"services"`
		Violations []struct {
			Rule string `json:"rule"`
		} `json:"violations"`
	}
	c.admin("GET", "/v1/posture", nil, http.StatusOK, &rep)
	if len(rep.Services) != 4 {
		t.Fatalf("posture services %+v", rep.Services)
	}
	for _, v := range rep.Violations {
		if v.Rule != "auto-approve-ignored" && v.Rule != "unused-grant" {
			t.Fatalf("unexpected violation %+v", v)
		}
	}
	resp, body = c.do(nil, "GET", "/v1/catalog/graph?format=mermaid", c.adminToken, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "front") || !strings.Contains(string(body), "vault") {
		t.Fatalf("graph: %d %s", resp.StatusCode, body)
	}
	resp, body = c.do(nil, "GET", "/v1/catalog/graph?format=svg", c.adminToken, nil)
	wantProblem(t, resp, body, http.StatusBadRequest, slugInvalidRequest)
}

func TestDeclareBadInput(t *testing.T) {
	c := newCatalogEnv(t)
	c.service("id", "whoami", "L1")
	c.service("web", "web", "L1")
	c.declare("whoami", whoamiManifest, http.StatusOK)

	tests := []struct {
		name   string
		client *http.Client
		ctype  string
		body   string
		status int
		slug   string
		detail string
	}{
		{"no client certificate", nil, "application/yaml", webManifest("1.0.0", "read"), 401, slugUnauthorized, ""},
		{"malformed yaml", c.clients["web"], "application/yaml", "service: [web", 400, slugInvalidManifest, ""},
		{"unknown field", c.clients["web"], "application/yaml", "service: web\nversion: 1\nextra: 1\n", 400, slugInvalidManifest, "extra"},
		{"oversized", c.clients["web"], "application/yaml", "service: web\nversion: 1.0.0\n#" + strings.Repeat("x", 70<<10) + "\n", 413, slugTooLarge, ""},
		{"another service", c.clients["web"], "application/yaml", "service: whoami\nversion: 9.9.9\n", 403, slugForbiddenIdentity, "may declare only"},
		{"unknown provider", c.clients["web"], "application/yaml", "service: web\nversion: 1.0.0\nconsumes:\n  - service: nobody\n    resource: x\n    actions: [read]\n", 422, slugUnknownDependency, "nobody"},
		{"unknown resource", c.clients["web"], "application/yaml", "service: web\nversion: 1.0.0\nconsumes:\n  - service: whoami\n    resource: pages\n    actions: [read]\n", 422, slugUnknownDependency, "pages"},
		{"unknown action", c.clients["web"], "application/yaml", webManifest("1.0.0", "delete"), 422, slugUnknownDependency, "delete"},
		{"wrong media type", c.clients["web"], "application/xml", webManifest("1.0.0", "read"), 415, slugUnsupportedMedia, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := tt.client
			if cl == nil {
				cl = c.client(nil)
			}
			req, err := http.NewRequest("POST", c.url+"/v1/catalog/declarations", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tt.ctype)
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			p := wantProblem(t, resp, body, tt.status, tt.slug)
			if !strings.Contains(p.Detail, tt.detail) {
				t.Fatalf("detail %q does not mention %q", p.Detail, tt.detail)
			}
		})
	}
	// An admin token is no service identity.
	resp, body := c.do(nil, "GET", "/v1/accesslist", c.adminToken, nil)
	wantProblem(t, resp, body, http.StatusUnauthorized, slugUnauthorized)
}

func TestAccessListEventReachesOnlyTheProvider(t *testing.T) {
	c := newCatalogEnv(t)
	c.service("id", "whoami", "L1")
	c.service("web", "web", "L1")
	c.declare("whoami", whoamiManifest, http.StatusOK)
	other, _ := c.watchPastSnapshot()

	ws, err := c.watch(c.clients["whoami"], "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ws.close)
	pub, _ := c.signingKeyOf()
	var snap snapshotPayload
	verifyEvent(t, pub, ws.next(t, 5*time.Second), &snap)
	if snap.AccessListVersion < 1 {
		t.Fatalf("snapshot access_list_version %d", snap.AccessListVersion)
	}

	id, _ := requestID(t, c.declare("web", webManifest("1.0.0", "read"), http.StatusOK))
	c.admin("POST", "/v1/catalog/requests/"+id+"/approve", map[string]string{}, http.StatusOK, nil)
	ev := ws.next(t, 5*time.Second)
	if ev.Kind != kindAccessList {
		t.Fatalf("event kind %q, want accesslist", ev.Kind)
	}
	var p struct {
		Version     int64  `json:"version"`
		Provider    string `json:"provider"`
		ListVersion int64  `json:"list_version"`
	}
	verifyEvent(t, pub, ev, &p)
	if !strings.HasSuffix(p.Provider, "/svc/whoami") || p.ListVersion <= snap.AccessListVersion || p.Version != ev.Seq {
		t.Fatalf("accesslist event %+v (snapshot version %d)", p, snap.AccessListVersion)
	}
	if got := c.list("whoami").Version; got != p.ListVersion {
		t.Fatalf("list version %d, event said %d", got, p.ListVersion)
	}
	select {
	case ev := <-other.events:
		if ev.Kind == kindAccessList {
			t.Fatalf("another service's watcher got %+v", ev)
		}
	case <-time.After(200 * time.Millisecond):
	}
}

// TestDeclarationRateLimit: changed declarations are limited per service;
// re-sending the current one is free.
func TestDeclarationRateLimit(t *testing.T) {
	c := &catalogEnv{env: newEnv(t, withTunables(func(tu *tunables) { tu.declareRate, tu.declareBurst = 0.001, 3 })), clients: map[string]*http.Client{}}
	c.service("id", "whoami", "L1")
	c.service("id", "other", "L1")
	for i := range 3 {
		c.declare("whoami", fmt.Sprintf("service: whoami\nversion: 1.0.%d\n", i), http.StatusOK)
	}
	resp, body := c.do(c.clients["whoami"], "POST", "/v1/catalog/declarations", "", "service: whoami\nversion: 1.0.9\n")
	wantProblem(t, resp, body, http.StatusTooManyRequests, slugTooManyDeclarations)
	if out := c.declare("whoami", "service: whoami\nversion: 1.0.2\n", http.StatusOK); out["unchanged"] != true {
		t.Fatalf("re-sending the current declaration: %v", out)
	}
	c.declare("other", "service: other\nversion: 1.0.0\n", http.StatusOK) // another service has its own budget
}
