package pep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/passport"
	"github.com/wardsec/ward/pdp"
)

// Errors callers branch on (errors.Is).
var (
	// ErrInvalidConfig: New was given a Config it cannot enforce (a
	// missing field, an invalid or conflicting route).
	ErrInvalidConfig = errors.New("pep: invalid config")
	// ErrNoPeer: the request carries no authenticated peer identity.
	ErrNoPeer = errors.New("pep: request has no authenticated peer")
)

// Reasons of a Decision.
const (
	ReasonGranted           = "granted"            // the guard allowed the request
	ReasonUnknownCaller     = "unknown-caller"     // the caller is not on the access list
	ReasonActionNotAllowed  = "action-not-allowed" // the caller is on the list, not for this action
	ReasonNoAccessList      = "no-access-list"     // the guard holds no verified access list yet
	ReasonNoRoute           = "no-route"           // no route matches the request
	ReasonNoPeer            = "no-peer"            // the request has no authenticated peer
	ReasonGuardUnavailable  = "guard-unavailable"  // the guard failed otherwise; refused (fail closed)
	ReasonPolicyDenied      = "policy-denied"      // the access list allowed, the domain's Cedar policy did not
	ReasonPolicyUnavailable = "policy-unavailable" // the PDP holds no policy yet; refused (fail closed)
)

// Decider decides requests with the service's Cedar policies. *pdp.PDP
// implements it.
type Decider interface {
	Decide(ctx context.Context, in *pdp.Input) (pdp.Decision, error)
}

var _ Decider = (*pdp.PDP)(nil)

// Checker decides whether caller may perform action on resource: nil to
// allow, otherwise guard.ErrUnknownCaller, guard.ErrActionNotAllowed,
// guard.ErrNoAccessList or another error. *guard.Guard implements it.
type Checker interface {
	Check(ctx context.Context, caller spiffeid.ID, resource, action string) error
}

var _ Checker = (*guard.Guard)(nil)

// Route maps requests to the resource and action they exercise.
type Route struct {
	// Pattern is a net/http ServeMux pattern, e.g. "GET /orders/{id}"
	// ("GET" also matches HEAD; no method matches every method).
	Pattern string
	// Resource and Action name what the provider's manifest provides
	// (lower-case letters, digits and . _ -, starting with a letter).
	Resource, Action string
	// IDParam names the pattern wildcard that holds the resource's ID
	// for the PDP ("id" for "GET /orders/{id}"); "" means the wildcard
	// {id} when the pattern has one, else the request path is the ID.
	IDParam string
	// Attributes become the resource entity's attributes for the PDP
	// (strings; at most 32), e.g. {"classification": "pii"}.
	Attributes map[string]string
}

// Config configures a PEP.
type Config struct {
	// Guard decides. Required; usually a *guard.Guard.
	Guard Checker
	// Routes is the route table. Required (at least one route). Patterns
	// must be valid and must not conflict (as ServeMux defines it).
	Routes []Route
	// PeerID returns the authenticated caller of a request. nil: the ID
	// that identity's Source.Middleware put in the context, else the URI
	// SAN of r.TLS.PeerCertificates[0] (use that only behind a TLS config
	// that verified the chain, such as identity's ServerTLSConfig).
	PeerID func(r *http.Request) (spiffeid.ID, error)
	// Logger receives denials at Info. nil discards them.
	Logger *slog.Logger
	// Passports, if set, verifies the Ward-Passport header of allowed
	// requests: a present but invalid passport is refused (401
	// invalid-passport); a valid one is put in the context
	// (passport.FromContext). *passport.Verifier implements it.
	Passports PassportVerifier
	// RequirePassport refuses allowed requests without a passport (401
	// passport-required). It needs Passports.
	RequirePassport bool
	// Audit, if set, receives an authz.decision event for every request:
	// caller, user (the passport's subject), resource, action, decision,
	// reason and correlation ID (the passport's cid, else the trace ID of
	// traceparent), and with a PDP the policy version and the policies
	// that decided. An *audit.Writer implements it.
	Audit Recorder
	// PDP, if set, decides requests the access list allowed with the
	// service's Cedar policies (after the passport is verified): a denial
	// is 403 "policy-denied"; while the PDP holds no policy yet, 503
	// "policy-unavailable". *pdp.PDP implements it.
	PDP Decider
}

// Recorder records audit events (*audit.Writer).
type Recorder interface {
	Write(e audit.Event)
}

// PassportVerifier verifies a passport (*passport.Verifier).
type PassportVerifier interface {
	Verify(ctx context.Context, raw string) (*passport.Claims, error)
}

// Decision is the outcome for one request.
type Decision struct {
	Caller   spiffeid.ID // zero when Reason is ReasonNoPeer
	Resource string      // empty when no route matched
	Action   string
	Allowed  bool
	Reason   string // one of the Reason constants
	// Policy is the PDP's decision (nil without a PDP, or when the
	// access list already refused).
	Policy *pdp.Decision
}

// PEP enforces access lists on HTTP requests. Create it with New; it is
// safe for concurrent use.
type PEP struct {
	guard  Checker
	routes *http.ServeMux // handlers are *route
	peerID func(r *http.Request) (spiffeid.ID, error)
	log    *slog.Logger

	passports       PassportVerifier
	requirePassport bool
	audit           Recorder
	pdp             Decider
}

// route is a Route registered in the PEP's mux; the mux finds it, it is
// never served.
type route struct {
	Route
	idSeg  int  // path segment holding the resource ID; -1: the path is the ID
	idRest bool // the wildcard is {name...}: the rest of the path
}

func (*route) ServeHTTP(http.ResponseWriter, *http.Request) {}

// Same grammar as the manifest's resources and actions.
var (
	resourceRE = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,63}$`)
	actionRE   = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
)

// New validates cfg and builds its route table. Invalid or conflicting
// patterns, and resources or actions a manifest could not provide, are
// errors wrapping ErrInvalidConfig.
func New(cfg Config) (*PEP, error) {
	if cfg.Guard == nil {
		return nil, fmt.Errorf("%w: Config.Guard is required", ErrInvalidConfig)
	}
	if len(cfg.Routes) == 0 {
		return nil, fmt.Errorf("%w: Config.Routes is empty: every request would be refused", ErrInvalidConfig)
	}
	if cfg.RequirePassport && cfg.Passports == nil {
		return nil, fmt.Errorf("%w: Config.RequirePassport needs Config.Passports", ErrInvalidConfig)
	}
	p := &PEP{guard: cfg.Guard, routes: http.NewServeMux(), peerID: cfg.PeerID, log: cfg.Logger,
		passports: cfg.Passports, requirePassport: cfg.RequirePassport, audit: cfg.Audit, pdp: cfg.PDP}
	if p.peerID == nil {
		p.peerID = peerFromRequest
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	for i, rt := range cfg.Routes {
		if !resourceRE.MatchString(rt.Resource) {
			return nil, fmt.Errorf("%w: Routes[%d] %q: %q is not a valid resource (lower-case letters, digits, . _ and -, starting with a letter)", ErrInvalidConfig, i, rt.Pattern, rt.Resource)
		}
		if !actionRE.MatchString(rt.Action) {
			return nil, fmt.Errorf("%w: Routes[%d] %q: %q is not a valid action (lower-case letters, digits, _ and -, starting with a letter)", ErrInvalidConfig, i, rt.Pattern, rt.Action)
		}
		if len(rt.Attributes) > 32 {
			return nil, fmt.Errorf("%w: Routes[%d] %q: more than 32 attributes", ErrInvalidConfig, i, rt.Pattern)
		}
		if msg := register(http.NewServeMux(), rt); msg != "" {
			return nil, fmt.Errorf("%w: Routes[%d]: %s", ErrInvalidConfig, i, msg)
		}
		if msg := register(p.routes, rt); msg != "" {
			for j := range i {
				if register(pair(cfg.Routes[j]), rt) != "" {
					return nil, fmt.Errorf("%w: Routes[%d] %q conflicts with Routes[%d] %q (neither is more specific)", ErrInvalidConfig, i, rt.Pattern, j, cfg.Routes[j].Pattern)
				}
			}
			return nil, fmt.Errorf("%w: Routes[%d]: %s", ErrInvalidConfig, i, msg)
		}
	}
	return p, nil
}

// register adds rt to mux and returns ServeMux's complaint (it panics on
// an invalid or conflicting pattern), "" when it was accepted.
func register(mux *http.ServeMux, rt Route) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = strings.TrimPrefix(fmt.Sprint(r), "http: ")
		}
	}()
	mux.Handle(rt.Pattern, newRoute(rt))
	return ""
}

// newRoute locates rt's resource-ID wildcard in its pattern.
func newRoute(rt Route) *route {
	r := &route{Route: rt, idSeg: -1}
	path := rt.Pattern
	if i := strings.IndexByte(path, '/'); i >= 0 {
		path = path[i:]
	}
	for i, seg := range strings.Split(path, "/") {
		name, ok := strings.CutPrefix(seg, "{")
		if !ok || !strings.HasSuffix(name, "}") {
			continue
		}
		name = strings.TrimSuffix(name, "}")
		name, rest := strings.CutSuffix(name, "...")
		if name == rt.IDParam || (rt.IDParam == "" && name == "id") {
			r.idSeg, r.idRest = i, rest
		}
	}
	return r
}

// resourceID is the ID of the resource a request names.
func (rt *route) resourceID(r *http.Request) string {
	if rt.idSeg < 0 {
		return r.URL.Path
	}
	path := r.URL.Path
	for range rt.idSeg {
		i := strings.IndexByte(path, '/')
		if i < 0 {
			return ""
		}
		path = path[i+1:]
	}
	if !rt.idRest {
		if i := strings.IndexByte(path, '/'); i >= 0 {
			path = path[:i]
		}
	}
	return path
}

// pair returns a mux holding only rt (to find which route another one
// conflicts with).
func pair(rt Route) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(rt.Pattern, newRoute(rt))
	return mux
}

// peerFromRequest is the default Config.PeerID.
func peerFromRequest(r *http.Request) (spiffeid.ID, error) {
	if id, ok := identity.PeerIDFromContext(r.Context()); ok {
		return id, nil
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return spiffeid.ID{}, ErrNoPeer
	}
	id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %v", ErrNoPeer, err)
	}
	return id, nil
}

// decide returns the decision for r; the error is the guard's, or why
// there is no caller.
func (p *PEP) decide(r *http.Request) (Decision, *route, error) {
	caller, err := p.peerID(r)
	if err != nil {
		return Decision{Reason: ReasonNoPeer}, nil, err
	}
	h, _ := p.routes.Handler(r)
	rt, ok := h.(*route)
	if !ok {
		return Decision{Caller: caller, Reason: ReasonNoRoute}, nil, nil
	}
	d := Decision{Caller: caller, Resource: rt.Resource, Action: rt.Action}
	err = p.guard.Check(r.Context(), caller, rt.Resource, rt.Action)
	switch {
	case err == nil:
		d.Allowed, d.Reason = true, ReasonGranted
	case errors.Is(err, guard.ErrUnknownCaller):
		d.Reason = ReasonUnknownCaller
	case errors.Is(err, guard.ErrActionNotAllowed):
		d.Reason = ReasonActionNotAllowed
	case errors.Is(err, guard.ErrNoAccessList):
		d.Reason = ReasonNoAccessList
	default:
		d.Reason = ReasonGuardUnavailable
	}
	return d, rt, err
}

type decisionKey struct{}

// decisionContext carries a Decision; it is context.WithValue in one
// allocation instead of two.
type decisionContext struct {
	context.Context
	d Decision
}

func (c *decisionContext) Value(key any) any {
	if key == (decisionKey{}) {
		return &c.d
	}
	return c.Context.Value(key)
}

// DecisionFromContext returns the Decision that Middleware stored in the
// context of an allowed request.
func DecisionFromContext(ctx context.Context) (Decision, bool) {
	d, ok := ctx.Value(decisionKey{}).(*Decision)
	if !ok {
		return Decision{}, false
	}
	return *d, true
}

// Middleware serves a request with next only when the guard allows it;
// it answers every other request itself (see the package documentation).
func (p *PEP) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, rt, err := p.decide(r)
		if !d.Allowed {
			p.record(r, &d, nil, audit.Deny, d.Reason)
			p.deny(w, r, d, err)
			return
		}
		dc := &decisionContext{Context: r.Context(), d: d}
		ctx := context.Context(dc)
		if p.passports != nil {
			var ok bool
			if ctx, ok = p.passport(w, r, ctx); !ok {
				p.record(r, &d, nil, audit.Deny, "invalid-passport")
				return
			}
		}
		c, _ := passport.FromContext(ctx)
		if p.pdp != nil {
			if !p.policy(ctx, r, rt, dc, c) {
				p.record(r, &dc.d, c, audit.Deny, dc.d.Reason)
				p.deny(w, r, dc.d, nil)
				return
			}
		}
		p.record(r, &dc.d, c, audit.Allow, dc.d.Reason)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// policy asks the PDP about an allowed request and records its answer in
// dc; false when it refused.
func (p *PEP) policy(ctx context.Context, r *http.Request, rt *route, dc *decisionContext, c *passport.Claims) bool {
	in := pdp.Input{Caller: dc.d.Caller, Passport: c, Resource: dc.d.Resource, Action: dc.d.Action,
		ResourceID: rt.resourceID(r), ResourceAttrs: rt.Attributes, CorrelationID: correlationID(r, c)}
	pd, err := p.pdp.Decide(ctx, &in)
	dc.d.Policy = &pd
	switch {
	case errors.Is(err, pdp.ErrNotReady):
		dc.d.Allowed, dc.d.Reason = false, ReasonPolicyUnavailable
	case err != nil || !pd.Allowed:
		dc.d.Allowed, dc.d.Reason = false, ReasonPolicyDenied
	}
	return dc.d.Allowed
}

// correlationID is the passport's cid, else traceparent's trace ID.
func correlationID(r *http.Request, c *passport.Claims) string {
	if c != nil && c.CorrelationID != "" {
		return c.CorrelationID
	}
	if tp := r.Header.Get("Traceparent"); len(tp) == 55 && tp[2] == '-' {
		return tp[3:35]
	}
	return ""
}

// record writes the audit event of a decision.
func (p *PEP) record(r *http.Request, d *Decision, c *passport.Claims, decision, reason string) {
	if p.audit == nil {
		return
	}
	e := audit.Event{Kind: audit.KindDecision, Resource: d.Resource, Action: d.Action, Decision: decision, Reason: reason}
	if !d.Caller.IsZero() {
		e.Caller = d.Caller.String()
	}
	if c != nil {
		e.User, e.CredentialFP = c.Subject, c.TokenFingerprint
	}
	e.CorrelationID = correlationID(r, c)
	if pd := d.Policy; pd != nil && pd.Enforced {
		e.PolicyVersion = strconv.FormatInt(pd.Version, 10)
		e.Extra = map[string]any{"policies": pd.Policies, "policy_reason": pd.Reason}
		if len(pd.Errors) > 0 {
			e.Extra["policy_errors"] = len(pd.Errors)
		}
	}
	p.audit.Write(e)
}

// passport verifies the request's passport, if any, and adds it to ctx;
// it answers the request itself (false) when the passport is refused.
func (p *PEP) passport(w http.ResponseWriter, r *http.Request, ctx context.Context) (context.Context, bool) {
	vals := r.Header.Values(passport.Header)
	switch {
	case len(vals) == 0 && p.requirePassport:
		p.log.LogAttrs(ctx, slog.LevelInfo, "pep: request denied", slog.String("reason", "passport-required"), slog.String("method", r.Method))
		writeProblem(w, http.StatusUnauthorized, "passport-required", "Passport required",
			"this service accepts requests only with a passport from the gateway")
		return nil, false
	case len(vals) == 0:
		return ctx, true
	case len(vals) > 1:
		writeProblem(w, http.StatusUnauthorized, "invalid-passport", "Invalid passport", "the request carries more than one passport")
		return nil, false
	}
	c, err := p.passports.Verify(ctx, vals[0])
	if err != nil {
		detail := "the passport is invalid"
		if errors.Is(err, passport.ErrExpired) {
			detail = "the passport has expired"
		}
		p.log.LogAttrs(ctx, slog.LevelInfo, "pep: request denied", slog.String("reason", "invalid-passport"), slog.String("method", r.Method), slog.String("error", err.Error()))
		writeProblem(w, http.StatusUnauthorized, "invalid-passport", "Invalid passport", detail)
		return nil, false
	}
	return passport.NewContext(ctx, vals[0], c), true
}

// deny logs a refusal and answers it.
func (p *PEP) deny(w http.ResponseWriter, r *http.Request, d Decision, err error) {
	attrs := []slog.Attr{slog.String("reason", d.Reason), slog.String("method", r.Method)}
	if !d.Caller.IsZero() {
		attrs = append(attrs, slog.String("caller", d.Caller.String()))
	}
	if d.Resource != "" {
		attrs = append(attrs, slog.String("resource", d.Resource), slog.String("action", d.Action))
	}
	if pd := d.Policy; pd != nil {
		attrs = append(attrs, slog.Int64("policy_version", pd.Version), slog.String("policy_reason", pd.Reason), slog.Any("policies", pd.Policies))
	}
	if (d.Reason == ReasonNoPeer || d.Reason == ReasonGuardUnavailable) && err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	p.log.LogAttrs(r.Context(), slog.LevelInfo, "pep: request denied", attrs...)

	switch d.Reason {
	case ReasonNoPeer:
		writeProblem(w, http.StatusUnauthorized, "unauthenticated", "Caller not authenticated",
			"the request did not arrive over mutual TLS with a verified client certificate")
	case ReasonNoRoute:
		writeProblem(w, http.StatusForbidden, "no-route", "No access rule for this request",
			"no route of this service's access table matches the request method and path")
	case ReasonUnknownCaller, ReasonActionNotAllowed:
		writeProblem(w, http.StatusForbidden, "access-denied", "Access denied",
			fmt.Sprintf("%s is not granted action %q on resource %q", d.Caller, d.Action, d.Resource))
	case ReasonPolicyDenied:
		writeProblem(w, http.StatusForbidden, "policy-denied", "Denied by policy",
			fmt.Sprintf("the service's policy does not allow action %q on resource %q", d.Action, d.Resource))
	case ReasonPolicyUnavailable:
		w.Header().Set("Retry-After", "5")
		writeProblem(w, http.StatusServiceUnavailable, "policy-unavailable", "Policy not available",
			"the service holds no policy yet; retry shortly")
	case ReasonNoAccessList:
		w.Header().Set("Retry-After", "5")
		writeProblem(w, http.StatusServiceUnavailable, "no-access-list", "Access list not available",
			"the service holds no verified access list yet; retry shortly")
	default:
		writeProblem(w, http.StatusServiceUnavailable, "guard-unavailable", "Access check failed",
			"the access check could not be completed, so the request was refused")
	}
}
