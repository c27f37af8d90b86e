// Package pep is ward's policy enforcement point for HTTP services: a
// middleware that maps each request to a (resource, action) pair with a
// route table, asks the guard whether the calling service may perform it,
// and refuses the request otherwise. It closes the loop between a
// provider's manifest (what it provides), the dependency catalogue (who
// was granted what) and the signed access list the guard enforces.
//
// What a provider writes, behind identity's mTLS:
//
//	g, err := guard.NewForSource(ctx, src, src.AuthorityURL(), guard.Config{Manifest: manifest})
//	go g.Run(ctx)
//	p, err := pep.New(pep.Config{
//		Guard: g,
//		Routes: []pep.Route{
//			{Pattern: "GET /orders/{id}", Resource: "orders", Action: "read"},
//			{Pattern: "POST /orders", Resource: "orders", Action: "write"},
//		},
//	})
//	srv := &http.Server{Handler: src.Middleware(p.Middleware(mux)),
//		TLSConfig: src.ServerTLSConfig(identity.AuthorizeMemberOf(src.ID().TrustDomain()))}
//
// # Decisions
//
// Every request is refused unless all of these hold: it comes from an
// authenticated peer (401 "unauthenticated" otherwise), a route matches
// it (403 "no-route"), and the guard allows the peer the route's action on
// its resource (403 "access-denied"). While the guard holds no verified
// access list the answer is 503 "no-access-list" with Retry-After; any
// other guard failure is 503 "guard-unavailable": the PEP fails closed.
// Refusals are RFC 9457 problem documents
// (https://ward.dev/problems/<slug>) and are logged at Info with the
// caller, resource, action and reason, never with headers or bodies.
// An allowed request reaches the next handler with its Decision in the
// context (DecisionFromContext).
//
// # Passports
//
// With Config.Passports (a *passport.Verifier), an allowed request's
// Ward-Passport header is verified too: a present but invalid, expired or
// duplicated passport is 401 "invalid-passport"; a missing one is 401
// "passport-required" when Config.RequirePassport is set and allowed
// otherwise. The verified claims reach the handler through
// passport.FromContext, and passport.Client forwards them downstream.
// The caller is still the mTLS peer; the passport says on whose behalf.
//
// # Policies
//
// With Config.PDP (a *pdp.PDP), a request the access list allowed is
// then decided by the service's Cedar policies, after the passport check:
// the principal is the passport's user (or the calling service without
// one), the action and resource are the route's, and the resource ID is
// the route's {id} wildcard (Route.IDParam names another). A denial is 403
// "policy-denied"; while the PDP does not know its domain's policy yet,
// 503 "policy-unavailable". The decision record — policy version and the
// policies that decided — is in Decision.Policy and in the audit event.
//
// Routes use net/http ServeMux patterns and ServeMux precedence, so the
// table reads like the service's own mux. A request the mux would
// redirect (a path that is not clean, or a subtree pattern requested
// without its trailing slash) matches no route and is refused.
package pep
