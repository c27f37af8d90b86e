// Package store is ward's persistence layer: one API over database/sql with
// two backends, SQLite (modernc.org/sqlite, the embedded default) and
// PostgreSQL (pgx), selected by the DSN given to Open. Schema changes are
// embedded migrations applied by Open.
//
//	st, err := store.Open(ctx, "ward-data/ward.db")          // SQLite
//	st, err := store.Open(ctx, "postgres://user@host/db")     // PostgreSQL
//
// The same contract suite (storetest) runs against both backends.
package store

import (
	"errors"
	"time"
)

// Errors callers branch on.
var (
	// ErrNotFound: the row asked for does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a row with the same unique key already exists, or a
	// row is not in the state a transition requires (an access request
	// decided twice, a grant revoked that is not approved).
	ErrConflict = errors.New("store: already exists")
)

// CA states.
const (
	CAStatePrepared = "prepared" // in the trust bundle (if a root), not yet issuing
	CAStateActive   = "active"   // issuing
	CAStateRetiring = "retiring" // still trusted, no longer issuing
	CAStateRetired  = "retired"  // removed from the bundle
	CAStateRevoked  = "revoked"  // revoked (intermediates only)
)

// CA kinds.
const (
	CAKindRoot         = "root"
	CAKindIntermediate = "intermediate"
)

// CA is a certificate authority ward holds the key of: a root or an
// intermediate. Team is empty for the authority's own (default) intermediate.
type CA struct {
	ID            string // stable identifier, e.g. "root-1a2b3c4d"
	Kind          string // CAKindRoot or CAKindIntermediate
	Team          string // owning team for team intermediates; "" otherwise
	ParentID      string // issuing CA's ID; "" for roots
	CertDER       []byte
	KeyCiphertext []byte // private key (PKCS#8) sealed by the KMS
	State         string // one of the CAState* constants
	CreatedAt     time.Time
	NotAfter      time.Time
	RevokedAt     *time.Time
}

// Team groups services and owns one active intermediate CA.
type Team struct {
	Name      string
	CreatedAt time.Time
}

// Service is a registered workload. Level is "L1", "L2" or "L3".
type Service struct {
	Name      string
	Team      string
	Level     string
	SVIDTTL   time.Duration
	CreatedAt time.Time
	RevokedAt *time.Time
}

// BootstrapToken is a long-lived credential a service exchanges for its
// first SVID. Only a hash of the token is stored.
type BootstrapToken struct {
	ID        string
	Service   string
	Hash      []byte // SHA-256 of the token
	CreatedAt time.Time
	RevokedAt *time.Time
	ExpiresAt *time.Time // nil: valid until revoked
}

// AdminToken authenticates operators on the admin API. Only a hash of the
// token is stored.
type AdminToken struct {
	ID        string
	Name      string
	Hash      []byte // SHA-256 of the token
	Roles     []string
	CreatedAt time.Time
	RevokedAt *time.Time
}

// Certificate is an issued X.509-SVID (every issued serial is persisted).
type Certificate struct {
	Serial           string // lower-case hex, no leading zeros stripped beyond big.Int.Text(16)
	Service          string
	SPIFFEID         string
	InstanceID       string
	IssuerID         string // CA.ID of the issuing intermediate
	NotBefore        time.Time
	NotAfter         time.Time
	DER              []byte
	RevokedAt        *time.Time
	RevocationReason int // RFC 5280 CRLReason code
}

// Event is one entry of the authority's change log, the source of the
// watch stream. Seq is assigned by AppendEvent and strictly increases.
type Event struct {
	Seq       int64
	Kind      string
	Payload   []byte
	CreatedAt time.Time
}
