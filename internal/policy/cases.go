package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"gopkg.in/yaml.v3"

	"github.com/wardsec/ward/pdp"
)

// Case is one policy test case, and the input of `ward policy check`.
type Case struct {
	Name      string         `yaml:"name" json:"name,omitempty"`
	Principal string         `yaml:"principal" json:"principal"`
	Action    string         `yaml:"action" json:"action"`
	Resource  string         `yaml:"resource" json:"resource"`
	Context   map[string]any `yaml:"context" json:"context,omitempty"`
	Entities  []EntityDoc    `yaml:"entities" json:"entities,omitempty"`
	// Expect is "allow" or "deny" (test cases only).
	Expect string `yaml:"expect" json:"expect,omitempty"`
	// Policies, if set, are the IDs that must have decided.
	Policies []string `yaml:"policies" json:"policies,omitempty"`
}

// EntityDoc is an entity as written in tests and entity files: UIDs in
// Cedar syntax (User::"alice"); attribute values in Cedar's JSON form
// (entity references as {"__entity": {"type": ..., "id": ...}}).
type EntityDoc struct {
	UID     string         `yaml:"uid" json:"uid"`
	Parents []string       `yaml:"parents" json:"parents,omitempty"`
	Attrs   map[string]any `yaml:"attrs" json:"attrs,omitempty"`
}

// ParseCases parses a tests/*.yaml document: {cases: [...]}.
func ParseCases(doc []byte) ([]Case, error) {
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	var f struct {
		Cases []Case `yaml:"cases"`
	}
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(f.Cases) > MaxCases {
		return nil, fmt.Errorf("more than %d cases", MaxCases)
	}
	for i, c := range f.Cases {
		if c.Expect != "allow" && c.Expect != "deny" {
			return nil, fmt.Errorf("case %d (%s): expect must be allow or deny", i+1, clip(c.Name))
		}
	}
	return f.Cases, nil
}

// ParseEntities parses an entities file (YAML or JSON): a list of
// EntityDoc.
func ParseEntities(doc []byte) ([]EntityDoc, error) {
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	var out []EntityDoc
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("policy: entities: %v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return out, nil
}

// ParseUID parses an entity UID in Cedar syntax: Type::"id".
func ParseUID(s string) (types.EntityUID, error) {
	var u types.EntityUID
	if err := u.UnmarshalCedar([]byte(strings.TrimSpace(s))); err != nil {
		return u, fmt.Errorf("%q is not an entity UID like User::\"alice\"", clip(s))
	}
	return u, nil
}

// Request turns c into a Cedar request and entities.
func (c Case) Request() (cedar.Request, types.EntityMap, error) {
	var req cedar.Request
	var err error
	if req.Principal, err = ParseUID(c.Principal); err != nil {
		return req, nil, fmt.Errorf("principal: %v", err)
	}
	if req.Action, err = ParseUID(c.Action); err != nil {
		return req, nil, fmt.Errorf("action: %v", err)
	}
	if req.Resource, err = ParseUID(c.Resource); err != nil {
		return req, nil, fmt.Errorf("resource: %v", err)
	}
	if req.Context, err = record(c.Context); err != nil {
		return req, nil, fmt.Errorf("context: %v", err)
	}
	if len(c.Entities) > pdp.MaxEntities {
		return req, nil, fmt.Errorf("more than %d entities", pdp.MaxEntities)
	}
	entities := types.EntityMap{}
	for i, e := range c.Entities {
		uid, err := ParseUID(e.UID)
		if err != nil {
			return req, nil, fmt.Errorf("entities[%d].uid: %v", i, err)
		}
		var parents []types.EntityUID
		for j, p := range e.Parents {
			pu, err := ParseUID(p)
			if err != nil {
				return req, nil, fmt.Errorf("entities[%d].parents[%d]: %v", i, j, err)
			}
			parents = append(parents, pu)
		}
		attrs, err := record(e.Attrs)
		if err != nil {
			return req, nil, fmt.Errorf("entities[%d].attrs: %v", i, err)
		}
		entities[uid] = types.Entity{UID: uid, Parents: types.NewEntityUIDSet(parents...), Attributes: attrs}
	}
	if err := pdp.CheckEntities(entities); err != nil {
		return req, nil, err
	}
	return req, entities, nil
}

// record converts a decoded YAML/JSON map to a Cedar record.
func record(m map[string]any) (types.Record, error) {
	if len(m) == 0 {
		return types.NewRecord(nil), nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return types.Record{}, err
	}
	var r types.Record
	if err := r.UnmarshalJSON(b); err != nil {
		return types.Record{}, err
	}
	return r, nil
}
