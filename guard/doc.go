// Package guard is the service-level authorization check of ward's SDK:
// "Should I know you?". A provider holds the access list the authority
// compiled from the dependency catalogue's approved grants — which
// consumer SPIFFE IDs may perform which actions on which resources —
// verified (EdDSA JWS, typ ward-accesslist+jws, keys certified by the
// trust bundle) and cached on disk, and asks it on every request:
//
//	g, err := guard.NewForSource(ctx, src, authorityURL, guard.Config{CacheDir: dir + "/accesslist", Manifest: manifest})
//	go g.Run(ctx)
//	err = g.Check(ctx, callerID, "orders", "read") // nil, ErrUnknownCaller, ErrActionNotAllowed or ErrNoAccessList
//
// Allowed answers from memory in tens of nanoseconds without allocating.
// Check adds the lazy refresh of the catalogue model: on a miss it fetches
// the current list and checks again, but refreshes are coalesced, caused
// by misses at most once per Config.MissRefreshInterval, and a miss that
// survived a refresh is remembered for Config.MissTTL, so unknown callers
// cannot turn the authority into a target. Changes arrive first on the
// watch stream (Config.Events), so an approval or a revocation takes
// effect within a second. A list older than the one held, signed by an
// untrusted key, from another trust domain or for another provider is
// refused.
//
// The pep package turns a Guard into HTTP middleware.
package guard
