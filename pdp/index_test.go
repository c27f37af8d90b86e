package pdp

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
)

// world is a generated entity store: users in groups (groups nest),
// documents in folders (folders nest), actions in action groups.
type world struct {
	users, groups, docs, folders, actions, actionGroups []types.EntityUID
	entities                                            types.EntityMap
}

func uid(typ, id string) types.EntityUID {
	return types.NewEntityUID(types.EntityType(typ), types.String(id))
}

func newWorld(r *rand.Rand) *world {
	w := &world{entities: types.EntityMap{}}
	for i := range 14 {
		w.groups = append(w.groups, uid("Group", fmt.Sprint("g", i)))
		w.folders = append(w.folders, uid("Folder", fmt.Sprint("f", i)))
	}
	for i := range 10 {
		w.users = append(w.users, uid("User", fmt.Sprint("u", i)))
		w.docs = append(w.docs, uid("Doc", fmt.Sprint("d", i)))
	}
	for _, a := range []string{"read", "write", "delete", "list"} {
		w.actions = append(w.actions, uid("Action", a))
	}
	w.actionGroups = []types.EntityUID{uid("Action", "readers"), uid("Action", "writers")}
	pick := func(from []types.EntityUID, n int) types.EntityUIDSet {
		var out []types.EntityUID
		for range n {
			out = append(out, from[r.IntN(len(from))])
		}
		return types.NewEntityUIDSet(out...)
	}
	// Nesting may form cycles: Cedar's walk must cope, and so must ours.
	for _, g := range w.groups {
		w.entities[g] = types.Entity{UID: g, Parents: pick(w.groups, r.IntN(3))}
	}
	for _, f := range w.folders {
		w.entities[f] = types.Entity{UID: f, Parents: pick(w.folders, r.IntN(2))}
	}
	for i, u := range w.users {
		if i%4 == 3 { // some principals are unknown to the store
			continue
		}
		// Up to 9 direct groups, more through nesting: past the
		// index's small ancestor set.
		w.entities[u] = types.Entity{UID: u, Parents: pick(w.groups, r.IntN(10)),
			Attributes: types.NewRecord(types.RecordMap{"level": types.Long(r.IntN(5))})}
	}
	for i, d := range w.docs {
		if i%5 == 4 {
			continue
		}
		w.entities[d] = types.Entity{UID: d, Parents: pick(w.folders, r.IntN(3)),
			Attributes: types.NewRecord(types.RecordMap{"owner": w.users[r.IntN(len(w.users))]})}
	}
	for i, a := range w.actions {
		w.entities[a] = types.Entity{UID: a, Parents: types.NewEntityUIDSet(w.actionGroups[i%2])}
	}
	return w
}

func cedarUID(u types.EntityUID) string { return string(u.MarshalCedar()) }

// policyText generates one policy over w.
func (w *world) policyText(r *rand.Rand) string {
	one := func(s []types.EntityUID) string { return cedarUID(s[r.IntN(len(s))]) }
	var b strings.Builder
	if r.IntN(4) == 0 {
		b.WriteString("forbid(")
	} else {
		b.WriteString("permit(")
	}
	switch r.IntN(6) {
	case 0:
		b.WriteString("principal")
	case 1:
		b.WriteString("principal == " + one(w.users))
	case 2:
		b.WriteString("principal in " + one(w.groups))
	case 3:
		b.WriteString("principal is User")
	case 4:
		b.WriteString("principal is User in " + one(w.groups))
	case 5:
		b.WriteString("principal in " + one(w.users))
	}
	b.WriteString(", ")
	switch r.IntN(5) {
	case 0:
		b.WriteString("action")
	case 1, 2:
		b.WriteString("action == " + one(w.actions))
	case 3:
		b.WriteString("action in " + one(w.actionGroups))
	case 4:
		b.WriteString("action in [" + one(w.actions) + ", " + one(w.actionGroups) + "]")
	}
	b.WriteString(", ")
	switch r.IntN(6) {
	case 0:
		b.WriteString("resource")
	case 1:
		b.WriteString("resource == " + one(w.docs))
	case 2:
		b.WriteString("resource in " + one(w.folders))
	case 3:
		b.WriteString("resource is Doc")
	case 4:
		b.WriteString("resource is Doc in " + one(w.folders))
	case 5:
		b.WriteString("resource is Folder")
	}
	b.WriteString(")")
	switch r.IntN(5) {
	case 1:
		fmt.Fprintf(&b, " when { context.n > %d }", r.IntN(5))
	case 2:
		b.WriteString(" when { resource.owner == principal }")
	case 3:
		fmt.Fprintf(&b, " when { principal.level >= %d }", r.IntN(5)) // errors when absent
	case 4:
		b.WriteString(` unless { context.flag }`)
	}
	b.WriteString(";\n")
	return b.String()
}

func ids[T any](xs []T, f func(T) cedar.PolicyID) []string {
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		out = append(out, string(f(x)))
	}
	slices.Sort(out)
	return out
}

// TestIndexMatchesCedar is the differential test: over generated policy
// sets, entity stores and requests, the indexed decision, reasons and
// errors equal plain cedar.Authorize.
func TestIndexMatchesCedar(t *testing.T) {
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 7))
		w := newWorld(r)
		var text strings.Builder
		for range 10 + r.IntN(300) {
			text.WriteString(w.policyText(r))
		}
		policies, err := Compile([]File{{Name: "gen.cedar", Text: text.String()}})
		if err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, text.String())
		}
		ps := cedar.NewPolicySet()
		for _, p := range policies {
			ps.Add(p.ID, p.Policy)
		}
		ix := NewIndex(policies)
		principals := append(append([]types.EntityUID{}, w.users...), w.groups...)
		resources := append(append([]types.EntityUID{}, w.docs...), w.folders...)
		for range 300 {
			req := cedar.Request{
				Principal: principals[r.IntN(len(principals))],
				Action:    append(w.actions, w.actionGroups...)[r.IntN(len(w.actions)+len(w.actionGroups))],
				Resource:  resources[r.IntN(len(resources))],
				Context:   types.NewRecord(types.RecordMap{"n": types.Long(r.IntN(6)), "flag": types.Boolean(r.IntN(2) == 0)}),
			}
			want, wdiag := cedar.Authorize(ps, w.entities, req)
			got, gdiag := ix.Authorize(w.entities, req)
			wr := ids(wdiag.Reasons, func(x types.DiagnosticReason) cedar.PolicyID { return x.PolicyID })
			gr := ids(gdiag.Reasons, func(x types.DiagnosticReason) cedar.PolicyID { return x.PolicyID })
			we := ids(wdiag.Errors, func(x types.DiagnosticError) cedar.PolicyID { return x.PolicyID })
			ge := ids(gdiag.Errors, func(x types.DiagnosticError) cedar.PolicyID { return x.PolicyID })
			if got != want || !slices.Equal(wr, gr) || !slices.Equal(we, ge) {
				t.Fatalf("seed %d: request %v %v %v: index %v %v %v, cedar %v %v %v", seed,
					req.Principal, req.Action, req.Resource, got, gr, ge, want, wr, we)
			}
		}
	}
}

func TestCompileNamesPolicies(t *testing.T) {
	policies, err := Compile([]File{
		{Name: "b.cedar", Text: `permit(principal, action, resource); @id("named") forbid(principal, action, resource);`},
		{Name: "a.cedar", Text: `permit(principal, action, resource);`},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := ids(policies, func(p Policy) cedar.PolicyID { return p.ID })
	if want := []string{"a.cedar#0", "b.cedar#0", "named"}; !slices.Equal(got, want) {
		t.Fatalf("ids %v, want %v", got, want)
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []File
		want  string
	}{
		{"syntax error has line and column", []File{{Name: "p.cedar", Text: "permit(principal, action, resource);\npermit(principal action);"}}, "p.cedar:2:"},
		{"duplicate id", []File{{Name: "p.cedar", Text: `@id("x") permit(principal, action, resource); @id("x") forbid(principal, action, resource);`}}, `"x" is already used`},
		{"bad file name", []File{{Name: "../p.cedar", Text: ""}}, "policy file name"},
		{"duplicate file", []File{{Name: "p.cedar"}, {Name: "p.cedar"}}, "appears twice"},
		{"too large", []File{{Name: "p.cedar", Text: strings.Repeat(" ", MaxPolicyBytes+1)}}, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.files)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
