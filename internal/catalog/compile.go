package catalog

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/internal/store"
)

var errEmptyTrustDomain = errors.New("catalog: empty trust domain")

// ServiceID returns the SPIFFE ID of service name in td:
// spiffe://<td>/svc/<name>.
func ServiceID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	return serviceID(td, name)
}

// ComponentPrefix marks a consumer that is a ward component, not a
// service: "ward/gateway" is spiffe://<td>/ward/gateway (the grant a
// gateway route records).
const ComponentPrefix = "ward/"

// ConsumerID is the SPIFFE ID of a grant's consumer: a service name, or
// ward/<component>.
func ConsumerID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	if comp, ok := strings.CutPrefix(name, ComponentPrefix); ok {
		if err := serviceName.check("", comp); err != nil {
			return spiffeid.ID{}, fmt.Errorf("catalog: component %s: not a valid name", quote(comp))
		}
		return spiffeid.FromSegments(td, "ward", comp)
	}
	return serviceID(td, name)
}

func serviceID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, errEmptyTrustDomain
	}
	if err := serviceName.check("", name); err != nil {
		return spiffeid.ID{}, fmt.Errorf("catalog: service %s: not a valid service name", quote(name))
	}
	return spiffeid.FromSegments(td, "svc", name)
}

// AuthorityID returns the SPIFFE ID of the authority of td, the issuer of
// access lists: spiffe://<td>/ward/authority.
func AuthorityID(td spiffeid.TrustDomain) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, errEmptyTrustDomain
	}
	return spiffeid.FromSegments(td, "ward", "authority")
}

// Compile builds the access list of provider from st, its state read in
// one snapshot. Only grants (approved requests of provider; other rows are
// ignored) count, and of each only the actions the provider's latest
// declaration still provides; a grant with no such action left is dropped,
// and a nil st.Declaration provides nothing. Consumers in revoked are left
// out. Grants of one consumer are merged: the union of actions per
// resource. Consumers are ordered by ID, their grants by resource, actions
// sorted and unique.
//
// The list carries st.Version as its version (a guard accepts only
// versions of at least 1), Subject spiffe://<td>/svc/<provider>, Issuer
// spiffe://<td>/ward/authority and issuedAt in Unix seconds. Compile fails
// on an invalid trust domain or name, a declaration of another service or
// one DecodeStored rejects.
func Compile(td spiffeid.TrustDomain, provider string, st store.AccessListState, revoked map[string]bool, issuedAt time.Time) (guard.AccessList, error) {
	subject, err := ServiceID(td, provider)
	if err != nil {
		return guard.AccessList{}, err
	}
	issuer, err := AuthorityID(td)
	if err != nil {
		return guard.AccessList{}, err
	}
	var decl Manifest
	if d := st.Declaration; d != nil {
		if d.Service != provider {
			return guard.AccessList{}, fmt.Errorf("catalog: compile %s: declaration %d is of service %s", provider, d.Seq, quote(d.Service))
		}
		decl, err = DecodeStored(d.Manifest)
		if err != nil {
			return guard.AccessList{}, fmt.Errorf("catalog: compile %s: declaration %d: %w", provider, d.Seq, err)
		}
		if decl.Service != provider {
			return guard.AccessList{}, fmt.Errorf("catalog: compile %s: declaration %d names service %s", provider, d.Seq, quote(decl.Service))
		}
	}
	provided := make(map[string]map[string]bool, len(decl.Provides))
	for _, p := range decl.Provides {
		set := make(map[string]bool, len(p.Actions))
		for _, a := range p.Actions {
			set[a] = true
		}
		provided[p.Resource] = set
	}

	// consumer name → resource → actions
	merged := make(map[string]map[string]map[string]bool)
	for _, g := range st.Grants {
		if g.State != store.RequestApproved || g.Provider != provider || revoked[g.Consumer] {
			continue
		}
		actions := provided[g.Resource]
		for _, a := range g.Actions {
			if !actions[a] {
				continue
			}
			resources := merged[g.Consumer]
			if resources == nil {
				resources = make(map[string]map[string]bool)
				merged[g.Consumer] = resources
			}
			set := resources[g.Resource]
			if set == nil {
				set = make(map[string]bool, len(g.Actions))
				resources[g.Resource] = set
			}
			set[a] = true
		}
	}

	consumers := make([]guard.Consumer, 0, len(merged))
	for name, resources := range merged {
		id, err := ConsumerID(td, name)
		if err != nil {
			return guard.AccessList{}, fmt.Errorf("catalog: compile %s: consumer: %w", provider, err)
		}
		grants := make([]guard.Grant, 0, len(resources))
		for resource, set := range resources {
			grants = append(grants, guard.Grant{Resource: resource, Actions: sortedKeys(set)})
		}
		slices.SortFunc(grants, func(a, b guard.Grant) int { return strings.Compare(a.Resource, b.Resource) })
		consumers = append(consumers, guard.Consumer{ID: id.String(), Grants: grants})
	}
	slices.SortFunc(consumers, func(a, b guard.Consumer) int { return strings.Compare(a.ID, b.ID) })

	return guard.AccessList{
		Issuer:    issuer.String(),
		Subject:   subject.String(),
		Version:   st.Version,
		IssuedAt:  issuedAt.Unix(),
		Consumers: consumers,
	}, nil
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
