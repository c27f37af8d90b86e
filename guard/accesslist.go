package guard

// Media and header types of a signed access list.
const (
	// JWSType is the "typ" header of every access list JWS.
	JWSType = "ward-accesslist+jws"
	// MediaType is the Content-Type of GET /v1/accesslist (a compact JWS).
	MediaType = "application/jose"
	// KeySetMediaType is the Content-Type of GET /v1/keys.
	KeySetMediaType = "application/jwk-set+json"
	// MaxListSize bounds a compact access list JWS (about 30,000 grants).
	MaxListSize = 4 << 20
	// MaxKeySetSize bounds a JWKS document.
	MaxKeySetSize = 256 << 10
)

// AccessList is the payload of a signed access list: which consumers may
// call a provider, and what each may do. The authority compiles it from
// the approved grants of the dependency catalogue and signs it as a
// compact JWS (EdDSA, typ JWSType) with its control-plane key.
type AccessList struct {
	// Issuer is the SPIFFE ID of the authority that signed the list
	// (spiffe://<trust-domain>/ward/authority).
	Issuer string `json:"iss"`
	// Subject is the provider's SPIFFE ID: the list is valid for this
	// provider only.
	Subject string `json:"sub"`
	// Version increases with every change of the provider's grants or
	// declaration; a guard never goes back to a lower version.
	Version int64 `json:"ver"`
	// IssuedAt is when the list was signed, in Unix seconds.
	IssuedAt int64 `json:"iat"`
	// Consumers are the callers the provider may serve, ordered by ID.
	Consumers []Consumer `json:"consumers"`
}

// Consumer is one caller of the provider and what it may do.
type Consumer struct {
	// ID is the consumer's SPIFFE ID.
	ID string `json:"id"`
	// Grants are the allowed resources and actions, ordered by resource.
	Grants []Grant `json:"grants"`
}

// Grant allows Actions on Resource.
type Grant struct {
	Resource string   `json:"resource"`
	Actions  []string `json:"actions"` // sorted, unique
}
