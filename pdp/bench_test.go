package pdp

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/passport"
)

// benchPolicies is a realistic set of n policies: role-based permits over
// 50 resource types and 10 actions, a tenant condition, and a few
// forbids on principals.
func benchPolicies(n int) string {
	var b strings.Builder
	for i := range n {
		switch {
		case i%100 == 99:
			fmt.Fprintf(&b, "forbid(principal == User::\"blocked%d\", action, resource);\n", i)
		case i%10 == 9:
			fmt.Fprintf(&b, "permit(principal, action == Action::\"a%d\", resource is res%d) when { context.tenant == \"t%d\" && context.scopes.contains(\"s%d\") };\n", i%10, i%50, i%7, i%13)
		default:
			fmt.Fprintf(&b, "permit(principal in Role::\"r%d\", action == Action::\"a%d\", resource is res%d) when { context.tenant == principal.tenant };\n", i%200, i%10, i%50)
		}
	}
	return b.String()
}

func benchInput() *Input {
	return &Input{
		Caller:   spiffeid.RequireFromString("spiffe://example.org/svc/frontend"),
		Passport: &passport.Claims{Subject: "alice", Tenant: "acme", Roles: []string{"r1", "r21", "r41"}, Scope: "s1 s2", AuthMethod: "jwt"},
		Resource: "res21", ResourceID: "42", Action: "a1", CorrelationID: "4bf92f3577b34da6a3ce929d0e0e4736",
	}
}

// BenchmarkDecision1000 compares, in one run, ward's indexed decision
// with plain cedar.Authorize over the same 1,000 policies and request.
func BenchmarkDecision1000(b *testing.B) {
	policies, err := Compile([]File{{Name: "bench.cedar", Text: benchPolicies(1000)}})
	if err != nil {
		b.Fatal(err)
	}
	ps := cedar.NewPolicySet()
	for _, p := range policies {
		ps.Add(p.ID, p.Policy)
	}
	ix := NewIndex(policies)
	req, entities := Request(benchInput())
	want, _ := cedar.Authorize(ps, entities, req)
	if got, _ := ix.Authorize(entities, req); got != want || want != cedar.Allow {
		b.Fatalf("index %v, cedar %v (want allow)", got, want)
	}
	b.Run("plain-cedar", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			cedar.Authorize(ps, entities, req)
		}
	})
	b.Run("ward-index", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ix.Authorize(entities, req)
		}
	})
}

// BenchmarkDecide is the PDP's whole decision: entity model, index,
// decision record.
func BenchmarkDecide(b *testing.B) {
	set, err := NewSet(Content{Version: 1, Policies: []File{{Name: "bench.cedar", Text: benchPolicies(1000)}}})
	if err != nil {
		b.Fatal(err)
	}
	in := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		req, entities := Request(in)
		if d := set.Decide(entities, req); !d.Allowed {
			b.Fatal(d)
		}
	}
}
