// Package catalog is the logic of ward's dependency catalogue: who may call
// whom, and what each caller may do. It is pure: no store, no network, no
// clock. The authority feeds it rows from the store and serves its results.
//
// # Declarations
//
// Every service describes itself in a manifest (ward.yaml), sent to the
// authority over mTLS with its own SVID, so a service can only speak for
// itself:
//
//	service: web
//	version: 1.4.0
//	auto_approve_l1: false
//	provides:
//	  - resource: pages
//	    actions: [read]
//	consumes:
//	  - service: whoami
//	    resource: whoami
//	    actions: [read]
//
// ParseManifest reads that untrusted YAML strictly and validates it; the
// authority stores Manifest.Canonical (deterministic JSON) as a
// store.Declaration and reads it back with DecodeStored. The latest
// declaration of a service is its current one.
//
//	m, err := catalog.ParseManifest(body) // errors wrap ErrInvalidManifest
//	d := store.Declaration{Service: m.Service, Version: m.Version, Manifest: m.Canonical()}
//
// # Requests and grants
//
// A consumption that no grant covers yet (a new provider resource, or more
// actions than granted) becomes a pending store.AccessRequest. A reviewer
// approves or denies it; an approved request is a grant, and its ID is the
// grant's ID. A grant stays until it is revoked.
//
// # Levels and approval rules
//
// Every service has a level: L1, L2 or L3, L3 being the most sensitive.
// RuleFor says what approving a consumption takes:
//
//   - an L1 consumer of an L1 provider that opted in (auto_approve_l1) is
//     approved automatically;
//   - access to an L3 provider is approved only by the security (or admin)
//     role, and for an L1 consumer only with a justification of at least
//     MinJustification characters;
//   - access to an L1 or L2 provider is approved by security, admin or the
//     provider's team (role team:<team>).
//
// The authority asks when a request is made and when it is decided:
//
//	rule := catalog.RuleFor(consumer.Level, provider.Level, providerManifest.AutoApproveL1)
//	ok := rule.MayApprove(role, provider.Team) && (!rule.NeedsJustification || catalog.Justified(reason))
//
// Posture checks the grants in force against these rules as they hold now
// (levels change, declarations change, services are revoked) and lists the
// violations; Graph draws the grants as a DOT or Mermaid diagram.
//
// # Access lists
//
// For each provider, Compile turns the approved grants into a guard.AccessList:
// one entry per consumer with the union of its granted actions per
// resource, keeping only what the provider's latest declaration still
// provides and leaving out revoked consumers. The authority signs it and
// the provider's guard enforces it.
//
//	st, err := db.AccessListState(ctx, "whoami")
//	list, err := catalog.Compile(td, "whoami", st, revoked, time.Now())
package catalog
