package sts

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/wardsec/ward/internal/store"
)

// assertionType is RFC 7523's client_assertion_type.
const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Bounds of client assertions.
const (
	maxClientKeys     = 8
	maxClientJWKS     = 16 << 10
	maxAssertionLife  = 10 * time.Minute
	assertionJTIClass = "assertion:"
)

// assertionAlgs are the signature algorithms a client assertion may use.
var assertionAlgs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256, jose.ES384, jose.RS256, jose.PS256}

// parseClientKeys parses a client's JWKS: public signature keys only.
func parseClientKeys(raw []byte) ([]jose.JSONWebKey, error) {
	if len(raw) == 0 || len(raw) > maxClientJWKS {
		return nil, fmt.Errorf("a JWKS of at most %d bytes is required", maxClientJWKS)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("JWKS: %v", err)
	}
	if len(set.Keys) == 0 || len(set.Keys) > maxClientKeys {
		return nil, fmt.Errorf("JWKS must hold 1 to %d keys", maxClientKeys)
	}
	for i, k := range set.Keys {
		if !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
			return nil, fmt.Errorf("keys[%d] must be a public signature key", i)
		}
		switch pub := k.Key.(type) {
		case ed25519.PublicKey, *ecdsa.PublicKey:
		case *rsa.PublicKey:
			if pub.N.BitLen() < 2048 {
				return nil, fmt.Errorf("keys[%d]: RSA keys must have at least 2048 bits", i)
			}
		default:
			return nil, fmt.Errorf("keys[%d]: unsupported key type %T", i, k.Key)
		}
	}
	return set.Keys, nil
}

var errBadAssertion = errors.New("sts: client assertion refused")

// authenticateAssertion checks an RFC 7523 client assertion: signed by a
// key of the client's JWKS, iss = sub = client_id, aud naming this token
// endpoint or issuer, unexpired and short-lived, with a jti never seen
// before (replays are refused until the assertion expires).
func (s *Service) authenticateAssertion(ctx context.Context, raw, clientID string) (store.OAuthClient, error) {
	if len(raw) > maxTokenSize {
		return store.OAuthClient{}, errBadAssertion
	}
	tok, err := jwt.ParseSigned(raw, assertionAlgs)
	if err != nil || len(tok.Headers) != 1 {
		return store.OAuthClient{}, errBadAssertion
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return store.OAuthClient{}, errBadAssertion
	}
	id := unverified.Issuer
	if clientID != "" && clientID != id {
		return store.OAuthClient{}, errBadAssertion
	}
	if !strings.HasPrefix(id, "wc_") || len(id) != 27 {
		return store.OAuthClient{}, errBadAssertion
	}
	c, err := s.client(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.OAuthClient{}, errBadAssertion
	}
	if err != nil {
		return store.OAuthClient{}, err
	}
	if c.AuthMethod != store.AuthPrivateKeyJWT || c.RevokedAt != nil || s.clientRevoked(c.ID) {
		return store.OAuthClient{}, errBadAssertion
	}
	keys, err := parseClientKeys(c.JWKS)
	if err != nil {
		return store.OAuthClient{}, errBadAssertion
	}
	h := tok.Headers[0]
	var claims jwt.Claims
	verified := false
	for _, k := range keys {
		if h.KeyID != "" && k.KeyID != h.KeyID {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		if err := tok.Claims(k.Key, &claims); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return store.OAuthClient{}, errBadAssertion
	}
	now := s.now()
	endpoint := s.cfg.Issuer + "/oauth2/token"
	switch {
	case claims.Issuer != c.ID || claims.Subject != c.ID:
		return store.OAuthClient{}, errBadAssertion
	case !slices.Contains(claims.Audience, endpoint) && !slices.Contains(claims.Audience, s.cfg.Issuer):
		return store.OAuthClient{}, errBadAssertion
	case claims.Expiry == nil || !claims.Expiry.Time().After(now) || claims.Expiry.Time().Sub(now) > maxAssertionLife:
		return store.OAuthClient{}, errBadAssertion
	case claims.NotBefore != nil && claims.NotBefore.Time().After(now.Add(time.Minute)):
		return store.OAuthClient{}, errBadAssertion
	case claims.ID == "" || len(claims.ID) > 128:
		return store.OAuthClient{}, errBadAssertion
	}
	key := assertionJTIClass + c.ID + ":" + claims.ID
	if seen, err := s.st.IsTokenRevoked(ctx, key); err != nil {
		return store.OAuthClient{}, err
	} else if seen {
		s.log.WarnContext(ctx, "replayed client assertion refused", "client_id", c.ID)
		return store.OAuthClient{}, errBadAssertion
	}
	if err := s.st.RevokeToken(ctx, store.RevokedToken{JTI: key, ClientID: c.ID, ExpiresAt: claims.Expiry.Time().UTC(), RevokedAt: now.UTC()}); err != nil {
		return store.OAuthClient{}, err
	}
	return c, nil
}
