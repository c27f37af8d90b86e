package guard

import "errors"

// Errors callers branch on (errors.Is).
var (
	// ErrUnknownCaller: the caller is not on the access list at all.
	ErrUnknownCaller = errors.New("guard: caller is not on the access list")
	// ErrActionNotAllowed: the caller is on the list, but not for this
	// resource and action.
	ErrActionNotAllowed = errors.New("guard: action not allowed for this caller")
	// ErrNoAccessList: no verified access list is held yet (first start
	// with the authority unreachable and no cache): every call is refused.
	ErrNoAccessList = errors.New("guard: no verified access list")
	// ErrBadSignature: the JWS signature does not verify with a trusted key.
	ErrBadSignature = errors.New("guard: access list signature invalid")
	// ErrWrongProvider: the list was issued for another provider.
	ErrWrongProvider = errors.New("guard: access list is for another provider")
	// ErrForeignTrustDomain: the list or one of its entries belongs to
	// another trust domain.
	ErrForeignTrustDomain = errors.New("guard: access list from a foreign trust domain")
	// ErrRollback: the list's version is lower than the one held.
	ErrRollback = errors.New("guard: access list version is older than the one held")
	// ErrMalformed: the list is not a well-formed access list JWS.
	ErrMalformed = errors.New("guard: malformed access list")
	// ErrNoTrustedKey: no key of the key set verifies against the trust
	// bundle, or the list's key is not among them.
	ErrNoTrustedKey = errors.New("guard: no trusted signing key")
)
