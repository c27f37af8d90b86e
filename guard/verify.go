package guard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// maxGrants bounds the grants of one list (all consumers together).
const maxGrants = 100000

// Verify parses a compact JWS access list (at most MaxListSize bytes) and
// checks it: alg EdDSA, typ JWSType, a kid of keys, a valid signature; a
// well-formed payload whose issuer is the authority of the provider's trust
// domain, whose subject is provider (ErrWrongProvider; another trust domain
// is ErrForeignTrustDomain), whose version is at least 1, and whose
// consumers are SPIFFE IDs of the same trust domain.
func Verify(jws []byte, keys *KeySet, provider spiffeid.ID) (*AccessList, error) {
	if len(jws) > MaxListSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxListSize)
	}
	if keys.Len() == 0 {
		return nil, ErrNoTrustedKey
	}
	obj, err := jose.ParseSignedCompact(string(bytes.TrimSpace(jws)), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(obj.Signatures) != 1 {
		return nil, fmt.Errorf("%w: want exactly one signature", ErrMalformed)
	}
	sig := obj.Signatures[0]
	if typ, _ := sig.Protected.ExtraHeaders[jose.HeaderType].(string); typ != JWSType {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrMalformed, clip(typ), JWSType)
	}
	if sig.Protected.Algorithm != string(jose.EdDSA) {
		return nil, fmt.Errorf("%w: alg %q, want EdDSA", ErrMalformed, clip(sig.Protected.Algorithm))
	}
	kid := sig.Protected.KeyID
	pub, ok := keys.keys[kid]
	if !ok {
		return nil, fmt.Errorf("%w: key %q is not a trusted signing key", ErrNoTrustedKey, clip(kid))
	}
	payload, err := obj.Verify(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	list, err := decodeList(payload)
	if err != nil {
		return nil, err
	}
	if err := checkList(list, keys.td, provider); err != nil {
		return nil, err
	}
	return list, nil
}

// decodeList decodes the payload strictly.
func decodeList(payload []byte) (*AccessList, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var l AccessList
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return nil, fmt.Errorf("%w: payload: trailing data", ErrMalformed)
	}
	return &l, nil
}

// checkList validates a decoded list for provider in trust domain td.
func checkList(l *AccessList, td spiffeid.TrustDomain, provider spiffeid.ID) error {
	iss, err := spiffeid.FromString(l.Issuer)
	if err != nil {
		return fmt.Errorf("%w: iss: %v", ErrMalformed, err)
	}
	if iss.TrustDomain() != td || provider.TrustDomain() != td {
		return fmt.Errorf("%w: issued in %s, want %s", ErrForeignTrustDomain, iss.TrustDomain(), td)
	}
	if iss != AuthorityID(td) {
		return fmt.Errorf("%w: issuer %s is not the authority", ErrMalformed, iss)
	}
	sub, err := spiffeid.FromString(l.Subject)
	if err != nil {
		return fmt.Errorf("%w: sub: %v", ErrMalformed, err)
	}
	if sub.TrustDomain() != td {
		return fmt.Errorf("%w: subject %s", ErrForeignTrustDomain, sub)
	}
	if sub != provider {
		return fmt.Errorf("%w: list of %s, this is %s", ErrWrongProvider, sub, provider)
	}
	if l.Version < 1 {
		return fmt.Errorf("%w: version %d", ErrMalformed, l.Version)
	}
	if l.IssuedAt <= 0 {
		return fmt.Errorf("%w: iat %d", ErrMalformed, l.IssuedAt)
	}
	grants := 0
	for i, c := range l.Consumers {
		id, err := spiffeid.FromString(c.ID)
		if err != nil {
			return fmt.Errorf("%w: consumers[%d]: %v", ErrMalformed, i, err)
		}
		if id.TrustDomain() != td {
			return fmt.Errorf("%w: consumers[%d] is %s", ErrForeignTrustDomain, i, id)
		}
		for j, g := range c.Grants {
			if g.Resource == "" || len(g.Actions) == 0 {
				return fmt.Errorf("%w: consumers[%d].grants[%d] is empty", ErrMalformed, i, j)
			}
			for _, a := range g.Actions {
				if a == "" || strings.ContainsAny(a, "\x00") {
					return fmt.Errorf("%w: consumers[%d].grants[%d]: empty action", ErrMalformed, i, j)
				}
			}
			grants += len(g.Actions)
			if grants > maxGrants {
				return fmt.Errorf("%w: more than %d grants", ErrMalformed, maxGrants)
			}
		}
	}
	return nil
}
