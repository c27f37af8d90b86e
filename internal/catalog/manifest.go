package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of a manifest.
const (
	// MaxManifestSize bounds a manifest document in bytes.
	MaxManifestSize = 64 << 10
	// MaxProvides bounds the provides entries of a manifest.
	MaxProvides = 256
	// MaxConsumes bounds the consumes entries of a manifest.
	MaxConsumes = 256
	// MaxActions bounds the actions of one provides or consumes entry.
	MaxActions = 64

	// maxStoredSize bounds the canonical JSON DecodeStored accepts. It is
	// well above the largest canonical form the limits above allow (about
	// 1.3 MB), so every manifest ParseManifest accepts can be read back.
	maxStoredSize = 32 * MaxManifestSize
)

// ErrInvalidManifest is wrapped by every error of ParseManifest and
// DecodeStored.
var ErrInvalidManifest = errors.New("catalog: invalid manifest")

// Manifest is a service's declaration of what it provides and what it
// consumes. Manifests from ParseManifest and DecodeStored are valid and
// normalized: actions sorted and unique, Provides sorted by resource,
// Consumes by service then resource, both slices non-nil.
type Manifest struct {
	Service string `json:"service" yaml:"service"`
	Version string `json:"version" yaml:"version"`
	// AutoApproveL1 is the provider's opt-in: L1 consumers of this service
	// are approved without review while it is L1 itself.
	AutoApproveL1 bool       `json:"auto_approve_l1,omitempty" yaml:"auto_approve_l1"`
	Provides      []Provided `json:"provides" yaml:"provides"`
	Consumes      []Consumed `json:"consumes" yaml:"consumes"`
}

// Provided is a resource the service serves and the actions it supports.
type Provided struct {
	Resource string   `json:"resource" yaml:"resource"`
	Actions  []string `json:"actions" yaml:"actions"`
}

// Consumed is a resource of another service the service calls, and the
// actions it needs.
type Consumed struct {
	Service  string   `json:"service" yaml:"service"`
	Resource string   `json:"resource" yaml:"resource"`
	Actions  []string `json:"actions" yaml:"actions"`
}

var (
	serviceRE  = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	versionRE  = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$`)
	resourceRE = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,63}$`)
	actionRE   = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
)

// A name kind: its pattern, length limit and the words explaining both.
type nameKind struct {
	what  string
	re    *regexp.Regexp
	max   int
	rules string
}

var (
	serviceName  = nameKind{"service name", serviceRE, 63, "lower-case letters, digits and -, starting with a letter"}
	versionName  = nameKind{"version", versionRE, 64, "letters, digits, ., +, _ and -, starting with a letter or digit"}
	resourceName = nameKind{"resource", resourceRE, 64, "lower-case letters, digits, ., _ and -, starting with a letter"}
	actionName   = nameKind{"action", actionRE, 32, "lower-case letters, digits, _ and -, starting with a letter"}
)

func (k nameKind) check(path, s string) error {
	switch {
	case s == "":
		return invalidf(path, "required")
	case len(s) > k.max:
		return invalidf(path, "%s is too long for a %s (at most %d characters)", quote(s), k.what, k.max)
	case !k.re.MatchString(s):
		return invalidf(path, "%s is not a valid %s (%s)", quote(s), k.what, k.rules)
	}
	return nil
}

// invalidf returns an error wrapping ErrInvalidManifest that names path.
func invalidf(path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if path == "" {
		return fmt.Errorf("%w: %s", ErrInvalidManifest, msg)
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalidManifest, path, msg)
}

// quote quotes an untrusted string for an error message, shortened so a
// message stays readable whatever the input.
func quote(s string) string {
	const limit = 64
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}

// ParseManifest parses a manifest from YAML (or JSON, which is YAML)
// strictly and validates it. Unknown fields, duplicate keys, several
// documents, trailing garbage, anchors, aliases, merge keys and explicit
// tags are errors, and so is a document larger than MaxManifestSize.
//
// Names are checked against these patterns: service
// ^[a-z][a-z0-9-]{0,62}$, version ^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$
// (required), resource ^[a-z][a-z0-9._-]{0,63}$, action
// ^[a-z][a-z0-9_-]{0,31}$. A manifest has at most MaxProvides provides and
// MaxConsumes consumes entries, each with 1 to MaxActions actions; a
// resource is provided once, a (service, resource) consumed once, and a
// service does not consume itself.
//
// The result is normalized (see Manifest). Errors wrap ErrInvalidManifest
// and name the field, e.g.
//
//	catalog: invalid manifest: consumes[1].actions[0]: "Read" is not a valid action (lower-case letters, digits, _ and -, starting with a letter)
func ParseManifest(data []byte) (Manifest, error) {
	if len(data) > MaxManifestSize {
		return Manifest{}, invalidf("", "manifest is %d bytes, more than %d", len(data), MaxManifestSize)
	}
	root, err := parseYAML(data)
	if err != nil {
		return Manifest{}, err
	}
	m, err := manifestFromNode(root)
	if err != nil {
		return Manifest{}, err
	}
	if err := m.normalize(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// DecodeStored reads a manifest back from its canonical JSON (Canonical,
// as kept in store.Declaration.Manifest) and validates it again, as
// ParseManifest does.
func DecodeStored(b []byte) (Manifest, error) {
	if len(b) > maxStoredSize {
		return Manifest{}, invalidf("", "stored manifest is %d bytes, more than %d", len(b), maxStoredSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, invalidf("", "stored manifest: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Manifest{}, invalidf("", "stored manifest: data after the JSON object")
	}
	if err := m.normalize(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Canonical returns m as deterministic JSON: fields in a fixed order, no
// insignificant white space. Two normalized manifests are equal exactly
// when their canonical forms are.
func (m Manifest) Canonical() []byte {
	if m.Provides == nil {
		m.Provides = []Provided{}
	}
	if m.Consumes == nil {
		m.Consumes = []Consumed{}
	}
	b, err := json.Marshal(m)
	if err != nil {
		// Strings, bools and slices of them always marshal.
		panic("catalog: marshal manifest: " + err.Error())
	}
	return b
}

// ProvidesAction reports whether m provides action on resource.
func (m Manifest) ProvidesAction(resource, action string) bool {
	for _, p := range m.Provides {
		if p.Resource == resource {
			return slices.Contains(p.Actions, action)
		}
	}
	return false
}

// ProvidedActions returns a copy of the actions m provides on resource, nil
// if it does not provide resource.
func (m Manifest) ProvidedActions(resource string) []string {
	for _, p := range m.Provides {
		if p.Resource == resource {
			return slices.Clone(p.Actions)
		}
	}
	return nil
}

// normalize validates m and puts it in normal form: actions sorted and
// unique, entries sorted, nil slices made empty. Paths in errors use the
// entries' indices as given.
func (m *Manifest) normalize() error {
	if err := serviceName.check("service", m.Service); err != nil {
		return err
	}
	if err := versionName.check("version", m.Version); err != nil {
		return err
	}
	if n := len(m.Provides); n > MaxProvides {
		return invalidf("provides", "%d entries, at most %d", n, MaxProvides)
	}
	if n := len(m.Consumes); n > MaxConsumes {
		return invalidf("consumes", "%d entries, at most %d", n, MaxConsumes)
	}

	provided := make(map[string]int, len(m.Provides))
	for i := range m.Provides {
		p := &m.Provides[i]
		path := fmt.Sprintf("provides[%d]", i)
		if err := resourceName.check(path+".resource", p.Resource); err != nil {
			return err
		}
		if j, dup := provided[p.Resource]; dup {
			return invalidf(path+".resource", "%s is already provided by provides[%d]", quote(p.Resource), j)
		}
		provided[p.Resource] = i
		actions, err := normalizeActions(path+".actions", p.Actions)
		if err != nil {
			return err
		}
		p.Actions = actions
	}

	type key struct{ service, resource string }
	consumed := make(map[key]int, len(m.Consumes))
	for i := range m.Consumes {
		c := &m.Consumes[i]
		path := fmt.Sprintf("consumes[%d]", i)
		if err := serviceName.check(path+".service", c.Service); err != nil {
			return err
		}
		if c.Service == m.Service {
			return invalidf(path+".service", "a service does not consume itself (%s)", quote(c.Service))
		}
		if err := resourceName.check(path+".resource", c.Resource); err != nil {
			return err
		}
		k := key{c.Service, c.Resource}
		if j, dup := consumed[k]; dup {
			return invalidf(path, "%s of %s is already consumed by consumes[%d]", quote(c.Resource), quote(c.Service), j)
		}
		consumed[k] = i
		actions, err := normalizeActions(path+".actions", c.Actions)
		if err != nil {
			return err
		}
		c.Actions = actions
	}

	if m.Provides == nil {
		m.Provides = []Provided{}
	}
	if m.Consumes == nil {
		m.Consumes = []Consumed{}
	}
	slices.SortFunc(m.Provides, func(a, b Provided) int { return strings.Compare(a.Resource, b.Resource) })
	slices.SortFunc(m.Consumes, func(a, b Consumed) int {
		if c := strings.Compare(a.Service, b.Service); c != 0 {
			return c
		}
		return strings.Compare(a.Resource, b.Resource)
	})
	return nil
}

// normalizeActions validates actions and returns them sorted and unique,
// in a new slice.
func normalizeActions(path string, actions []string) ([]string, error) {
	switch n := len(actions); {
	case n == 0:
		return nil, invalidf(path, "at least one action is required")
	case n > MaxActions:
		return nil, invalidf(path, "%d actions, at most %d", n, MaxActions)
	}
	for i, a := range actions {
		if err := actionName.check(fmt.Sprintf("%s[%d]", path, i), a); err != nil {
			return nil, err
		}
	}
	out := slices.Clone(actions)
	slices.Sort(out)
	return slices.Compact(out), nil
}
