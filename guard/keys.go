package guard

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// maxKeys bounds the keys kept from one key set.
const maxKeys = 16

// KeySet holds the authority's Ed25519 signing keys whose certificates
// verified against the trust bundle, by key ID.
type KeySet struct {
	td   spiffeid.TrustDomain
	keys map[string]ed25519.PublicKey
}

// Len is the number of trusted keys.
func (k *KeySet) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// has reports whether kid is a trusted key.
func (k *KeySet) has(kid string) bool {
	if k == nil {
		return false
	}
	_, ok := k.keys[kid]
	return ok
}

// VerifyCompact checks a compact JWS of at most maxSize bytes signed by
// one of the set's keys: exactly one signature, alg EdDSA, the "typ"
// header typ and a trusted "kid". It returns the verified payload; errors
// wrap ErrMalformed, ErrNoTrustedKey or ErrBadSignature. Other ward
// documents signed by the control-plane key (policy bundles) use it too.
func (k *KeySet) VerifyCompact(jws []byte, typ string, maxSize int) ([]byte, error) {
	if len(jws) > maxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, maxSize)
	}
	if k.Len() == 0 {
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
	if got, _ := sig.Protected.ExtraHeaders[jose.HeaderType].(string); got != typ {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrMalformed, clip(got), typ)
	}
	if sig.Protected.Algorithm != string(jose.EdDSA) {
		return nil, fmt.Errorf("%w: alg %q, want EdDSA", ErrMalformed, clip(sig.Protected.Algorithm))
	}
	kid := sig.Protected.KeyID
	pub, ok := k.keys[kid]
	if !ok {
		return nil, fmt.Errorf("%w: key %q is not a trusted signing key", ErrNoTrustedKey, clip(kid))
	}
	payload, err := obj.Verify(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return payload, nil
}

// TrustDomain is the trust domain whose authority the keys belong to.
func (k *KeySet) TrustDomain() spiffeid.TrustDomain {
	if k == nil {
		return spiffeid.TrustDomain{}
	}
	return k.td
}

// AuthorityID is the SPIFFE ID of the authority of td: the identity whose
// certificate binds the signing key.
func AuthorityID(td spiffeid.TrustDomain) spiffeid.ID {
	id, err := spiffeid.FromSegments(td, "ward", "authority")
	if err != nil { // unreachable: constant, valid segments
		return spiffeid.ID{}
	}
	return id
}

// ParseKeySet parses a JWKS (at most MaxKeySetSize bytes) and keeps each
// OKP/Ed25519 key whose x5c chain verifies against bundle at now, whose
// leaf is the X509-SVID spiffe://<td>/ward/authority with the same public
// key, and whose kid is its RFC 7638 thumbprint. Other keys are skipped.
// ErrNoTrustedKey when none is kept.
func ParseKeySet(jwks []byte, bundle x509bundle.Source, td spiffeid.TrustDomain, now time.Time) (*KeySet, error) {
	if len(jwks) > MaxKeySetSize {
		return nil, fmt.Errorf("%w: key set is larger than %d bytes", ErrNoTrustedKey, MaxKeySetSize)
	}
	if bundle == nil || td.IsZero() {
		return nil, fmt.Errorf("%w: no trust bundle", ErrNoTrustedKey)
	}
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &raw); err != nil {
		return nil, fmt.Errorf("%w: key set is not a JWKS: %v", ErrNoTrustedKey, err)
	}
	ks := &KeySet{td: td, keys: map[string]ed25519.PublicKey{}}
	var lastErr error
	for i, r := range raw.Keys {
		if len(ks.keys) >= maxKeys {
			break
		}
		kid, pub, err := trustedKey(r, bundle, td, now)
		if err != nil {
			lastErr = fmt.Errorf("keys[%d]: %w", i, err)
			continue
		}
		ks.keys[kid] = pub
	}
	if len(ks.keys) == 0 {
		if lastErr != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoTrustedKey, lastErr)
		}
		return nil, fmt.Errorf("%w: the key set is empty", ErrNoTrustedKey)
	}
	return ks, nil
}

// trustedKey checks one JWK.
func trustedKey(raw json.RawMessage, bundle x509bundle.Source, td spiffeid.TrustDomain, now time.Time) (string, ed25519.PublicKey, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return "", nil, fmt.Errorf("not a JWK: %v", err)
	}
	pub, ok := jwk.Key.(ed25519.PublicKey)
	if !ok {
		return "", nil, fmt.Errorf("key is %T, want Ed25519", jwk.Key)
	}
	if jwk.Use != "" && jwk.Use != "sig" {
		return "", nil, fmt.Errorf("key use %q, want sig", jwk.Use)
	}
	if jwk.Algorithm != "" && jwk.Algorithm != string(jose.EdDSA) {
		return "", nil, fmt.Errorf("key alg %q, want EdDSA", jwk.Algorithm)
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", nil, fmt.Errorf("thumbprint: %v", err)
	}
	if kid := base64.RawURLEncoding.EncodeToString(tp); jwk.KeyID != kid {
		return "", nil, fmt.Errorf("kid %q is not the key's RFC 7638 thumbprint", clip(jwk.KeyID))
	}
	if len(jwk.Certificates) == 0 {
		return "", nil, fmt.Errorf("key has no x5c certificate chain")
	}
	if err := verifyKeyChain(jwk.Certificates, pub, bundle, td, now); err != nil {
		return "", nil, err
	}
	return jwk.KeyID, pub, nil
}

// verifyKeyChain checks that chain is an X509-SVID of the authority of td,
// valid at now under bundle, certifying pub.
func verifyKeyChain(chain []*x509.Certificate, pub ed25519.PublicKey, bundle x509bundle.Source, td spiffeid.TrustDomain, now time.Time) error {
	id, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now))
	if err != nil {
		return fmt.Errorf("key certificate does not verify: %v", err)
	}
	if id != AuthorityID(td) {
		return fmt.Errorf("key certificate is for %s, want %s", id, AuthorityID(td))
	}
	leafKey, ok := chain[0].PublicKey.(ed25519.PublicKey)
	if !ok || !leafKey.Equal(pub) {
		return fmt.Errorf("key certificate certifies another key")
	}
	if ku := chain[0].KeyUsage; ku != 0 && ku&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("key certificate lacks the digitalSignature key usage")
	}
	return nil
}

// clip shortens untrusted text for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
