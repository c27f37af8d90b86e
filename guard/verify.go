package guard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

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
	payload, err := keys.VerifyCompact(jws, JWSType, MaxListSize)
	if err != nil {
		return nil, err
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
