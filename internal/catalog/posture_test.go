package catalog

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/wardsec/ward/internal/store"
)

// violationKey is what the posture tests compare: the rule, the service it
// is about and the grant.
type violationKey struct{ rule, service, grant string }

func keys(vs []Violation) []violationKey {
	out := make([]violationKey, 0, len(vs))
	for _, v := range vs {
		out = append(out, violationKey{v.Rule, v.Service, v.GrantID})
	}
	return out
}

func TestPostureRules(t *testing.T) {
	consumerOf := func(name string) string {
		return "service: " + name + "\nversion: v1\nconsumes: [{service: prov, resource: data, actions: [read, write]}]\n"
	}
	provider := func(autoApprove bool) string {
		s := "service: prov\nversion: v1\nprovides: [{resource: data, actions: [read, write]}]\n"
		if autoApprove {
			s += "auto_approve_l1: true\n"
		}
		return s
	}
	auto := func(g store.AccessRequest) store.AccessRequest {
		g.Auto, g.DecidedBy, g.DecidedByID, g.DecidedRole, g.Reason = true, "auto", "", "auto", ""
		return g
	}
	withRole := func(g store.AccessRequest, role, reason string) store.AccessRequest {
		g.DecidedRole, g.Reason = role, reason
		return g
	}
	tests := []struct {
		name     string
		services []store.Service
		decls    []string
		grants   []store.AccessRequest
		want     []violationKey
	}{
		{
			name:     "clean L2 grant by the team",
			services: []store.Service{service("cons", "a", "L2"), service("prov", "b", "L2")},
			decls:    []string{consumerOf("cons"), provider(false)},
			grants:   []store.AccessRequest{withRole(grant("req-1", "cons", "prov", "data", "read"), "team:b", "")},
		},
		{
			name:     "the gateway's route grant needs no declaration",
			services: []store.Service{service("prov", "b", "L3")},
			decls:    []string{provider(false)},
			grants:   []store.AccessRequest{withRole(grant("req-1", "ward/gateway", "prov", "data", "read"), "admin", "route prov")},
		},
		{
			name:     "L3 approved by security with justification",
			services: []store.Service{service("cons", "a", "L1"), service("prov", "b", "L3")},
			decls:    []string{consumerOf("cons"), provider(false)},
			grants:   []store.AccessRequest{withRole(grant("req-1", "cons", "prov", "data", "read"), "security", "fraud checks, SEC-12")},
		},
		{
			name:     "L3 approved by admin",
			services: []store.Service{service("cons", "a", "L2"), service("prov", "b", "L3")},
			decls:    []string{consumerOf("cons"), provider(false)},
			grants:   []store.AccessRequest{withRole(grant("req-1", "cons", "prov", "data", "read"), "admin", "")},
		},
		{
			name:     "L3 approved by the team",
			services: []store.Service{service("cons", "a", "L2"), service("prov", "b", "L3")},
			decls:    []string{consumerOf("cons"), provider(false)},
			grants:   []store.AccessRequest{withRole(grant("req-1", "cons", "prov", "data", "read"), "team:b", "")},
			want:     []violationKey{{RuleL3ApprovalNotSecurity, "prov", "req-1"}},
		},
		{
			name:     "L3 approved automatically",
			services: []store.Service{service("cons", "a", "L2"), service("prov", "b", "L3")},
			decls:    []string{consumerOf("cons"), provider(true)},
			grants:   []store.AccessRequest{auto(grant("req-1", "cons", "prov", "data", "read"))},
			want: []violationKey{
				{RuleL3ApprovalNotSecurity, "prov", "req-1"},
				{RuleAutoApprovalInvalid, "prov", "req-1"},
				{RuleAutoApproveIgnored, "prov", ""},
			},
		},
		{
			name:     "L1 to L3 unjustified",
			services: []store.Service{service("cons", "a", "L1"), service("prov", "b", "L3")},
			decls:    []string{consumerOf("cons"), provider(false)},
			grants:   []store.AccessRequest{withRole(grant("req-1", "cons", "prov", "data", "read"), "security", "  too short ")},
			want:     []violationKey{{RuleL1ToL3Unjustified, "prov", "req-1"}},
		},
		{
			name:     "L2 to L3 needs no justification",
			services: []store.Service{service("cons", "a", "L2"), service("prov", "b", "L3")},
			decls:    []string{consumerOf("cons"), provider(false)},
			grants:   []store.AccessRequest{withRole(grant("req-1", "cons", "prov", "data", "read"), "security", "")},
		},
		{
			name:     "valid automatic approval",
			services: []store.Service{service("cons", "a", "L1"), service("prov", "b", "L1")},
			decls:    []string{consumerOf("cons"), provider(true)},
			grants:   []store.AccessRequest{auto(grant("req-1", "cons", "prov", "data", "read"))},
		},
		{
			name:     "automatic approval after the provider opted out",
			services: []store.Service{service("cons", "a", "L1"), service("prov", "b", "L1")},
			decls:    []string{consumerOf("cons"), provider(false)},
			grants:   []store.AccessRequest{auto(grant("req-1", "cons", "prov", "data", "read"))},
			want:     []violationKey{{RuleAutoApprovalInvalid, "prov", "req-1"}},
		},
		{
			name:     "automatic approval after the consumer moved to L2",
			services: []store.Service{service("cons", "a", "L2"), service("prov", "b", "L1")},
			decls:    []string{consumerOf("cons"), provider(true)},
			grants:   []store.AccessRequest{auto(grant("req-1", "cons", "prov", "data", "read"))},
			want:     []violationKey{{RuleAutoApprovalInvalid, "prov", "req-1"}},
		},
		{
			name:     "automatic approval after the provider moved to L2",
			services: []store.Service{service("cons", "a", "L1"), service("prov", "b", "L2")},
			decls:    []string{consumerOf("cons"), provider(true)},
			grants:   []store.AccessRequest{auto(grant("req-1", "cons", "prov", "data", "read"))},
			want: []violationKey{
				{RuleAutoApprovalInvalid, "prov", "req-1"},
				{RuleAutoApproveIgnored, "prov", ""},
			},
		},
		{
			name:     "automatic approval, provider without declaration",
			services: []store.Service{service("cons", "a", "L1"), service("prov", "b", "L1")},
			decls:    []string{consumerOf("cons")},
			grants:   []store.AccessRequest{auto(grant("req-1", "cons", "prov", "data", "read"))},
			want: []violationKey{
				{RuleAutoApprovalInvalid, "prov", "req-1"},
				{RuleStaleGrant, "prov", "req-1"},
			},
		},
		{
			name:     "opt-in on an L1 provider is not ignored",
			services: []store.Service{service("prov", "b", "L1")},
			decls:    []string{provider(true)},
		},
		{
			name:     "opt-in on an L3 provider is ignored",
			services: []store.Service{service("prov", "b", "L3")},
			decls:    []string{provider(true)},
			want:     []violationKey{{RuleAutoApproveIgnored, "prov", ""}},
		},
		{
			name:     "revoked consumer",
			services: []store.Service{revokedService("cons", "a", "L2"), service("prov", "b", "L2")},
			decls:    []string{consumerOf("cons"), provider(false)},
			grants:   []store.AccessRequest{grant("req-1", "cons", "prov", "data", "read")},
			want:     []violationKey{{RuleGrantToRevokedService, "cons", "req-1"}},
		},
		{
			name:     "revoked consumer and provider",
			services: []store.Service{revokedService("cons", "a", "L2"), revokedService("prov", "b", "L2")},
			decls:    []string{consumerOf("cons"), provider(false)},
			grants:   []store.AccessRequest{grant("req-1", "cons", "prov", "data", "read")},
			want: []violationKey{
				{RuleGrantToRevokedService, "cons", "req-1"},
				{RuleGrantToRevokedService, "prov", "req-1"},
			},
		},
		{
			name:     "stale grant",
			services: []store.Service{service("cons", "a", "L2"), service("prov", "b", "L2")},
			decls:    []string{"service: cons\nversion: v1\nconsumes: [{service: prov, resource: data, actions: [read, delete]}]\n", provider(false)},
			grants:   []store.AccessRequest{grant("req-1", "cons", "prov", "data", "read", "delete")},
			want:     []violationKey{{RuleStaleGrant, "prov", "req-1"}},
		},
		{
			name:     "unused grant",
			services: []store.Service{service("cons", "a", "L2"), service("prov", "b", "L2")},
			decls:    []string{"service: cons\nversion: v1\nconsumes: [{service: prov, resource: data, actions: [read]}]\n", provider(false)},
			grants:   []store.AccessRequest{grant("req-1", "cons", "prov", "data", "read", "write")},
			want:     []violationKey{{RuleUnusedGrant, "cons", "req-1"}},
		},
		{
			name:     "unused grant, consumer without declaration",
			services: []store.Service{service("cons", "a", "L2"), service("prov", "b", "L2")},
			decls:    []string{provider(false)},
			grants:   []store.AccessRequest{grant("req-1", "cons", "prov", "data", "read")},
			want:     []violationKey{{RuleUnusedGrant, "cons", "req-1"}},
		},
		{
			name:     "rows that are not approved are ignored",
			services: []store.Service{service("cons", "a", "L2"), service("prov", "b", "L3")},
			grants: []store.AccessRequest{
				withState(grant("req-1", "cons", "prov", "data", "read"), store.RequestRevoked),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var decls []store.Declaration
			for i, m := range tt.decls {
				decls = append(decls, declaration(t, int64(i+1), m))
			}
			r := Posture(PostureInput{Services: tt.services, Declarations: decls, Grants: tt.grants})
			got := keys(r.Violations)
			want := tt.want
			if want == nil {
				want = []violationKey{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("violations:\ngot  %v\nwant %v\n%+v", got, want, r.Violations)
			}
			for _, v := range r.Violations {
				if v.Detail == "" || (v.Severity != SeverityHigh && v.Severity != SeverityMedium && v.Severity != SeverityLow) {
					t.Errorf("violation %+v: empty detail or unknown severity", v)
				}
			}
		})
	}
}

func TestPostureSeverities(t *testing.T) {
	want := map[string]string{
		RuleL3ApprovalNotSecurity: SeverityHigh,
		RuleL1ToL3Unjustified:     SeverityHigh,
		RuleAutoApprovalInvalid:   SeverityMedium,
		RuleAutoApproveIgnored:    SeverityLow,
		RuleGrantToRevokedService: SeverityLow,
		RuleStaleGrant:            SeverityLow,
		RuleUnusedGrant:           SeverityLow,
	}
	// One catalogue that breaks every rule.
	services := []store.Service{service("cons", "a", "L1"), revokedService("prov", "b", "L3")}
	decls := []store.Declaration{
		declaration(t, 1, "service: cons\nversion: v1\nconsumes: [{service: prov, resource: data, actions: [read]}]\n"),
		declaration(t, 2, "service: prov\nversion: v1\nauto_approve_l1: true\nprovides: [{resource: data, actions: [write]}]\n"),
	}
	g := grant("req-1", "cons", "prov", "data", "read", "write")
	g.Auto, g.DecidedRole, g.Reason = true, "auto", ""
	r := Posture(PostureInput{Services: services, Declarations: decls, Grants: []store.AccessRequest{g}})
	seen := map[string]bool{}
	for _, v := range r.Violations {
		seen[v.Rule] = true
		if want[v.Rule] != v.Severity {
			t.Errorf("%s has severity %s, want %s", v.Rule, v.Severity, want[v.Rule])
		}
	}
	for rule := range want {
		if !seen[rule] {
			t.Errorf("rule %s did not fire: %+v", rule, r.Violations)
		}
	}
	if !slices.IsSortedFunc(r.Violations, compareViolations) {
		t.Errorf("violations not sorted: %+v", r.Violations)
	}
	if r.Violations[0].Severity != SeverityHigh || r.Violations[len(r.Violations)-1].Severity != SeverityLow {
		t.Errorf("high first, low last: %+v", r.Violations)
	}
}

func TestPostureReport(t *testing.T) {
	services := []store.Service{
		service("web", "front", "L1"),
		service("orders", "shop", "L2"),
		service("ledger", "fin", "L3"),
		service("idle", "ops", "L2"),
	}
	decls := []store.Declaration{
		declaration(t, 1, "service: web\nversion: 1.0.0\nconsumes: [{service: orders, resource: orders, actions: [read]}]\n"),
		declaration(t, 2, "service: orders\nversion: \"2\"\nprovides: [{resource: orders, actions: [read, write]}]\nconsumes: [{service: ledger, resource: entries, actions: [write]}]\n"),
		declaration(t, 3, "service: ledger\nversion: \"9\"\nauto_approve_l1: true\nprovides: [{resource: entries, actions: [write, read]}]\n"),
		// An older declaration of orders is ignored.
		declaration(t, 0, "service: orders\nversion: \"1\"\n"),
	}
	g1 := grant("req-1", "web", "orders", "orders", "read")
	g1.DecidedRole = "team:shop"
	g2 := grant("req-2", "orders", "ledger", "entries", "write")
	pending := grant("req-3", "web", "ledger", "entries", "read")
	pending.State = store.RequestPending
	notPending := grant("req-4", "idle", "ledger", "entries", "read")
	notPending.State = store.RequestDenied

	in := PostureInput{Services: services, Declarations: decls, Grants: []store.AccessRequest{g2, g1}, Pending: []store.AccessRequest{pending, notPending}}
	r := Posture(in)

	var names []string
	for _, s := range r.Services {
		names = append(names, s.Name)
	}
	if !reflect.DeepEqual(names, []string{"idle", "ledger", "orders", "web"}) {
		t.Fatalf("services %v", names)
	}
	idle, ledger, orders, web := r.Services[0], r.Services[1], r.Services[2], r.Services[3]
	if idle.Declared != "" || len(idle.Provides) != 0 || idle.Provides == nil || idle.GrantsIn == nil || idle.Violations == nil || idle.Pending != 0 {
		t.Errorf("idle: %+v", idle)
	}
	if ledger.Declared != "9" || !ledger.AutoApproveL1 || ledger.Pending != 1 || len(ledger.GrantsIn) != 1 || ledger.GrantsIn[0].ID != "req-2" {
		t.Errorf("ledger: %+v", ledger)
	}
	if !reflect.DeepEqual(ledger.Provides, []Provided{{Resource: "entries", Actions: []string{"read", "write"}}}) {
		t.Errorf("ledger provides %+v", ledger.Provides)
	}
	if orders.Declared != "2" || len(orders.GrantsIn) != 1 || len(orders.GrantsOut) != 1 || orders.GrantsOut[0].Provider != "ledger" {
		t.Errorf("orders: %+v", orders)
	}
	wantSummary := GrantSummary{ID: "req-1", Consumer: "web", Provider: "orders", Resource: "orders", Actions: []string{"read"},
		ApprovedBy: "alice", Role: "team:shop", Reason: "needed for checkout"}
	if len(web.GrantsOut) != 1 || !reflect.DeepEqual(web.GrantsOut[0], wantSummary) || web.Pending != 1 {
		t.Errorf("web: %+v", web)
	}
	// ledger opts in while L3: auto-approve-ignored, about ledger only.
	if got := keys(r.Violations); !reflect.DeepEqual(got, []violationKey{{RuleAutoApproveIgnored, "ledger", ""}}) {
		t.Errorf("violations %v", got)
	}
	if len(ledger.Violations) != 1 || len(orders.Violations) != 0 {
		t.Errorf("per-service violations: ledger %v, orders %v", ledger.Violations, orders.Violations)
	}

	// Deterministic whatever the input order.
	b1, _ := json.Marshal(r)
	slices.Reverse(in.Services)
	slices.Reverse(in.Declarations)
	slices.Reverse(in.Grants)
	b2, _ := json.Marshal(Posture(in))
	if string(b1) != string(b2) {
		t.Errorf("report depends on input order:\n%s\n%s", b1, b2)
	}
	for _, field := range []string{`"declared_version":"9"`, `"grants_in":`, `"grants_out":`, `"pending":1`, `"approved_by":"alice"`, `"auto_approve_l1":true`} {
		if !strings.Contains(string(b1), field) {
			t.Errorf("JSON lacks %s: %s", field, b1)
		}
	}
}

func TestPostureViolationsTouchBothParties(t *testing.T) {
	services := []store.Service{service("cons", "a", "L2"), service("prov", "b", "L3"), service("other", "c", "L2")}
	g := grant("req-1", "cons", "prov", "data", "read")
	g.DecidedRole = "team:b"
	r := Posture(PostureInput{Services: services, Grants: []store.AccessRequest{g}})
	if len(r.Violations) == 0 {
		t.Fatal("no violations")
	}
	byName := map[string]ServicePosture{}
	for _, s := range r.Services {
		byName[s.Name] = s
	}
	if !reflect.DeepEqual(byName["cons"].Violations, r.Violations) || !reflect.DeepEqual(byName["prov"].Violations, r.Violations) {
		t.Errorf("cons %v, prov %v, all %v", byName["cons"].Violations, byName["prov"].Violations, r.Violations)
	}
	if len(byName["other"].Violations) != 0 {
		t.Errorf("other: %v", byName["other"].Violations)
	}
}

func TestPostureEmpty(t *testing.T) {
	r := Posture(PostureInput{})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"services":[],"violations":[]}` {
		t.Fatalf("empty report %s", b)
	}
}
