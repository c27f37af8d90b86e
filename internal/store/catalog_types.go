package store

import "time"

// Access request states. A request is created pending (or approved, when
// the catalogue's rules approve it automatically); a reviewer approves or
// denies it; a newer declaration supersedes a pending one; an approved
// request is a grant until it is revoked.
const (
	RequestPending    = "pending"
	RequestApproved   = "approved"
	RequestDenied     = "denied"
	RequestSuperseded = "superseded"
	RequestRevoked    = "revoked"
)

// Declaration is one manifest a service sent about itself: what it
// provides and what it consumes. Every declaration is kept; the latest per
// service is the current one.
type Declaration struct {
	Seq        int64  // assigned by PutDeclaration, increasing
	Service    string // the declaring service (from its SVID)
	Version    string // the service's version string from the manifest
	Manifest   []byte // canonical JSON of the parsed manifest (catalog.Manifest)
	Serial     string // serial of the SVID that sent it
	DeclaredAt time.Time
}

// AccessRequest asks that a consumer may perform Actions on a provider's
// Resource. Approved and not revoked, it is a grant; its ID is the grant's
// ID.
type AccessRequest struct {
	ID              string // "req-" + 16 hex characters
	Consumer        string // consumer service name
	Provider        string // provider service name
	Resource        string
	Actions         []string // sorted, unique, non-empty
	ConsumerVersion string   // version of the declaration that asked
	State           string   // one of the Request* constants
	RequestedAt     time.Time

	// Decision (zero while pending).
	Auto        bool   // approved by rule (L1→L1, provider opted in)
	DecidedBy   string // admin token name, or "auto"
	DecidedByID string // admin token ID ("" for auto)
	DecidedRole string // the role that allowed the decision: admin, security, team:<name>, auto
	DecidedAt   *time.Time
	Reason      string // reviewer's reason or justification

	// Revocation of a grant (zero unless State is RequestRevoked).
	RevokedBy    string
	RevokedByID  string
	RevokedAt    *time.Time
	RevokeReason string
}

// AccessDecision is a reviewer's decision on a pending request, or the
// revocation of a grant.
type AccessDecision struct {
	State  string // RequestApproved, RequestDenied or RequestSuperseded (DecideAccessRequest); ignored by RevokeAccessGrant
	By     string
	ByID   string
	Role   string
	Reason string
	At     time.Time
}

// AccessRequestFilter selects requests; zero fields match everything.
type AccessRequestFilter struct {
	States   []string
	Consumer string
	Provider string
	Resource string
}

// AccessListState is what an access list is compiled from, read in one
// consistent snapshot: the provider's list version, its latest
// declaration (nil if it never declared) and its grants (approved
// requests where it is the provider), ordered by consumer, resource, ID.
type AccessListState struct {
	Version     int64
	Declaration *Declaration
	Grants      []AccessRequest
}
