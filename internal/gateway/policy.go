package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/wardsec/ward/passport"
	"github.com/wardsec/ward/pdp"
)

// correlationKey carries a request's correlation ID to the Policy hook.
type correlationKey struct{}

// CorrelationID returns the correlation ID of the request being
// authorized (inside a Policy hook).
func CorrelationID(ctx context.Context) string {
	s, _ := ctx.Value(correlationKey{}).(string)
	return s
}

// Decider decides with Cedar policies (*pdp.PDP for the "edge" domain).
type Decider interface {
	Decide(ctx context.Context, in *pdp.Input) (pdp.Decision, error)
}

// EdgePolicy is the Policy hook that runs the "edge" policy domain as the
// route-level check. Its entity model is ward's (see pdp.Request), with:
// principal User::"<subject>" of the external credential (roles as
// parents, tenant as an attribute), action Action::"<HTTP method>"
// (Action::"GET"), resource Route::"<route name>" with attributes host,
// path and service, and context auth_method, scopes, tenant and
// correlation_id (caller is empty: there is no mTLS peer at the edge).
// Until the edge domain has a version, everything that passed the scopes
// is admitted.
type EdgePolicy struct {
	PDP Decider
}

// ErrPolicyDenied wraps an edge policy refusal.
var ErrPolicyDenied = errors.New("denied by the edge policy")

// Authorize implements Policy.
func (e EdgePolicy) Authorize(ctx context.Context, rt *Route, p *Principal, r *http.Request) error {
	in := pdp.Input{
		Passport: &passport.Claims{Subject: p.Subject, Issuer: p.Issuer, Tenant: p.Tenant, Scope: p.Scope, Roles: p.Roles,
			ClientID: p.ClientID, AuthMethod: p.Method},
		Resource: "Route", ResourceID: rt.Name, Action: r.Method,
		ResourceAttrs: map[string]string{"host": r.Host, "path": r.URL.Path, "service": rt.Service},
		CorrelationID: CorrelationID(ctx),
	}
	d, err := e.PDP.Decide(ctx, &in)
	switch {
	case errors.Is(err, pdp.ErrNotReady):
		return fmt.Errorf("%w: the edge policy is not loaded yet", ErrPolicyDenied)
	case err != nil:
		return fmt.Errorf("%w: %v", ErrPolicyDenied, err)
	case !d.Allowed:
		return fmt.Errorf("%w (version %d)", ErrPolicyDenied, d.Version)
	}
	return nil
}
