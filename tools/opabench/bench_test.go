package opabench

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/passport"
	"github.com/wardsec/ward/pdp"
)

// The same 1,000 rules in both languages: role-based permits over 50
// resource types and 10 actions with a tenant condition, and a forbid per
// hundred rules on a blocked user.
func cedarPolicies(n int) string {
	var b strings.Builder
	for i := range n {
		if i%100 == 99 {
			fmt.Fprintf(&b, "forbid(principal == User::\"blocked%d\", action, resource);\n", i)
			continue
		}
		fmt.Fprintf(&b, "permit(principal in Role::\"r%d\", action == Action::\"a%d\", resource is res%d) when { context.tenant == principal.tenant };\n", i%200, i%10, i%50)
	}
	return b.String()
}

func regoPolicies(n int) string {
	var b strings.Builder
	b.WriteString("package ward.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if {\n\tpermit\n\tnot forbid\n}\n\n")
	for i := range n {
		if i%100 == 99 {
			fmt.Fprintf(&b, "forbid if input.principal.id == \"blocked%d\"\n\n", i)
			continue
		}
		fmt.Fprintf(&b, "permit if {\n\tinput.action == \"a%d\"\n\tinput.resource.type == \"res%d\"\n\t\"r%d\" in input.principal.roles\n\tinput.context.tenant == input.principal.tenant\n}\n\n", i%10, i%50, i%200)
	}
	return b.String()
}

func input() *pdp.Input {
	return &pdp.Input{
		Caller:   spiffeid.RequireFromString("spiffe://example.org/svc/frontend"),
		Passport: &passport.Claims{Subject: "alice", Tenant: "acme", Roles: []string{"r1", "r21", "r41"}, AuthMethod: "jwt"},
		Resource: "res21", ResourceID: "42", Action: "a1",
	}
}

// regoInput is the same request as OPA input.
func regoInput(in *pdp.Input) map[string]any {
	roles := make([]any, len(in.Passport.Roles))
	for i, r := range in.Passport.Roles {
		roles[i] = r
	}
	return map[string]any{
		"principal": map[string]any{"id": in.Passport.Subject, "roles": roles, "tenant": in.Passport.Tenant},
		"action":    in.Action,
		"resource":  map[string]any{"type": in.Resource, "id": in.ResourceID},
		"context":   map[string]any{"tenant": in.Passport.Tenant, "caller": in.Caller.String()},
	}
}

// BenchmarkPDPvsOPA decides the same request over the same 1,000 rules:
// ward's PDP (entity model, index, decision record) and OPA's prepared
// query (input conversion, evaluation).
func BenchmarkPDPvsOPA(b *testing.B) {
	ctx := context.Background()
	set, err := pdp.NewSet(pdp.Content{Version: 1, Policies: []pdp.File{{Name: "bench.cedar", Text: cedarPolicies(1000)}}})
	if err != nil {
		b.Fatal(err)
	}
	p := pdp.NewFixed("bench", set)
	q, err := rego.New(rego.Query("data.ward.authz.allow"), rego.Module("authz.rego", regoPolicies(1000))).PrepareForEval(ctx)
	if err != nil {
		b.Fatal(err)
	}
	in := input()
	d, err := p.Decide(ctx, in)
	if err != nil || !d.Allowed {
		b.Fatalf("ward: %+v %v", d, err)
	}
	rs, err := q.Eval(ctx, rego.EvalInput(regoInput(in)))
	if err != nil || !rs.Allowed() {
		b.Fatalf("opa: %v %v", rs, err)
	}
	b.Run("ward-pdp", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d, _ := p.Decide(ctx, in); !d.Allowed {
				b.Fatal("denied")
			}
		}
	})
	// The gateway mints a passport per request: a service that sees each
	// passport once builds the principal every time.
	b.Run("ward-pdp-new-passport", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			fresh := *in
			claims := *in.Passport
			fresh.Passport = &claims
			if d, _ := p.Decide(ctx, &fresh); !d.Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("opa", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if rs, _ := q.Eval(ctx, rego.EvalInput(regoInput(in))); !rs.Allowed() {
				b.Fatal("denied")
			}
		}
	})
}

// TestEquivalent: both engines decide a spread of requests alike.
func TestEquivalent(t *testing.T) {
	ctx := context.Background()
	set, err := pdp.NewSet(pdp.Content{Version: 1, Policies: []pdp.File{{Name: "bench.cedar", Text: cedarPolicies(1000)}}})
	if err != nil {
		t.Fatal(err)
	}
	p := pdp.NewFixed("bench", set)
	q, err := rego.New(rego.Query("data.ward.authz.allow"), rego.Module("authz.rego", regoPolicies(1000))).PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}
	allowed := 0
	for i := range 400 {
		in := input()
		in.Action = fmt.Sprintf("a%d", i%10)
		in.Resource = fmt.Sprintf("res%d", i%60)
		in.Passport.Roles = []string{fmt.Sprintf("r%d", i%230)}
		if i%7 == 0 {
			in.Passport.Subject = "blocked99"
		}
		if i%11 == 0 {
			in.Passport.Tenant = ""
		}
		d, err := p.Decide(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := q.Eval(ctx, rego.EvalInput(regoInput(in)))
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != rs.Allowed() {
			t.Fatalf("request %d: ward %v, opa %v", i, d.Allowed, rs.Allowed())
		}
		if d.Allowed {
			allowed++
		}
	}
	if allowed == 0 || allowed == 400 {
		t.Fatalf("%d of 400 allowed: the requests do not exercise both outcomes", allowed)
	}
}
