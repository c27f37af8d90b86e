package sts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// accessTokenType is the JWT "typ" of access tokens (RFC 9068).
const accessTokenType = "at+jwt"

// maxTokenSize bounds a token presented for introspection or revocation.
const maxTokenSize = 8 << 10

// Claims are the claims of a ward access token.
type Claims struct {
	Issuer    string        `json:"iss"`
	Subject   string        `json:"sub"`
	Audience  jwt.Audience  `json:"aud"`
	Expiry    int64         `json:"exp"`
	IssuedAt  int64         `json:"iat"`
	NotBefore int64         `json:"nbf"`
	ID        string        `json:"jti"`
	Scope     string        `json:"scope,omitempty"`
	ClientID  string        `json:"client_id"`
	Cnf       *Confirmation `json:"cnf,omitempty"`
	// Act is the delegation chain (RFC 8693 §4.1): the current actor,
	// with the actors before it nested inside.
	Act *Actor `json:"act,omitempty"`
	// MayAct names the only party that may act for the subject (§4.4).
	MayAct *Actor `json:"may_act,omitempty"`
}

// Actor is one link of a delegation chain.
type Actor struct {
	Sub string `json:"sub"`
	Act *Actor `json:"act,omitempty"`
}

// maxChain bounds a delegation chain.
const maxChain = 8

// depth is the length of the chain starting at a.
func (a *Actor) depth() int {
	n := 0
	for ; a != nil; a = a.Act {
		n++
	}
	return n
}

// Confirmation binds a token to a client certificate (RFC 8705).
type Confirmation struct {
	X5tS256 string `json:"x5t#S256"`
}

// Thumbprint is the RFC 8705 x5t#S256 of a certificate.
func Thumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func newJTI() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// mint signs claims with the active key of alg.
func (s *Service) mint(alg string, c Claims) (string, error) {
	k := s.keys.Load().active[alg]
	if k == nil {
		return "", fmt.Errorf("%w for %s", errNoKey, alg)
	}
	opts := (&jose.SignerOptions{}).WithType(accessTokenType).WithHeader("kid", k.id)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: k.priv}, opts)
	if err != nil {
		return "", fmt.Errorf("sts: signer: %w", err)
	}
	tok, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("sts: sign token: %w", err)
	}
	return tok, nil
}

// parseToken verifies a JWT access token issued by this service: a
// published kid whose algorithm matches the header (no alg none, no
// algorithm confusion), a valid signature, our issuer, not expired, not
// revoked. Any failure is ErrInvalidCredential.
func (s *Service) parseToken(raw string) (*Claims, error) {
	if len(raw) > maxTokenSize || strings.Count(raw, ".") != 2 {
		return nil, fmt.Errorf("%w: not a compact JWT", ErrInvalidCredential)
	}
	sum := sha256.Sum256([]byte(raw))
	if c := s.verified.get(sum); c != nil {
		return s.checkLive(c)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCredential, err)
	}
	if len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: want one signature", ErrInvalidCredential)
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != accessTokenType {
		return nil, fmt.Errorf("%w: typ %q", ErrInvalidCredential, typ)
	}
	k := s.keys.Load().published[h.KeyID]
	if k == nil && s.reloadForUnknownKey() {
		k = s.keys.Load().published[h.KeyID]
	}
	if k == nil || k.alg != h.Algorithm {
		return nil, fmt.Errorf("%w: unknown key or algorithm", ErrInvalidCredential)
	}
	var c Claims
	if err := tok.Claims(k.pub, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCredential, err)
	}
	switch {
	case c.Issuer != s.cfg.Issuer:
		return nil, fmt.Errorf("%w: issuer", ErrInvalidCredential)
	case c.ID == "" || c.ClientID == "":
		return nil, fmt.Errorf("%w: missing jti or client_id", ErrInvalidCredential)
	}
	if _, err := s.checkLive(&c); err != nil {
		return nil, err
	}
	s.verified.put(sum, &c)
	return &c, nil
}

// checkLive checks what can change after a signature was verified: time
// and revocation.
func (s *Service) checkLive(c *Claims) (*Claims, error) {
	now := s.now().Unix()
	switch {
	case c.Expiry <= now:
		return nil, fmt.Errorf("%w: expired", ErrInvalidCredential)
	case c.NotBefore > now+60:
		return nil, fmt.Errorf("%w: not yet valid", ErrInvalidCredential)
	case s.Revoked(c.ID):
		return nil, fmt.Errorf("%w: revoked", ErrInvalidCredential)
	case s.clientRevoked(c.ClientID):
		return nil, fmt.Errorf("%w: client revoked", ErrInvalidCredential)
	}
	return c, nil
}

// maxVerified bounds the verified-token cache.
const maxVerified = 10000

// verifiedCache remembers tokens whose signature and issuer verified, by
// SHA-256 of the token, so that introspecting the same token again costs
// a hash and a map lookup instead of a signature verification. Entries
// are immutable claims; time and revocation are checked on every use.
type verifiedCache struct {
	mu sync.Mutex
	m  map[[32]byte]*Claims
}

func (v *verifiedCache) get(k [32]byte) *Claims {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.m[k]
}

func (v *verifiedCache) put(k [32]byte, c *Claims) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= maxVerified {
		v.m = make(map[[32]byte]*Claims, 1024)
	}
	v.m[k] = c
}

// claimsMap renders claims for introspection.
func claimsMap(c *Claims) map[string]any {
	m := make(map[string]any, 14)
	m["iss"], m["sub"], m["exp"], m["iat"], m["nbf"], m["jti"], m["client_id"] = c.Issuer, c.Subject, c.Expiry, c.IssuedAt, c.NotBefore, c.ID, c.ClientID
	if len(c.Audience) == 1 {
		m["aud"] = c.Audience[0]
	} else {
		m["aud"] = []string(c.Audience)
	}
	if c.Scope != "" {
		m["scope"] = c.Scope
	}
	if c.Cnf != nil {
		m["cnf"] = c.Cnf
	}
	if c.Act != nil {
		m["act"] = c.Act
	}
	if c.MayAct != nil {
		m["may_act"] = c.MayAct
	}
	return m
}

// unknownKeyReload is the least time between two key reloads caused by
// tokens with an unknown kid.
const unknownKeyReload = 2 * time.Second

// reloadForUnknownKey reloads the keys from the store when a token names
// a key this replica does not know (another replica created it, and its
// event has not been applied yet), at most once per unknownKeyReload so
// that forged kids cannot turn into store reads. It reports whether it
// reloaded.
func (s *Service) reloadForUnknownKey() bool {
	s.mu.Lock()
	if s.now().Sub(s.keysReloaded) < unknownKeyReload {
		s.mu.Unlock()
		return false
	}
	s.keysReloaded = s.now()
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.loadKeys(ctx); err != nil {
		s.log.Warn("sts: reloading signing keys failed", "error", err.Error())
		return false
	}
	return true
}
