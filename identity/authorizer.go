package identity

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Authorizer decides whether a peer whose X509-SVID has already been
// verified may connect. It returns nil to accept; a refusal should wrap
// ErrNotAuthorized. Authorizers compose like go-spiffe's
// tlsconfig.Authorizer.
type Authorizer func(id spiffeid.ID) error

// AuthorizeAny accepts any verified peer. Verification against the trust
// bundle already restricts peers to the Source's trust domain.
func AuthorizeAny() Authorizer {
	return func(spiffeid.ID) error { return nil }
}

// AuthorizeID accepts only the listed IDs.
func AuthorizeID(ids ...spiffeid.ID) Authorizer {
	allowed := make(map[spiffeid.ID]struct{}, len(ids))
	for _, id := range ids {
		allowed[id] = struct{}{}
	}
	return func(id spiffeid.ID) error {
		if _, ok := allowed[id]; ok {
			return nil
		}
		return fmt.Errorf("%w: %s is not an allowed ID", ErrNotAuthorized, id)
	}
}

// AuthorizeMemberOf accepts any ID in the trust domain td.
func AuthorizeMemberOf(td spiffeid.TrustDomain) Authorizer {
	return func(id spiffeid.ID) error {
		if id.MemberOf(td) {
			return nil
		}
		return fmt.Errorf("%w: %s is not a member of %s", ErrNotAuthorized, id, td)
	}
}
