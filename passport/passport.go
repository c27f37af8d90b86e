package passport

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Wire constants.
const (
	// Header carries the passport.
	Header = "Ward-Passport"
	// JWSType is the JWS typ header of a passport.
	JWSType = "ward-passport+jwt"
	// MaxTTL bounds exp - iat.
	MaxTTL = 60 * time.Second
	// MaxSize bounds a compact passport in bytes.
	MaxSize = 8 << 10
)

// Errors callers branch on (errors.Is).
var (
	// ErrMissing: the request carries no passport.
	ErrMissing = errors.New("passport: missing")
	// ErrInvalid: malformed, wrongly signed, for another audience, or
	// otherwise not acceptable.
	ErrInvalid = errors.New("passport: invalid")
	// ErrExpired: past exp (with the skew allowance); errors.Is(err,
	// ErrInvalid) holds too.
	ErrExpired = fmt.Errorf("%w: expired", ErrInvalid)
	// ErrUnknownKey: signed by a key the authority does not publish;
	// errors.Is(err, ErrInvalid) holds too.
	ErrUnknownKey = fmt.Errorf("%w: unknown signing key", ErrInvalid)
	// ErrUnavailable: the key set could not be fetched.
	ErrUnavailable = errors.New("passport: keys unavailable")
)

// Claims are the contents of a passport.
type Claims struct {
	Subject          string   `json:"sub"`
	Issuer           string   `json:"iss"` // the external credential's issuer
	Tenant           string   `json:"tenant,omitempty"`
	Scope            string   `json:"scope,omitempty"` // space-separated
	Roles            []string `json:"roles,omitempty"`
	ClientID         string   `json:"client_id,omitempty"`
	AuthMethod       string   `json:"auth_method"` // apikey, jwt, oidc, introspection, mtls, anonymous
	AuthTime         int64    `json:"auth_time,omitempty"`
	ID               string   `json:"jti"`
	CorrelationID    string   `json:"cid"`
	Audience         string   `json:"aud"` // the trust domain
	IssuedAt         int64    `json:"iat"`
	Expiry           int64    `json:"exp"`
	TokenFingerprint string   `json:"tfp,omitempty"` // first 16 hex digits of the credential's SHA-256
	Gateway          string   `json:"gw,omitempty"`  // SPIFFE ID of the minting gateway
	Route            string   `json:"route,omitempty"`
}

// HasScope reports whether the passport carries scope.
func (c *Claims) HasScope(scope string) bool { return slices.Contains(strings.Fields(c.Scope), scope) }

// HasRole reports whether the passport carries role.
func (c *Claims) HasRole(role string) bool { return slices.Contains(c.Roles, role) }

// NewID returns a fresh jti: 128 random bits, base64url.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Signer mints passports with one Ed25519 key. Only the gateway has one.
type Signer struct {
	key    ed25519.PrivateKey
	kid    string
	header string // base64url of the fixed JWS header, with the trailing "."
}

// NewSigner returns a Signer for key; its kid is the RFC 7638 thumbprint.
func NewSigner(key ed25519.PrivateKey) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("passport: NewSigner needs an Ed25519 private key")
	}
	tp, err := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("passport: thumbprint: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	h, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{"EdDSA", kid, JWSType})
	return &Signer{key: key, kid: kid, header: base64.RawURLEncoding.EncodeToString(h) + "."}, nil
}

// KeyID is the signer's kid.
func (s *Signer) KeyID() string { return s.kid }

// PublicJWK is the public key to register with the authority.
func (s *Signer) PublicJWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: s.key.Public(), KeyID: s.kid, Algorithm: string(jose.EdDSA), Use: "sig"}
}

// Mint signs c. It refuses claims a verifier would refuse: no sub, jti,
// aud or auth_method, or a lifetime outside (0, 60 s].
func (s *Signer) Mint(c *Claims) (string, error) {
	switch {
	case c.Subject == "", c.ID == "", c.Audience == "", c.AuthMethod == "":
		return "", errors.New("passport: sub, jti, aud and auth_method are required")
	case c.IssuedAt == 0 || c.Expiry <= c.IssuedAt || c.Expiry-c.IssuedAt > int64(MaxTTL/time.Second):
		return "", errors.New("passport: lifetime must be in (0, 60s]")
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("passport: %w", err)
	}
	n := len(s.header) + base64.RawURLEncoding.EncodedLen(len(payload))
	buf := make([]byte, n, n+1+base64.RawURLEncoding.EncodedLen(ed25519.SignatureSize))
	copy(buf, s.header)
	base64.RawURLEncoding.Encode(buf[len(s.header):], payload)
	sig := ed25519.Sign(s.key, buf)
	buf = append(buf, '.')
	buf = base64.RawURLEncoding.AppendEncode(buf, sig)
	return string(buf), nil
}

type ctxKey struct{}

type ctxValue struct {
	raw    string
	claims *Claims
}

// NewContext returns ctx carrying a verified passport and its bytes.
func NewContext(ctx context.Context, raw string, c *Claims) context.Context {
	return context.WithValue(ctx, ctxKey{}, &ctxValue{raw: raw, claims: c})
}

// FromContext returns the verified claims a PEP stored; callers must not
// modify them.
func FromContext(ctx context.Context) (*Claims, bool) {
	v, ok := ctx.Value(ctxKey{}).(*ctxValue)
	if !ok {
		return nil, false
	}
	return v.claims, true
}

// RawFromContext returns the passport as received, for forwarding.
func RawFromContext(ctx context.Context) (string, bool) {
	v, ok := ctx.Value(ctxKey{}).(*ctxValue)
	if !ok {
		return "", false
	}
	return v.raw, true
}

// Transport forwards the passport of the request context on downstream
// calls: it sets Ward-Passport when the request has none. The caller is
// still authenticated by its own mTLS certificate.
type Transport struct {
	// Base sends the request; nil means http.DefaultTransport.
	Base http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	raw, ok := RawFromContext(r.Context())
	if !ok || r.Header.Get(Header) != "" {
		return base.RoundTrip(r)
	}
	r2 := r.Clone(r.Context())
	r2.Header.Set(Header, raw)
	return base.RoundTrip(r2)
}

// Client returns a copy of base whose requests forward the passport of
// their context.
func Client(base *http.Client) *http.Client {
	c := *base
	c.Transport = &Transport{Base: base.Transport}
	return &c
}
