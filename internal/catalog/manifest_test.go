package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const webManifest = `service: web
version: 1.4.0
auto_approve_l1: false      # provider opt-in
provides:
  - resource: pages
    actions: [read]
consumes:
  - service: whoami
    resource: whoami
    actions: [read]
`

func TestParseManifestGood(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Manifest
	}{
		{
			name: "spec example",
			in:   webManifest,
			want: Manifest{
				Service: "web", Version: "1.4.0",
				Provides: []Provided{{Resource: "pages", Actions: []string{"read"}}},
				Consumes: []Consumed{{Service: "whoami", Resource: "whoami", Actions: []string{"read"}}},
			},
		},
		{
			name: "minimal",
			in:   "service: a\nversion: \"1\"\n",
			want: Manifest{Service: "a", Version: "1", Provides: []Provided{}, Consumes: []Consumed{}},
		},
		{
			name: "numeric version taken as written",
			in:   "service: a\nversion: 1.10\n",
			want: Manifest{Service: "a", Version: "1.10", Provides: []Provided{}, Consumes: []Consumed{}},
		},
		{
			name: "integer version",
			in:   "service: a\nversion: 2\n",
			want: Manifest{Service: "a", Version: "2", Provides: []Provided{}, Consumes: []Consumed{}},
		},
		{
			name: "null lists",
			in:   "service: a\nversion: v1\nprovides:\nconsumes: ~\n",
			want: Manifest{Service: "a", Version: "v1", Provides: []Provided{}, Consumes: []Consumed{}},
		},
		{
			name: "auto approve",
			in:   "service: a\nversion: v1\nauto_approve_l1: true\n",
			want: Manifest{Service: "a", Version: "v1", AutoApproveL1: true, Provides: []Provided{}, Consumes: []Consumed{}},
		},
		{
			name: "JSON",
			in:   `{"service":"a","version":"1.0.0-rc.1+build_5","provides":[{"resource":"orders","actions":["write","read"]}],"consumes":[]}`,
			want: Manifest{Service: "a", Version: "1.0.0-rc.1+build_5",
				Provides: []Provided{{Resource: "orders", Actions: []string{"read", "write"}}}, Consumes: []Consumed{}},
		},
		{
			name: "sorted and deduplicated",
			in: `service: shop
version: "3"
provides:
  - {resource: orders, actions: [write, read, read, delete]}
  - {resource: carts.v2, actions: [read]}
consumes:
  - {service: users, resource: profile, actions: [read]}
  - {service: payments, resource: refunds, actions: [create, create]}
  - {service: payments, resource: charges, actions: [create, read]}
`,
			want: Manifest{Service: "shop", Version: "3",
				Provides: []Provided{
					{Resource: "carts.v2", Actions: []string{"read"}},
					{Resource: "orders", Actions: []string{"delete", "read", "write"}},
				},
				Consumes: []Consumed{
					{Service: "payments", Resource: "charges", Actions: []string{"create", "read"}},
					{Service: "payments", Resource: "refunds", Actions: []string{"create"}},
					{Service: "users", Resource: "profile", Actions: []string{"read"}},
				},
			},
		},
		{
			name: "explicit document markers",
			in:   "---\nservice: a\nversion: v1\n...\n",
			want: Manifest{Service: "a", Version: "v1", Provides: []Provided{}, Consumes: []Consumed{}},
		},
		{
			name: "longest names",
			in: fmt.Sprintf("service: %s\nversion: %s\nprovides: [{resource: %s, actions: [%s]}]\n",
				"a"+strings.Repeat("b", 62), "1"+strings.Repeat("x", 63), "r"+strings.Repeat("s", 63), "a"+strings.Repeat("c", 31)),
			want: Manifest{Service: "a" + strings.Repeat("b", 62), Version: "1" + strings.Repeat("x", 63),
				Provides: []Provided{{Resource: "r" + strings.Repeat("s", 63), Actions: []string{"a" + strings.Repeat("c", 31)}}},
				Consumes: []Consumed{}},
		},
		{
			name: "same resource of two services",
			in:   "service: a\nversion: v1\nconsumes: [{service: b, resource: x, actions: [r]}, {service: c, resource: x, actions: [r]}]\n",
			want: Manifest{Service: "a", Version: "v1", Provides: []Provided{}, Consumes: []Consumed{
				{Service: "b", Resource: "x", Actions: []string{"r"}},
				{Service: "c", Resource: "x", Actions: []string{"r"}},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseManifest([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseManifest: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %#v\nwant %#v", got, tt.want)
			}
			back, err := DecodeStored(got.Canonical())
			if err != nil {
				t.Fatalf("DecodeStored(Canonical): %v", err)
			}
			if !reflect.DeepEqual(back, got) {
				t.Fatalf("round trip: got %#v, want %#v", back, got)
			}
		})
	}
}

func TestParseManifestBad(t *testing.T) {
	entries := func(key string, n int, entry func(i int) string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "service: a\nversion: v1\n%s:\n", key)
		for i := range n {
			fmt.Fprintf(&b, "  - %s\n", entry(i))
		}
		return b.String()
	}
	actions := func(n int) string {
		as := make([]string, n)
		for i := range as {
			as[i] = fmt.Sprintf("a%d", i)
		}
		return "[" + strings.Join(as, ", ") + "]"
	}
	tests := []struct {
		name string
		in   string
		want string // substring of the error
	}{
		{"empty", "", "manifest is empty"},
		{"only a comment", "# nothing\n", "manifest is empty"},
		{"null document", "~\n", "manifest is empty"},
		{"too large", "service: a\nversion: v1\n#" + strings.Repeat("x", MaxManifestSize), "more than 65536"},
		{"not a mapping", "- a\n", "expected a mapping, got a sequence"},
		{"scalar document", "hello\n", "expected a mapping, got a string"},
		{"syntax error", "service: [a\n", "line"},
		{"tab indentation", "service: a\n\tversion: v1\n", "found a tab character"},
		{"trailing garbage after JSON", `{"service":"a","version":"v1"} x`, "did not find expected"},
		{"two documents", "service: a\nversion: v1\n---\nservice: b\nversion: v1\n", "one YAML document, found another"},
		{"second empty document", "service: a\nversion: v1\n---\n", "one YAML document"},
		{"unknown field", "service: a\nversion: v1\nowner: bob\n", `line 3: unknown field "owner"`},
		{"unknown field case", "Service: a\nversion: v1\n", `unknown field "Service"`},
		{"unknown field in provides", "service: a\nversion: v1\nprovides: [{resource: r, actions: [x], verbs: [y]}]\n", `provides[0]: line 3: unknown field "verbs"`},
		{"unknown field in consumes", "service: a\nversion: v1\nconsumes: [{service: b, resource: r, actions: [x], why: z}]\n", `consumes[0]: line 3: unknown field "why"`},
		{"long unknown field is shortened", "service: a\nversion: v1\n" + strings.Repeat("k", 500) + ": 1\n", `"` + strings.Repeat("k", 64) + `"…`},
		{"duplicate key", "service: a\nservice: b\nversion: v1\n", `field "service" is already set on line 1`},
		{"duplicate key in entry", "service: a\nversion: v1\nprovides: [{resource: r, resource: s, actions: [x]}]\n", `provides[0]: line 3: field "resource" is already set`},
		{"anchor", "service: &s a\nversion: v1\n", "service: line 1: anchors are not allowed"},
		{"alias", "service: a\nversion: v1\nprovides:\n  - resource: r\n    actions: &x [read]\nconsumes:\n  - {service: b, resource: r, actions: *x}\n", "anchors are not allowed"},
		{"anchor in a key", "&k service: a\nversion: v1\n", "line 1: anchors are not allowed"},
		{"undefined alias", "service: *a\nversion: v1\n", "unknown anchor"},
		{"merge key", "service: a\nversion: v1\n<<: {auto_approve_l1: true}\n", "merge keys (<<) are not allowed"},
		{"tag", "service: !!str a\nversion: v1\n", "service: line 1: tags are not allowed"},
		{"custom tag", "service: a\nversion: !v v1\n", "version: line 2: tags are not allowed"},
		{"binary tag", "service: a\nversion: !!binary djE=\n", "tags are not allowed"},
		{"tagged document", "!!map {service: a, version: v1}\n", "tags are not allowed"},
		{"key is a sequence", "? [a]\n: b\n", "keys must be strings, got a sequence"},
		{"service missing", "version: v1\n", "service: required"},
		{"service null", "service:\nversion: v1\n", "service: required"},
		{"service upper case", "service: Web\nversion: v1\n", `service: "Web" is not a valid service name (lower-case letters, digits and -, starting with a letter)`},
		{"service leading digit", "service: 1web\nversion: v1\n", `"1web" is not a valid service name`},
		{"service underscore", "service: my_web\nversion: v1\n", `"my_web" is not a valid service name`},
		{"service too long", "service: a" + strings.Repeat("b", 63) + "\nversion: v1\n", "too long for a service name (at most 63 characters)"},
		{"service boolean", "service: true\nversion: v1\n", "service: line 1: expected a string, got a boolean"},
		{"service mapping", "service: {a: b}\nversion: v1\n", "service: line 1: expected a string, got a mapping"},
		{"version missing", "service: a\n", "version: required"},
		{"version leading dot", "service: a\nversion: .1\n", `version: ".1" is not a valid version`},
		{"version space", "service: a\nversion: 1 2\n", `"1 2" is not a valid version`},
		{"version too long", "service: a\nversion: 1" + strings.Repeat("0", 64) + "\n", "too long for a version (at most 64 characters)"},
		{"version newline", "service: a\nversion: \"1\\n\"\n", `"1\n" is not a valid version`},
		{"auto approve not bool", "service: a\nversion: v1\nauto_approve_l1: yes\n", "auto_approve_l1: line 3: expected true or false, got a string"},
		{"auto approve null", "service: a\nversion: v1\nauto_approve_l1:\n", "expected true or false, got null"},
		{"provides mapping", "service: a\nversion: v1\nprovides: {resource: r}\n", "provides: line 3: expected a sequence, got a mapping"},
		{"provides entry scalar", "service: a\nversion: v1\nprovides: [r]\n", "provides[0]: line 3: expected a mapping, got a string"},
		{"provides resource missing", "service: a\nversion: v1\nprovides: [{actions: [read]}]\n", "provides[0].resource: required"},
		{"provides resource invalid", "service: a\nversion: v1\nprovides: [{resource: Orders, actions: [read]}]\n", `provides[0].resource: "Orders" is not a valid resource (lower-case letters, digits, ., _ and -, starting with a letter)`},
		{"provides resource too long", "service: a\nversion: v1\nprovides: [{resource: r" + strings.Repeat("s", 64) + ", actions: [read]}]\n", "too long for a resource (at most 64 characters)"},
		{"provides actions missing", "service: a\nversion: v1\nprovides: [{resource: r}]\n", "provides[0].actions: at least one action is required"},
		{"provides actions empty", "service: a\nversion: v1\nprovides: [{resource: r, actions: []}]\n", "provides[0].actions: at least one action is required"},
		{"provides actions scalar", "service: a\nversion: v1\nprovides: [{resource: r, actions: read}]\n", "provides[0].actions: line 3: expected a sequence, got a string"},
		{"provides action nested", "service: a\nversion: v1\nprovides: [{resource: r, actions: [[read]]}]\n", "provides[0].actions[0]: line 3: expected a string, got a sequence"},
		{"provides action empty", "service: a\nversion: v1\nprovides: [{resource: r, actions: [\"\"]}]\n", "provides[0].actions[0]: required"},
		{"provides action null", "service: a\nversion: v1\nprovides: [{resource: r, actions: [read, ~]}]\n", "provides[0].actions[1]: required"},
		{"duplicate provided resource", "service: a\nversion: v1\nprovides: [{resource: r, actions: [x]}, {resource: s, actions: [x]}, {resource: r, actions: [y]}]\n", `provides[2].resource: "r" is already provided by provides[0]`},
		{"too many provides", entries("provides", MaxProvides+1, func(i int) string { return fmt.Sprintf("{resource: r%d, actions: [x]}", i) }), "provides: 257 entries, at most 256"},
		{"too many actions", "service: a\nversion: v1\nprovides: [{resource: r, actions: " + actions(MaxActions+1) + "}]\n", "provides[0].actions: 65 actions, at most 64"},
		{"too many consumes", entries("consumes", MaxConsumes+1, func(i int) string { return fmt.Sprintf("{service: b, resource: r%d, actions: [x]}", i) }), "consumes: 257 entries, at most 256"},
		{"consumes action upper case", "service: a\nversion: v1\nconsumes:\n  - {service: b, resource: r, actions: [read]}\n  - {service: c, resource: r, actions: [Read]}\n",
			`catalog: invalid manifest: consumes[1].actions[0]: "Read" is not a valid action (lower-case letters, digits, _ and -, starting with a letter)`},
		{"consumes action too long", "service: a\nversion: v1\nconsumes: [{service: b, resource: r, actions: [a" + strings.Repeat("b", 32) + "]}]\n", "too long for a action"},
		{"consumes service missing", "service: a\nversion: v1\nconsumes: [{resource: r, actions: [x]}]\n", "consumes[0].service: required"},
		{"consumes service invalid", "service: a\nversion: v1\nconsumes: [{service: B, resource: r, actions: [x]}]\n", `consumes[0].service: "B" is not a valid service name`},
		{"consumes resource invalid", "service: a\nversion: v1\nconsumes: [{service: b, resource: -r, actions: [x]}]\n", `consumes[0].resource: "-r" is not a valid resource`},
		{"consumes actions missing", "service: a\nversion: v1\nconsumes: [{service: b, resource: r}]\n", "consumes[0].actions: at least one action is required"},
		{"consumes itself", "service: a\nversion: v1\nconsumes: [{service: a, resource: r, actions: [x]}]\n", `consumes[0].service: a service does not consume itself ("a")`},
		{"duplicate consumption", "service: a\nversion: v1\nconsumes: [{service: b, resource: r, actions: [x]}, {service: b, resource: r, actions: [y]}]\n", `consumes[1]: "r" of "b" is already consumed by consumes[0]`},
		{"invalid UTF-8", "service: a\nversion: v1\n# \xff\n", "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tt.in))
			if err == nil {
				t.Fatalf("accepted: %#v", m)
			}
			if !errors.Is(err, ErrInvalidManifest) {
				t.Errorf("error does not wrap ErrInvalidManifest: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "catalog: invalid manifest: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.want)
			}
			if !reflect.DeepEqual(m, Manifest{}) {
				t.Errorf("a manifest came with the error: %#v", m)
			}
		})
	}
}

// Aliases are rejected even where no anchor was seen first (the anchor is
// always met first in document order, so only a node check reaches this).
func TestPlainRejectsAlias(t *testing.T) {
	err := plain(&yaml.Node{Kind: yaml.AliasNode, Line: 7}, "provides")
	if !errors.Is(err, ErrInvalidManifest) || !strings.Contains(err.Error(), "provides: line 7: aliases are not allowed") {
		t.Fatalf("plain(alias) = %v", err)
	}
}

func TestParseManifestLimitsExactly(t *testing.T) {
	var b strings.Builder
	b.WriteString("service: a\nversion: v1\nprovides:\n")
	as := make([]string, MaxActions)
	for i := range as {
		as[i] = fmt.Sprintf("a%d", i)
	}
	for i := range MaxProvides {
		fmt.Fprintf(&b, "  - {resource: r%d, actions: [%s]}\n", i, strings.Join(as[:1], ", "))
	}
	b.WriteString("consumes:\n")
	for i := range MaxConsumes {
		fmt.Fprintf(&b, "  - {service: b, resource: r%d, actions: [%s]}\n", i, strings.Join(as[:1], ", "))
	}
	b.WriteString("  # padding\n")
	m, err := ParseManifest([]byte(b.String()))
	if err != nil {
		t.Fatalf("ParseManifest at the entry limits: %v", err)
	}
	if len(m.Provides) != MaxProvides || len(m.Consumes) != MaxConsumes {
		t.Fatalf("got %d provides, %d consumes", len(m.Provides), len(m.Consumes))
	}

	m, err = ParseManifest([]byte("service: a\nversion: v1\nprovides: [{resource: r, actions: [" + strings.Join(as, ", ") + "]}]\n"))
	if err != nil {
		t.Fatalf("ParseManifest with %d actions: %v", MaxActions, err)
	}
	if got := len(m.Provides[0].Actions); got != MaxActions {
		t.Fatalf("got %d actions", got)
	}

	exact := []byte("service: a\nversion: v1\n#")
	exact = append(exact, bytes.Repeat([]byte("x"), MaxManifestSize-len(exact))...)
	if _, err := ParseManifest(exact); err != nil {
		t.Fatalf("ParseManifest of exactly MaxManifestSize bytes: %v", err)
	}
}

// The largest canonical form the limits allow must fit DecodeStored.
func TestCanonicalOfLargestManifest(t *testing.T) {
	long := func(prefix string, n, i int) string {
		s := fmt.Sprintf("%s%d", prefix, i)
		return s + strings.Repeat("x", n-len(s))
	}
	m := Manifest{Service: long("s", 63, 0), Version: long("v", 64, 0)}
	actions := make([]string, MaxActions)
	for i := range actions {
		actions[i] = long("a", 32, i)
	}
	for i := range MaxProvides {
		m.Provides = append(m.Provides, Provided{Resource: long("r", 64, i), Actions: actions})
	}
	for i := range MaxConsumes {
		m.Consumes = append(m.Consumes, Consumed{Service: long("c", 63, i), Resource: long("r", 64, i), Actions: actions})
	}
	c := m.Canonical()
	if len(c) > maxStoredSize {
		t.Fatalf("largest canonical manifest is %d bytes, more than maxStoredSize %d", len(c), maxStoredSize)
	}
	if _, err := DecodeStored(c); err != nil {
		t.Fatalf("DecodeStored: %v", err)
	}
	t.Logf("largest canonical manifest: %d bytes (bound %d)", len(c), maxStoredSize)
}

func TestCanonical(t *testing.T) {
	m, err := ParseManifest([]byte(webManifest))
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"service":"web","version":"1.4.0","provides":[{"resource":"pages","actions":["read"]}],"consumes":[{"service":"whoami","resource":"whoami","actions":["read"]}]}`
	if got := string(m.Canonical()); got != want {
		t.Fatalf("Canonical:\ngot  %s\nwant %s", got, want)
	}
	m.AutoApproveL1 = true
	if got := string(m.Canonical()); !strings.Contains(got, `"auto_approve_l1":true`) {
		t.Fatalf("Canonical with auto_approve_l1: %s", got)
	}
	if got := string((Manifest{Service: "a", Version: "1"}).Canonical()); got != `{"service":"a","version":"1","provides":[],"consumes":[]}` {
		t.Fatalf("Canonical of nil lists: %s", got)
	}
	// The same manifest written differently has the same canonical form.
	other, err := ParseManifest([]byte(`{"consumes":[{"actions":["read","read"],"resource":"whoami","service":"whoami"}],"provides":[{"resource":"pages","actions":["read"]}],"version":"1.4.0","service":"web","auto_approve_l1":false}`))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(other.Canonical(), []byte(want)) {
		t.Fatalf("Canonical of the JSON spelling: %s", other.Canonical())
	}
}

func TestDecodeStored(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // error substring; "" means success
	}{
		{"canonical", `{"service":"web","version":"1","provides":[],"consumes":[]}`, ""},
		{"unsorted is normalized", `{"service":"web","version":"1","provides":[{"resource":"b","actions":["y","x"]},{"resource":"a","actions":["x"]}],"consumes":null}`, ""},
		{"unknown field", `{"service":"web","version":"1","owner":"x"}`, `unknown field "owner"`},
		{"trailing data", `{"service":"web","version":"1"} {}`, "data after the JSON object"},
		{"not JSON", `service: web`, "stored manifest"},
		{"wrong type", `{"service":"web","version":1}`, "stored manifest"},
		{"invalid value", `{"service":"Web","version":"1"}`, `service: "Web" is not a valid service name`},
		{"self consumption", `{"service":"web","version":"1","consumes":[{"service":"web","resource":"r","actions":["x"]}]}`, "does not consume itself"},
		{"too large", `{"service":"web","version":"1"}` + strings.Repeat(" ", maxStoredSize), "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeStored([]byte(tt.in))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("DecodeStored: %v", err)
				}
				if m.Provides == nil || m.Consumes == nil {
					t.Fatalf("nil lists: %#v", m)
				}
				for i := 1; i < len(m.Provides); i++ {
					if m.Provides[i-1].Resource >= m.Provides[i].Resource {
						t.Fatalf("provides not sorted: %#v", m.Provides)
					}
				}
				return
			}
			if !errors.Is(err, ErrInvalidManifest) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want ErrInvalidManifest containing %q", err, tt.want)
			}
		})
	}
}

func TestProvidesAction(t *testing.T) {
	m, err := ParseManifest([]byte("service: a\nversion: v1\nprovides: [{resource: orders, actions: [write, read]}, {resource: carts, actions: [read]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name             string
		resource, action string
		want             bool
	}{
		{"provided", "orders", "read", true},
		{"other action provided", "orders", "write", true},
		{"action not provided", "orders", "delete", false},
		{"action of another resource", "carts", "write", false},
		{"resource not provided", "users", "read", false},
		{"empty", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := m.ProvidesAction(tt.resource, tt.action); got != tt.want {
				t.Fatalf("ProvidesAction(%q, %q) = %v", tt.resource, tt.action, got)
			}
		})
	}

	if got := m.ProvidedActions("orders"); !reflect.DeepEqual(got, []string{"read", "write"}) {
		t.Fatalf("ProvidedActions(orders) = %v", got)
	}
	if got := m.ProvidedActions("users"); got != nil {
		t.Fatalf("ProvidedActions(users) = %#v, want nil", got)
	}
	got := m.ProvidedActions("orders")
	got[0] = "changed"
	if m.Provides[1].Actions[0] != "read" {
		t.Fatal("ProvidedActions returned the manifest's own slice")
	}
}
