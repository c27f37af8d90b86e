package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wardsec/ward/pdp"
)

func load(t *testing.T) Source {
	t.Helper()
	src, err := LoadDir("testdata/whoami")
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestCheckPasses(t *testing.T) {
	r, err := Check(load(t))
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Policies != 2 || len(r.Cases) != 3 {
		t.Fatalf("report %+v", r)
	}
}

func TestCheckRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Source)
		want   string
	}{
		{"failing test", func(s *Source) {
			s.Policies[0].Text = strings.Replace(s.Policies[0].Text, `"suspended"`, `"acme"`, 1)
		}, "expected allow, got deny (forbid by suspended-tenant)"},
		{"schema violation", func(s *Source) {
			s.Policies[0].Text += "\npermit(principal, action == Action::\"read\", resource) when { principal.age > 3 };"
		}, "violates the schema"},
		{"unknown action in schema", func(s *Source) {
			s.Policies[0].Text += "\npermit(principal, action == Action::\"write\", resource);"
		}, "violates the schema"},
		{"syntax error", func(s *Source) {
			s.Policies[0].Text += "\npermit(principal action, resource);"
		}, "whoami.cedar:"},
		{"bad test file", func(s *Source) {
			s.Tests[0].Text = "cases: [{principal: x, expect: maybe}]"
		}, "expect must be allow or deny"},
		{"bad entity in test", func(s *Source) {
			s.Tests[0].Text = strings.Replace(s.Tests[0].Text, `User::"alice"`, `alice`, 1)
		}, "is not an entity UID"},
		{"cyclic entities", func(s *Source) {
			s.Tests[0].Text = strings.Replace(s.Tests[0].Text, `parents: [Role::"reader"]`, `parents: [User::"alice"]`, 1)
		}, "its own ancestor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := load(t)
			tc.change(&src)
			r, err := Check(src)
			if err != nil {
				t.Fatal(err)
			}
			if r.OK() || !strings.Contains(r.Summary(), tc.want) {
				t.Fatalf("summary %q, want it to contain %q", r.Summary(), tc.want)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	src := load(t)
	policies, err := pdp.Compile(src.Policies)
	if err != nil {
		t.Fatal(err)
	}
	set := pdp.NewSetFromPolicies(3, "", policies)
	ex, err := Explain(set, Case{Principal: `User::"bob"`, Action: `Action::"read"`, Resource: `whoami::"/"`,
		Entities: []EntityDoc{{UID: `User::"bob"`, Attrs: map[string]any{"tenant": "suspended"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Allowed || len(ex.Decided) != 1 || ex.Decided[0].ID != "suspended-tenant" || ex.Decided[0].Line != 6 || ex.Decided[0].File != "whoami.cedar" {
		t.Fatalf("explanation %+v", ex)
	}
}

func TestLoadDirRefusesEmpty(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "no *.cedar") {
		t.Fatalf("err %v", err)
	}
}

// FuzzParseCases: pushed test files are untrusted bytes.
func FuzzParseCases(f *testing.F) {
	src, err := LoadDir("testdata/whoami")
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(src.Tests[0].Text))
	f.Add([]byte("cases: [{principal: 'User::\"a\"', action: 'Action::\"b\"', resource: 'R::\"c\"', expect: deny, context: {x: {__entity: {type: T, id: i}}}}]"))
	f.Add([]byte("cases:\n  - entities: [{uid: 'A::\"1\"', parents: ['A::\"1\"']}]\n    expect: allow\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		cases, err := ParseCases(doc)
		if err != nil {
			return
		}
		for _, c := range cases {
			_, _, _ = c.Request()
		}
		r, err := Check(Source{Policies: src.Policies, Schema: src.Schema, Tests: []TestFile{{Name: "f.yaml", Text: string(doc)}}})
		if err != nil {
			t.Fatal(err)
		}
		_ = r.Summary()
	})
}
