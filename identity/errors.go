package identity

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrNoSVID reports that no valid SVID is available: none on disk,
	// none in memory, and none could be obtained.
	ErrNoSVID = errors.New("identity: no valid SVID")
	// ErrRevoked reports that a certificate of a peer chain is in the
	// revoked set pushed by the authority.
	ErrRevoked = errors.New("identity: certificate revoked")
	// ErrNotAuthorized reports that a verified peer was refused by an
	// Authorizer.
	ErrNotAuthorized = errors.New("identity: peer not authorized")
	// ErrNoPeerCertificate reports that the peer presented no certificate.
	ErrNoPeerCertificate = errors.New("identity: peer presented no certificate")
	// ErrUntrustedAuthority reports that the authority could not be
	// authenticated: its certificate does not chain to the trusted roots,
	// does not carry the authority SPIFFE ID, or no root matches
	// Config.RootFingerprint.
	ErrUntrustedAuthority = errors.New("identity: authority not trusted")
	// ErrResponseTooLarge reports an authority response above the size limit.
	ErrResponseTooLarge = errors.New("identity: authority response too large")
	// ErrClosed reports use of a Source after Close.
	ErrClosed = errors.New("identity: source closed")
	// ErrAlreadyRunning reports a second concurrent call to Run.
	ErrAlreadyRunning = errors.New("identity: source already running")
)

// Errors of the watch stream; unexported because callers never see them,
// they are only logged.
var (
	errBadSignature = errors.New("identity: watch event signature invalid")
	errRollback     = errors.New("identity: watch event version rollback")
	errBadEvent     = errors.New("identity: malformed watch event")
)

// AuthorityError is an error answer of the authority: an HTTP status and
// the RFC 9457 problem details it sent (Type is e.g.
// "https://ward.dev/problems/unauthorized"). When the authority did not
// send a problem document, Type is empty and Title is the status text.
type AuthorityError struct {
	Status int
	Type   string
	Title  string
	Detail string
}

// Error implements error.
func (e *AuthorityError) Error() string {
	msg := fmt.Sprintf("identity: authority answered %d", e.Status)
	if e.Title != "" {
		msg += " " + e.Title
	}
	if e.Type != "" {
		msg += " (" + e.Type + ")"
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// refused reports whether the authority refused our credentials (as
// opposed to being unavailable), which is when a Source falls back from
// renewal to its bootstrap token.
func (e *AuthorityError) refused() bool {
	return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}
