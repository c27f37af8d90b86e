// Package audit is the SDK side of ward's audit trail: a versioned event
// schema (JSON lines) and a Writer that appends events to a local file.
//
// Services never send audit events over the network (seed 002, rule 1):
// they write them locally, so a logging outage loses nothing; ward's
// agent on the same host tails the files, redacts, and ships them through
// the broker to the collector, which chains and signs what it stores.
//
//	w, err := audit.FromEnv("orders")   // WARD_AUDIT_DIR; nil Writer when unset (a no-op)
//	defer w.Close()
//	w.Write(audit.Event{Kind: audit.KindDecision, CorrelationID: cid, Caller: peer.String(),
//		User: user, Action: "read", Resource: "orders", Decision: "allow"})
//
// Write never blocks the request path for long: events go through a
// bounded buffer to a background goroutine that writes and rotates the
// file by size. If the buffer stays full beyond a short wait, the event is
// dropped, counted (Dropped) and reported as an audit.dropped event as
// soon as the writer catches up: drops are never silent. Never put a
// credential or a secret in an event; put a fingerprint (the first bytes
// of a SHA-256) in CredentialFP.
package audit
