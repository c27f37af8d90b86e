package bus

import (
	"errors"
	"fmt"
	"strings"
)

const (
	// SubjectPrefix starts every ward subject; the version lets a future
	// wire format live next to this one.
	SubjectPrefix = "ward.v1."

	// SubjectEvents carries the authority's change-log notifications,
	// payload JSON {"seq":N,"kind":"..."}.
	SubjectEvents = "ward.v1.events"

	// SubjectCredentialRevocations carries every revocation of the token
	// service as JSON {"kind":"token|apikey|client","id","expires_at"}, for
	// verifiers that follow the bus (gateways) rather than a watch stream.
	SubjectCredentialRevocations = "ward.v1.revocations.credentials"

	// MaxSubjectLen bounds a subject's length in bytes.
	MaxSubjectLen = 255
)

// ErrInvalidSubject is returned for a subject outside ward.v1.* or with a bad
// token.
var ErrInvalidSubject = errors.New("bus: invalid subject")

// Subject returns SubjectPrefix followed by parts joined with dots:
// Subject("revoked", "svc") is "ward.v1.revoked.svc". Each part must be a
// valid token: printable ASCII without spaces, dots or the wildcards * and >.
// If a part is not, Subject returns "", which Publish and Subscribe reject
// with ErrInvalidSubject.
func Subject(parts ...string) string {
	if len(parts) == 0 {
		return ""
	}
	for _, p := range parts {
		if !validToken(p) {
			return ""
		}
	}
	s := SubjectPrefix + strings.Join(parts, ".")
	if len(s) > MaxSubjectLen {
		return ""
	}
	return s
}

// ValidateSubject reports whether subject can be published to: it starts with
// SubjectPrefix, has at least one token after it, and has no wildcard. The
// error wraps ErrInvalidSubject.
func ValidateSubject(subject string) error {
	return checkSubject(subject, false)
}

// ValidateFilter reports whether filter can be subscribed to: like
// ValidateSubject, but a token after the prefix may be the wildcard * and the
// last one may be >, as in "ward.v1.>".
func ValidateFilter(filter string) error {
	return checkSubject(filter, true)
}

func checkSubject(s string, wildcards bool) error {
	if len(s) > MaxSubjectLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidSubject, MaxSubjectLen)
	}
	rest, ok := strings.CutPrefix(s, SubjectPrefix)
	if !ok {
		return fmt.Errorf("%w %q: must start with %q", ErrInvalidSubject, s, SubjectPrefix)
	}
	for {
		tok, more, last := rest, "", true
		if i := strings.IndexByte(rest, '.'); i >= 0 {
			tok, more, last = rest[:i], rest[i+1:], false
		}
		switch {
		case wildcards && tok == "*":
		case wildcards && tok == ">" && last:
		case validToken(tok):
		default:
			return fmt.Errorf("%w %q: bad token %q", ErrInvalidSubject, s, tok)
		}
		if last {
			return nil
		}
		rest = more
	}
}

// validToken accepts non-empty printable ASCII without '.', '*' and '>'.
func validToken(tok string) bool {
	if tok == "" {
		return false
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' {
			return false
		}
	}
	return true
}
