package pdp

import (
	"fmt"
	"sort"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
)

// Reasons of a Decision.
const (
	ReasonPermit      = "permit"       // a permit policy matched and no forbid did
	ReasonForbid      = "forbid"       // a forbid policy matched
	ReasonNoPermit    = "no-permit"    // no policy matched: Cedar's default deny
	ReasonPolicyError = "policy-error" // a policy failed to evaluate: denied (fail closed)
	ReasonNoPolicy    = "no-policy"    // the domain has no version: access lists alone decide
	ReasonEntities    = "entities"     // the request's entities were refused (ErrEntities)
)

// Decision is a PDP's answer for one request.
type Decision struct {
	Allowed bool `json:"allowed"`
	// Enforced is false when the domain has never had a version: the
	// request was allowed by the access list alone.
	Enforced bool   `json:"enforced"`
	Reason   string `json:"reason"`
	// Version is the policy version that decided (0 when not enforced).
	Version int64 `json:"version,omitempty"`
	// Policies are the IDs of the policies that decided: the matching
	// forbids of a denial, the matching permits of an allow.
	Policies []string `json:"policies,omitempty"`
	// Errors are the evaluation errors, "<policy id>: <message>".
	Errors []string `json:"errors,omitempty"`
}

// Set is one compiled policy version. It is immutable and safe for
// concurrent use.
type Set struct {
	Version int64
	Digest  string
	ix      *Index
}

// NewSet compiles a version's policies and indexes them.
func NewSet(c Content) (*Set, error) {
	policies, err := Compile(c.Policies)
	if err != nil {
		return nil, fmt.Errorf("version %d: %w", c.Version, err)
	}
	return &Set{Version: c.Version, Digest: c.Digest, ix: NewIndex(policies)}, nil
}

// Index returns the set's policy index.
func (s *Set) Index() *Index { return s.ix }

// Decide evaluates req with entities. An evaluation error denies even
// when a permit matched: a policy that cannot be evaluated is not trusted
// to have allowed.
func (s *Set) Decide(entities types.EntityGetter, req cedar.Request) Decision {
	dec, diag := s.ix.Authorize(entities, req)
	d := Decision{Enforced: true, Version: s.Version, Allowed: dec == cedar.Allow}
	for _, r := range diag.Reasons {
		d.Policies = append(d.Policies, string(r.PolicyID))
	}
	sort.Strings(d.Policies)
	for _, e := range diag.Errors {
		d.Errors = append(d.Errors, string(e.PolicyID)+": "+e.Message)
	}
	sort.Strings(d.Errors)
	switch {
	case !d.Allowed && len(d.Policies) > 0:
		d.Reason = ReasonForbid
	case len(d.Errors) > 0:
		d.Allowed, d.Reason = false, ReasonPolicyError
	case d.Allowed:
		d.Reason = ReasonPermit
	default:
		d.Reason = ReasonNoPermit
	}
	return d
}

// NewSetFromPolicies indexes already compiled policies as a version.
func NewSetFromPolicies(version int64, digest string, policies []Policy) *Set {
	return &Set{Version: version, Digest: digest, ix: NewIndex(policies)}
}
