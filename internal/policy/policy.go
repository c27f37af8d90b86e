// Package policy is ward's policy administration logic shared by the
// authority (which refuses a push that fails it) and the CLI (`ward
// policy test`, which runs it locally): loading a policy directory,
// validating its Cedar policies against its schema, running its tests,
// and explaining a decision.
//
// A policy directory holds *.cedar files, an optional
// schema.cedarschema, and tests/*.yaml:
//
//	cases:
//	  - name: admins read
//	    principal: User::"alice"
//	    action: Action::"read"
//	    resource: whoami::"/whoami"
//	    context: {tenant: acme}
//	    entities:
//	      - uid: User::"alice"
//	        parents: [Role::"admin"]
//	        attrs: {tenant: acme}
//	    expect: allow
package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/cedar-policy/cedar-go"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"

	"github.com/wardsec/ward/pdp"
)

// SchemaFile is the schema's file name in a policy directory.
const SchemaFile = "schema.cedarschema"

// Limits of a pushed version besides pdp's.
const (
	MaxSchemaBytes = 512 << 10
	MaxTestFiles   = 256
	MaxTestBytes   = 2 << 20
	MaxCases       = 10000
)

// ErrInvalid: the version does not compile, validate or pass its tests.
var ErrInvalid = errors.New("policy: invalid version")

// TestFile is one tests/*.yaml file.
type TestFile struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

// Source is one version as pushed: policies, optional schema, tests.
type Source struct {
	Policies []pdp.File `json:"policies"`
	Schema   string     `json:"schema,omitempty"`
	Tests    []TestFile `json:"tests,omitempty"`
}

var testNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.ya?ml$`)

// LoadDir reads a policy directory.
func LoadDir(dir string) (Source, error) {
	var src Source
	entries, err := os.ReadDir(dir)
	if err != nil {
		return src, fmt.Errorf("policy: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case e.IsDir() || !e.Type().IsRegular():
		case strings.HasSuffix(name, ".cedar"):
			text, err := readLimited(filepath.Join(dir, name), pdp.MaxPolicyBytes)
			if err != nil {
				return src, err
			}
			src.Policies = append(src.Policies, pdp.File{Name: name, Text: text})
		case name == SchemaFile:
			if src.Schema, err = readLimited(filepath.Join(dir, name), MaxSchemaBytes); err != nil {
				return src, err
			}
		}
	}
	tests, err := os.ReadDir(filepath.Join(dir, "tests"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return src, fmt.Errorf("policy: %w", err)
	}
	for _, e := range tests {
		if e.Type().IsRegular() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			text, err := readLimited(filepath.Join(dir, "tests", e.Name()), MaxTestBytes)
			if err != nil {
				return src, err
			}
			src.Tests = append(src.Tests, TestFile{Name: e.Name(), Text: text})
		}
	}
	if len(src.Policies) == 0 {
		return src, fmt.Errorf("policy: %s holds no *.cedar file", dir)
	}
	return src, nil
}

func readLimited(name string, limit int) (string, error) {
	st, err := os.Stat(name)
	if err != nil {
		return "", fmt.Errorf("policy: %w", err)
	}
	if st.Size() > int64(limit) {
		return "", fmt.Errorf("policy: %s is larger than %d bytes", name, limit)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("policy: %w", err)
	}
	return string(b), nil
}

// CaseResult is the outcome of one test case.
type CaseResult struct {
	File     string       `json:"file"`
	Name     string       `json:"name"`
	Passed   bool         `json:"passed"`
	Expect   string       `json:"expect"`
	Decision pdp.Decision `json:"decision"`
	Problem  string       `json:"problem,omitempty"` // why it failed
}

// Report is what Check found.
type Report struct {
	Policies int          `json:"policies"`
	Errors   []string     `json:"errors,omitempty"` // syntax and schema errors
	Cases    []CaseResult `json:"cases"`
	Digest   string       `json:"digest"`
}

// OK reports whether the version may be published.
func (r *Report) OK() bool {
	if len(r.Errors) > 0 {
		return false
	}
	for _, c := range r.Cases {
		if !c.Passed {
			return false
		}
	}
	return true
}

// Failures counts failed cases.
func (r *Report) Failures() int {
	n := 0
	for _, c := range r.Cases {
		if !c.Passed {
			n++
		}
	}
	return n
}

// Summary is one line: what passed and what did not.
func (r *Report) Summary() string {
	if len(r.Errors) > 0 {
		return fmt.Sprintf("%d error(s): %s", len(r.Errors), r.Errors[0])
	}
	if n := r.Failures(); n > 0 {
		for _, c := range r.Cases {
			if !c.Passed {
				return fmt.Sprintf("%d of %d test case(s) failed; first: %s: %s: %s", n, len(r.Cases), c.File, c.Name, c.Problem)
			}
		}
	}
	return fmt.Sprintf("%d policies, %d test case(s) passed", r.Policies, len(r.Cases))
}

// Check compiles src's policies, validates them against its schema (when
// it has one) and runs its tests. Only a malformed source (sizes, names)
// is an error; what is wrong with the policies is in the Report.
func Check(src Source) (*Report, error) {
	if err := checkShape(src); err != nil {
		return nil, err
	}
	r := &Report{Digest: pdp.Digest(src.Policies, src.Schema), Cases: []CaseResult{}}
	policies, err := pdp.Compile(src.Policies)
	if err != nil {
		r.Errors = append(r.Errors, strings.TrimPrefix(err.Error(), pdp.ErrMalformed.Error()+": "))
		return r, nil
	}
	r.Policies = len(policies)
	if strings.TrimSpace(src.Schema) != "" {
		r.Errors = append(r.Errors, validateSchema(src.Schema, policies)...)
	}
	set := pdp.NewSetFromPolicies(0, r.Digest, policies)
	for _, tf := range src.Tests {
		cases, err := ParseCases([]byte(tf.Text))
		if err != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("tests/%s: %v", tf.Name, err))
			continue
		}
		for i, c := range cases {
			res := CaseResult{File: tf.Name, Name: c.Name, Expect: c.Expect}
			if res.Name == "" {
				res.Name = fmt.Sprintf("case %d", i+1)
			}
			req, entities, err := c.Request()
			if err != nil {
				res.Problem = err.Error()
				r.Cases = append(r.Cases, res)
				continue
			}
			res.Decision = set.Decide(entities, req)
			got := "deny"
			if res.Decision.Allowed {
				got = "allow"
			}
			switch {
			case got != c.Expect:
				res.Problem = fmt.Sprintf("expected %s, got %s (%s", c.Expect, got, res.Decision.Reason)
				if len(res.Decision.Policies) > 0 {
					res.Problem += " by " + strings.Join(res.Decision.Policies, ", ")
				}
				res.Problem += ")"
			case c.Policies != nil && !sameStrings(c.Policies, res.Decision.Policies):
				res.Problem = fmt.Sprintf("decided by %v, expected %v", res.Decision.Policies, c.Policies)
			default:
				res.Passed = true
			}
			r.Cases = append(r.Cases, res)
		}
	}
	return r, nil
}

func sameStrings(a, b []string) bool {
	a, b = append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(a)
	sort.Strings(b)
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

// checkShape bounds what a push may carry.
func checkShape(src Source) error {
	if len(src.Policies) == 0 {
		return fmt.Errorf("%w: no policy file", ErrInvalid)
	}
	if err := pdp.CheckFiles(src.Policies); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(src.Schema) > MaxSchemaBytes {
		return fmt.Errorf("%w: schema larger than %d bytes", ErrInvalid, MaxSchemaBytes)
	}
	if len(src.Tests) > MaxTestFiles {
		return fmt.Errorf("%w: more than %d test files", ErrInvalid, MaxTestFiles)
	}
	total := 0
	seen := map[string]bool{}
	for _, t := range src.Tests {
		if !testNameRE.MatchString(t.Name) || seen[t.Name] {
			return fmt.Errorf("%w: test file name %q (want a unique name ending in .yaml)", ErrInvalid, clip(t.Name))
		}
		seen[t.Name] = true
		if total += len(t.Text); total > MaxTestBytes {
			return fmt.Errorf("%w: tests larger than %d bytes", ErrInvalid, MaxTestBytes)
		}
	}
	return nil
}

// validateSchema validates every policy against schema (cedar-go's
// strict validator) and returns one message per problem.
func validateSchema(text string, policies []pdp.Policy) []string {
	var s schema.Schema
	s.SetFilename(SchemaFile)
	if err := s.UnmarshalCedar([]byte(text)); err != nil {
		return []string{fmt.Sprintf("%s: %v", SchemaFile, err)}
	}
	resolved, err := s.Resolve()
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", SchemaFile, err)}
	}
	v := validate.New(resolved)
	var errs []string
	for _, p := range policies {
		if err := v.Policy(string(p.ID), (*xast.Policy)(p.Policy.AST())); err != nil {
			pos := p.Policy.Position()
			errs = append(errs, fmt.Sprintf("%s:%d:%d: policy %s violates the schema: %v", pos.Filename, pos.Line, pos.Column, p.ID, err))
		}
	}
	return errs
}

// Explanation is a decision with the policies behind it located.
type Explanation struct {
	pdp.Decision
	Decided []Located `json:"decided"`
}

// Located is a policy and where it is.
type Located struct {
	ID     string `json:"id"`
	Effect string `json:"effect"`
	File   string `json:"file"`
	Line   int    `json:"line"`
	Text   string `json:"text"`
}

// Explain decides c over set and locates the policies that decided.
func Explain(set *pdp.Set, c Case) (*Explanation, error) {
	req, entities, err := c.Request()
	if err != nil {
		return nil, err
	}
	d := set.Decide(entities, req)
	ex := &Explanation{Decision: d, Decided: []Located{}}
	for _, id := range d.Policies {
		p, ok := set.Index().Get(cedar.PolicyID(id))
		if !ok {
			continue
		}
		pos := p.Position()
		effect := "permit"
		if p.Effect() == cedar.Forbid {
			effect = "forbid"
		}
		ex.Decided = append(ex.Decided, Located{ID: id, Effect: effect, File: pos.Filename, Line: pos.Line, Text: string(p.MarshalCedar())})
	}
	return ex, nil
}

func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
