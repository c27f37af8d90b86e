package pdp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/passport"
)

// Entity types of ward's model.
const (
	TypeUser    = types.EntityType("User")
	TypeRole    = types.EntityType("Role")
	TypeService = types.EntityType("Service")
	TypeAction  = types.EntityType("Action")
)

// Limits on the entities of one decision.
const (
	// MaxEntities bounds the entities of one request (model and providers).
	MaxEntities = 1000
	// MaxDepth bounds a parent chain.
	MaxDepth = 32
)

// ErrEntities: the entities of a request are too many, too deep, cyclic,
// or an entity provider failed. The request is denied.
var ErrEntities = errors.New("pdp: request entities refused")

// Input is what the PEP knows about a request; Request turns it into a
// Cedar request in ward's entity model.
type Input struct {
	// Caller is the mTLS peer.
	Caller spiffeid.ID
	// Passport is the verified passport, nil when the service calls on
	// its own behalf.
	Passport *passport.Claims
	// Resource and Action are the route's (manifest names).
	Resource, Action string
	// ResourceID identifies the resource instance (the route's wildcard,
	// else the request path).
	ResourceID string
	// ResourceAttrs become the resource entity's attributes.
	ResourceAttrs map[string]string
	// CorrelationID of the request.
	CorrelationID string
}

// ResourceType is the Cedar entity type of a manifest resource name: the
// name with "-" and "." replaced by "_" ("order-items" → order_items).
func ResourceType(resource string) types.EntityType {
	if !strings.ContainsAny(resource, "-.") {
		return types.EntityType(resource)
	}
	return types.EntityType(typeReplacer.Replace(resource))
}

var typeReplacer = strings.NewReplacer("-", "_", ".", "_")

// Request builds the Cedar request and entities of in:
//
//   - principal: User::"<sub>" from the passport, with its roles as parents
//     Role::"<name>" and attributes tenant, auth_method and issuer; without
//     a passport, Service::"<caller SPIFFE ID>".
//   - action: Action::"<action>".
//   - resource: <resource type>::"<resource id>", attributes ResourceAttrs.
//   - context: caller (SPIFFE ID), scopes (set of strings), tenant,
//     auth_method ("svid" without a passport) and correlation_id; every
//     key is always present.
func Request(in *Input) (cedar.Request, types.EntityMap) {
	var u *principal
	if in.Passport != nil {
		u = newPrincipal(in.Passport)
	}
	req, es := request(in, u)
	m := make(types.EntityMap, 2)
	m[es.p.UID], m[es.r.UID] = es.p, es.r
	return req, m
}

// modelEntities are the two entities of the model (principal, resource),
// found by comparison instead of hashing, and the providers' entities.
type modelEntities struct {
	p, r  types.Entity
	extra types.EntityMap
}

// Get implements types.EntityGetter; provided entities win.
func (m *modelEntities) Get(uid types.EntityUID) (types.Entity, bool) {
	if m.extra != nil {
		if e, ok := m.extra[uid]; ok {
			return e, true
		}
	}
	switch uid {
	case m.p.UID:
		return m.p, true
	case m.r.UID:
		return m.r, true
	}
	return types.Entity{}, false
}

// all returns every entity as a map (for CheckEntities).
func (m *modelEntities) all() types.EntityMap {
	out := make(types.EntityMap, len(m.extra)+2)
	out[m.p.UID], out[m.r.UID] = m.p, m.r
	for k, v := range m.extra {
		out[k] = v
	}
	return out
}

// principal is the part of a request that depends only on the passport:
// the user entity and the scopes set, built once per verified passport.
type principal struct {
	uid            types.EntityUID
	entity         types.Entity
	scopes         types.Set
	tenant, method types.String
	// ctx is the last context record built for this passport: a
	// passport that makes several calls from the same caller (a request
	// fanning out) reuses it.
	ctx atomic.Pointer[cachedContext]
}

type cachedContext struct {
	caller, cid string
	rec         types.Record
}

func newPrincipal(c *passport.Claims) *principal {
	u := &principal{uid: types.NewEntityUID(TypeUser, types.String(c.Subject)), tenant: types.String(c.Tenant), method: types.String(c.AuthMethod)}
	parents := make([]types.EntityUID, 0, len(c.Roles))
	for _, r := range c.Roles {
		parents = append(parents, types.NewEntityUID(TypeRole, types.String(r)))
	}
	var scopes []types.Value
	for _, s := range strings.Fields(c.Scope) {
		scopes = append(scopes, types.String(s))
	}
	u.scopes = types.NewSet(scopes...)
	u.entity = types.Entity{UID: u.uid, Parents: types.NewEntityUIDSet(parents...),
		Attributes: types.NewRecord(types.RecordMap{"tenant": u.tenant, "auth_method": u.method, "issuer": types.String(c.Issuer)})}
	return u
}

var emptySet = types.NewSet()

func request(in *Input, u *principal) (cedar.Request, *modelEntities) {
	entities := &modelEntities{}
	caller := types.String(in.Caller.String())
	scopes, tenant, method := emptySet, types.String(""), types.String("svid")
	var p types.EntityUID
	if u != nil {
		p, scopes, tenant, method = u.uid, u.scopes, u.tenant, u.method
		entities.p = u.entity
	} else {
		p = types.NewEntityUID(TypeService, caller)
		entities.p = types.Entity{UID: p}
	}
	ctx := contextRecord(u, string(caller), in.CorrelationID, scopes, tenant, method)
	resource := types.NewEntityUID(ResourceType(in.Resource), types.String(in.ResourceID))
	var attrs types.Record
	if len(in.ResourceAttrs) > 0 {
		m := make(types.RecordMap, len(in.ResourceAttrs))
		for k, v := range in.ResourceAttrs {
			m[types.String(k)] = types.String(v)
		}
		attrs = types.NewRecord(m)
	}
	entities.r = types.Entity{UID: resource, Attributes: attrs}
	req := cedar.Request{
		Principal: p,
		Action:    types.NewEntityUID(TypeAction, types.String(in.Action)),
		Resource:  resource,
		Context:   ctx,
	}
	return req, entities
}

// contextRecord builds the request context, reusing u's last one when
// the caller and correlation ID are the same.
func contextRecord(u *principal, caller, cid string, scopes types.Set, tenant, method types.String) types.Record {
	if u != nil {
		if c := u.ctx.Load(); c != nil && c.caller == caller && c.cid == cid {
			return c.rec
		}
	}
	rec := types.NewRecord(types.RecordMap{
		"caller":         types.String(caller),
		"scopes":         scopes,
		"tenant":         tenant,
		"auth_method":    method,
		"correlation_id": types.String(cid),
	})
	if u != nil {
		u.ctx.Store(&cachedContext{caller: caller, cid: cid, rec: rec})
	}
	return rec
}

// principalCache keeps the principal of recently seen passports, keyed by
// the verified claims (passport.Verifier hands out the same *Claims for a
// cached passport). Bounded: cleared when full.
type principalCache struct {
	mu sync.RWMutex
	m  map[*passport.Claims]*principal
}

const maxPrincipals = 4096

func (c *principalCache) get(claims *passport.Claims) *principal {
	c.mu.RLock()
	u, ok := c.m[claims]
	c.mu.RUnlock()
	if ok {
		return u
	}
	u = newPrincipal(claims)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxPrincipals {
		c.m = make(map[*passport.Claims]*principal, 64)
	}
	c.m[claims] = u
	c.mu.Unlock()
	return u
}

// EntityProvider supplies entities a service knows about a request (its
// own attribute sources: an order's owner, a document's folder). It runs
// within Config.ProviderTimeout; an error or a timeout denies the request.
// Entities it returns replace the model's entity of the same UID.
type EntityProvider interface {
	Entities(ctx context.Context, in *Input) ([]types.Entity, error)
}

// EntityProviderFunc adapts a function to EntityProvider.
type EntityProviderFunc func(ctx context.Context, in *Input) ([]types.Entity, error)

// Entities calls f.
func (f EntityProviderFunc) Entities(ctx context.Context, in *Input) ([]types.Entity, error) {
	return f(ctx, in)
}

// CheckEntities refuses entity sets Cedar should not be asked to walk:
// more than MaxEntities, a parent chain deeper than MaxDepth, or a cycle.
func CheckEntities(entities types.EntityMap) error {
	if len(entities) > MaxEntities {
		return fmt.Errorf("%w: %d entities, at most %d", ErrEntities, len(entities), MaxEntities)
	}
	// Depth-first walk with colours: grey on the stack, black done.
	const grey, black = 1, 2
	state := make(map[types.EntityUID]int8, len(entities))
	var walk func(uid types.EntityUID, depth int) error
	walk = func(uid types.EntityUID, depth int) error {
		switch state[uid] {
		case grey:
			return fmt.Errorf("%w: entity %s is its own ancestor", ErrEntities, clip(uid.String()))
		case black:
			return nil
		}
		if depth > MaxDepth {
			return fmt.Errorf("%w: parent chain deeper than %d", ErrEntities, MaxDepth)
		}
		e, ok := entities[uid]
		if !ok {
			return nil
		}
		state[uid] = grey
		for p := range e.Parents.All() {
			if err := walk(p, depth+1); err != nil {
				return err
			}
		}
		state[uid] = black
		return nil
	}
	for uid, e := range entities {
		if e.Parents.Len() == 0 {
			continue
		}
		if err := walk(uid, 0); err != nil {
			return err
		}
	}
	return nil
}
