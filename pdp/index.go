package pdp

import (
	"iter"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// Policy is one named Cedar policy of a set.
type Policy struct {
	ID     cedar.PolicyID
	Policy *cedar.Policy
}

// Index is a policy set indexed by scope, so that a decision evaluates
// only the policies whose scope can match the request. Its decisions
// equal cedar.Authorize over the same policies (the reasons and errors may
// come in another order; cedar's own order is a map's). It is immutable
// and safe for concurrent use.
//
// Every policy is filed under one necessary condition of its scope, chosen
// in this order: principal == E, resource == E, principal in E, resource
// in E, action == E, action in E, principal is T, resource is T; a policy
// whose scope constrains none of these (or only with an action set) is
// evaluated for every request. A request gathers the lists its principal,
// action and resource satisfy: its own UIDs, their ancestors in the
// entities (walked exactly as Cedar's `in` walks them) and their types.
type Index struct {
	policies []Policy
	filters  []scopeFilter // by policy
	always   []int32
	pEq, pIn map[types.EntityUID][]int32
	rEq, rIn map[types.EntityUID][]int32
	aEq, aIn map[types.EntityUID][]int32
	pIs, rIs map[types.EntityType][]int32
}

// NewIndex indexes policies. The slice is kept; do not modify it after.
func NewIndex(policies []Policy) *Index {
	ix := &Index{policies: policies,
		pEq: map[types.EntityUID][]int32{}, pIn: map[types.EntityUID][]int32{},
		rEq: map[types.EntityUID][]int32{}, rIn: map[types.EntityUID][]int32{},
		aEq: map[types.EntityUID][]int32{}, aIn: map[types.EntityUID][]int32{},
		pIs: map[types.EntityType][]int32{}, rIs: map[types.EntityType][]int32{},
	}
	ix.filters = make([]scopeFilter, len(policies))
	for i, p := range policies {
		a := (*xast.Policy)(p.Policy.AST())
		ix.file(int32(i), a)
		ix.filters[i] = newScopeFilter(a)
	}
	return ix
}

// scopeFilter holds the scope conditions of a policy that need no entity
// lookup (==, is): a candidate that fails one cannot match, and skipping
// it loses no error (a scope never errors).
type scopeFilter struct {
	pEq, aEq, rEq          types.EntityUID
	pIs, rIs               types.EntityType
	hasPEq, hasAEq, hasREq bool
	hasPIs, hasRIs         bool
}

func newScopeFilter(p *xast.Policy) scopeFilter {
	var f scopeFilter
	switch s := p.Principal.(type) {
	case xast.ScopeTypeEq:
		f.pEq, f.hasPEq = s.Entity, true
	case xast.ScopeTypeIs:
		f.pIs, f.hasPIs = s.Type, true
	case xast.ScopeTypeIsIn:
		f.pIs, f.hasPIs = s.Type, true
	}
	if s, ok := p.Action.(xast.ScopeTypeEq); ok {
		f.aEq, f.hasAEq = s.Entity, true
	}
	switch s := p.Resource.(type) {
	case xast.ScopeTypeEq:
		f.rEq, f.hasREq = s.Entity, true
	case xast.ScopeTypeIs:
		f.rIs, f.hasRIs = s.Type, true
	case xast.ScopeTypeIsIn:
		f.rIs, f.hasRIs = s.Type, true
	}
	return f
}

// admits reports whether req passes the filter.
func (f *scopeFilter) admits(req *cedar.Request) bool {
	return (!f.hasAEq || f.aEq == req.Action) &&
		(!f.hasRIs || f.rIs == req.Resource.Type) &&
		(!f.hasREq || f.rEq == req.Resource) &&
		(!f.hasPIs || f.pIs == req.Principal.Type) &&
		(!f.hasPEq || f.pEq == req.Principal)
}

// file puts policy i under its most selective scope condition.
func (ix *Index) file(i int32, p *xast.Policy) {
	if s, ok := p.Principal.(xast.ScopeTypeEq); ok {
		ix.pEq[s.Entity] = append(ix.pEq[s.Entity], i)
		return
	}
	if s, ok := p.Resource.(xast.ScopeTypeEq); ok {
		ix.rEq[s.Entity] = append(ix.rEq[s.Entity], i)
		return
	}
	switch s := p.Principal.(type) {
	case xast.ScopeTypeIn:
		ix.pIn[s.Entity] = append(ix.pIn[s.Entity], i)
		return
	case xast.ScopeTypeIsIn:
		ix.pIn[s.Entity] = append(ix.pIn[s.Entity], i)
		return
	}
	switch s := p.Resource.(type) {
	case xast.ScopeTypeIn:
		ix.rIn[s.Entity] = append(ix.rIn[s.Entity], i)
		return
	case xast.ScopeTypeIsIn:
		ix.rIn[s.Entity] = append(ix.rIn[s.Entity], i)
		return
	}
	switch s := p.Action.(type) {
	case xast.ScopeTypeEq:
		ix.aEq[s.Entity] = append(ix.aEq[s.Entity], i)
		return
	case xast.ScopeTypeIn:
		ix.aIn[s.Entity] = append(ix.aIn[s.Entity], i)
		return
	}
	if s, ok := p.Principal.(xast.ScopeTypeIs); ok {
		ix.pIs[s.Type] = append(ix.pIs[s.Type], i)
		return
	}
	if s, ok := p.Resource.(xast.ScopeTypeIs); ok {
		ix.rIs[s.Type] = append(ix.rIs[s.Type], i)
		return
	}
	ix.always = append(ix.always, i)
}

// Len is the number of policies.
func (ix *Index) Len() int { return len(ix.policies) }

// All iterates over every policy (a cedar.PolicyIterator).
func (ix *Index) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, p := range ix.policies {
			if !yield(p.ID, p.Policy) {
				return
			}
		}
	}
}

// Get returns a policy by ID.
func (ix *Index) Get(id cedar.PolicyID) (*cedar.Policy, bool) {
	for _, p := range ix.policies {
		if p.ID == id {
			return p.Policy, true
		}
	}
	return nil, false
}

// candidates is the subset of an index a request can match.
type candidates struct {
	ix  *Index
	idx []int32
}

func (c *candidates) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, i := range c.idx {
			p := c.ix.policies[i]
			if !yield(p.ID, p.Policy) {
				return
			}
		}
	}
}

// Authorize decides req over the policies whose scope can match it.
func (ix *Index) Authorize(entities types.EntityGetter, req cedar.Request) (cedar.Decision, cedar.Diagnostic) {
	if entities == nil {
		entities = types.EntityMap(nil)
	}
	var buf [32]int32
	c := candidates{ix: ix, idx: buf[:0]}
	c.idx = append(c.idx, ix.always...)
	c.idx = append(c.idx, ix.pEq[req.Principal]...)
	c.idx = append(c.idx, ix.rEq[req.Resource]...)
	c.idx = append(c.idx, ix.aEq[req.Action]...)
	c.idx = append(c.idx, ix.pIs[req.Principal.Type]...)
	c.idx = append(c.idx, ix.rIs[req.Resource.Type]...)
	if len(ix.pIn) > 0 {
		c.idx = inBuckets(c.idx, ix.pIn, entities, req.Principal)
	}
	if len(ix.rIn) > 0 {
		c.idx = inBuckets(c.idx, ix.rIn, entities, req.Resource)
	}
	if len(ix.aIn) > 0 {
		c.idx = inBuckets(c.idx, ix.aIn, entities, req.Action)
	}
	kept := c.idx[:0]
	for _, i := range c.idx {
		if ix.filters[i].admits(&req) {
			kept = append(kept, i)
		}
	}
	c.idx = kept
	return cedar.Authorize(&c, entities, req)
}

// inBuckets appends the lists of m filed under uid and under each of its
// ancestors.
func inBuckets(dst []int32, m map[types.EntityUID][]int32, entities types.EntityGetter, uid types.EntityUID) []int32 {
	dst = append(dst, m[uid]...)
	ancestors(entities, uid, func(a types.EntityUID) {
		dst = append(dst, m[a]...)
	})
	return dst
}

// ancestors calls fn once for every ancestor of uid: the parents of uid
// and, transitively, of every parent present in entities. It walks the
// hierarchy as Cedar's `in` operator does, so "uid in A" holds exactly
// when uid == A or fn is called with A.
func ancestors(entities types.EntityGetter, uid types.EntityUID, fn func(types.EntityUID)) {
	e, ok := entities.Get(uid)
	if !ok || e.Parents.Len() == 0 {
		return
	}
	// A principal has a handful of ancestors (its roles): a linear set
	// in an array until it has many.
	var small [8]types.EntityUID
	n := 0
	var seen map[types.EntityUID]struct{}
	var todo []types.EntityUID
	added := func(k types.EntityUID) bool {
		if seen != nil {
			if _, dup := seen[k]; dup {
				return false
			}
			seen[k] = struct{}{}
			return true
		}
		for _, x := range small[:n] {
			if x == k {
				return false
			}
		}
		if n < len(small) {
			small[n] = k
			n++
			return true
		}
		seen = make(map[types.EntityUID]struct{}, 2*len(small))
		for _, x := range small {
			seen[x] = struct{}{}
		}
		seen[k] = struct{}{}
		return true
	}
	visit := func(parents types.EntityUIDSet) {
		for k := range parents.All() {
			if k == uid || !added(k) {
				continue
			}
			fn(k)
			if p, ok := entities.Get(k); ok && p.Parents.Len() > 0 {
				todo = append(todo, k)
			}
		}
	}
	visit(e.Parents)
	for len(todo) > 0 {
		k := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if p, ok := entities.Get(k); ok {
			visit(p.Parents)
		}
	}
}
