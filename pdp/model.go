package pdp

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
	return types.EntityType(strings.NewReplacer("-", "_", ".", "_").Replace(resource))
}

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
	entities := make(types.EntityMap, 3)
	caller := in.Caller.String()
	scopes := []types.Value{}
	tenant, method := "", "svid"
	var principal types.EntityUID
	if c := in.Passport; c != nil {
		principal = types.NewEntityUID(TypeUser, types.String(c.Subject))
		parents := make([]types.EntityUID, 0, len(c.Roles))
		for _, r := range c.Roles {
			parents = append(parents, types.NewEntityUID(TypeRole, types.String(r)))
		}
		for _, s := range strings.Fields(c.Scope) {
			scopes = append(scopes, types.String(s))
		}
		tenant, method = c.Tenant, c.AuthMethod
		entities[principal] = types.Entity{UID: principal, Parents: types.NewEntityUIDSet(parents...),
			Attributes: types.NewRecord(types.RecordMap{
				"tenant": types.String(c.Tenant), "auth_method": types.String(c.AuthMethod), "issuer": types.String(c.Issuer)})}
	} else {
		principal = types.NewEntityUID(TypeService, types.String(caller))
		entities[principal] = types.Entity{UID: principal}
	}
	resource := types.NewEntityUID(ResourceType(in.Resource), types.String(in.ResourceID))
	attrs := make(types.RecordMap, len(in.ResourceAttrs))
	for k, v := range in.ResourceAttrs {
		attrs[types.String(k)] = types.String(v)
	}
	entities[resource] = types.Entity{UID: resource, Attributes: types.NewRecord(attrs)}
	req := cedar.Request{
		Principal: principal,
		Action:    types.NewEntityUID(TypeAction, types.String(in.Action)),
		Resource:  resource,
		Context: types.NewRecord(types.RecordMap{
			"caller":         types.String(caller),
			"scopes":         types.NewSet(scopes...),
			"tenant":         types.String(tenant),
			"auth_method":    types.String(method),
			"correlation_id": types.String(in.CorrelationID),
		}),
	}
	return req, entities
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
