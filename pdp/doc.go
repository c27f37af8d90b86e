// Package pdp is ward's embedded policy decision point: it holds the
// verified Cedar policy bundle of one policy domain (a service, or "edge"
// for the gateway), swaps in newer bundles as the authority announces
// them, and decides requests in-process, in microseconds, with no network
// call per request.
//
//	p, err := pdp.NewForSource(src, pdp.Config{CacheDir: dir + "/policy"})
//	go p.Run(ctx)
//	d, err := p.Decide(ctx, &pdp.Input{Caller: peer, Passport: claims,
//		Resource: "orders", ResourceID: "42", Action: "read"})
//
// Services rarely call it directly: pep.Config.PDP runs it after the
// access-list guard and the passport check.
//
// # Bundles
//
// A bundle is a compact JWS (typ ward-policy+jws) signed by the
// control-plane key, whose certificate chains to the trust bundle; it
// carries the domain's active version and, optionally, a shadow candidate.
// A PDP refuses forgeries, other domains' bundles and revisions older than
// the one it holds, keeps the last good bundle in Config.CacheDir for
// restarts during an authority outage, and reports the version it applied
// (POST /v1/policy/status) so that `ward policy status` shows the fleet.
//
// # Decisions
//
// Until a domain has a version, Decide allows (access lists alone
// decide); once it has one, Cedar's default deny applies. An evaluation
// error denies. A shadow version is evaluated beside the active one and
// never enforced; disagreements are counted (Stats) and logged.
//
// # Entity model
//
// Request builds every request the same way: principal User::"<sub>"
// from the passport (roles as parents Role::"<name>"; tenant, auth_method
// and issuer as attributes), or Service::"<spiffe-id>" without one; action
// Action::"<action>"; resource <resource>::"<id>"; context caller,
// scopes, tenant, auth_method and correlation_id. Entity providers add a
// service's own entities within a time bound.
//
// # Index
//
// Index files each policy under one necessary condition of its scope, so
// a decision evaluates only the policies that can match; its decisions
// equal cedar.Authorize (a differential test over generated policy sets
// proves it), at a fraction of the cost with many policies.
package pdp
