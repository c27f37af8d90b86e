package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// SchemaVersion is the version of Event written in each line's "v".
const SchemaVersion = 1

// MaxLineSize bounds one encoded event line (without the newline).
const MaxLineSize = 64 << 10

// Event kinds written by ward's components and SDK.
const (
	KindDecision       = "authz.decision"       // a PEP's access decision
	KindAccessListMiss = "accesslist.miss"      // a caller not on the access list
	KindGateway        = "gateway.request"      // a request the gateway answered or forwarded
	KindTokenIssued    = "token.issued"         // the token service issued a token
	KindTokenRevoked   = "token.revoked"        // a token, client or API key was revoked
	KindSVIDIssued     = "svid.issued"          // an SVID was issued or renewed
	KindSVIDRevoked    = "svid.revoked"         // certificates were revoked
	KindPolicyPushed   = "policy.pushed"        // a policy version was pushed
	KindCatalogApprove = "catalog.approved"     // an access request was approved
	KindDetokenize     = "vault.detokenize"     // the vault revealed a value
	KindDropped        = "audit.dropped"        // a writer had to drop events
	KindTooLarge       = "audit.line_too_large" // the agent skipped an oversized line
	KindRaw            = "audit.raw"            // a line that was not an event, wrapped by the agent
	KindAdminPrefix    = "admin."               // admin.<operation>
)

// Decisions.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Event is one audit record. Time, Kind and (from the Writer) Service are
// always set; every other field is optional.
type Event struct {
	V             int            `json:"v"`
	Time          time.Time      `json:"time"`
	Service       string         `json:"service,omitempty"`
	Instance      string         `json:"instance,omitempty"`
	Host          string         `json:"host,omitempty"`
	CorrelationID string         `json:"cid,omitempty"`
	Kind          string         `json:"kind"`
	Caller        string         `json:"caller,omitempty"` // SPIFFE ID of the mTLS peer
	User          string         `json:"user,omitempty"`   // passport subject
	Action        string         `json:"action,omitempty"`
	Resource      string         `json:"resource,omitempty"`
	Decision      string         `json:"decision,omitempty"`
	Reason        string         `json:"reason,omitempty"`
	PolicyVersion string         `json:"policy_version,omitempty"`
	CredentialFP  string         `json:"credential_fp,omitempty"` // never the credential
	Extra         map[string]any `json:"extra,omitempty"`
}

// Errors of ParseLine.
var (
	ErrLineTooLarge = errors.New("audit: line too large")
	ErrNotEvent     = errors.New("audit: not an event")
)

// ParseLine decodes one line (without its newline) as an Event: a JSON
// object with a known schema version, a kind and a time. Anything else is
// ErrNotEvent (or ErrLineTooLarge); it never panics.
func ParseLine(line []byte) (Event, error) {
	if len(line) > MaxLineSize {
		return Event{}, ErrLineTooLarge
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return Event{}, fmt.Errorf("%w: not a JSON object", ErrNotEvent)
	}
	var e Event
	if err := json.Unmarshal(line, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrNotEvent, err)
	}
	switch {
	case e.V != SchemaVersion:
		return Event{}, fmt.Errorf("%w: schema version %d", ErrNotEvent, e.V)
	case e.Kind == "" || len(e.Kind) > 64:
		return Event{}, fmt.Errorf("%w: no kind", ErrNotEvent)
	case e.Time.IsZero():
		return Event{}, fmt.Errorf("%w: no time", ErrNotEvent)
	}
	return e, nil
}
