package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/singleflight"

	"github.com/wardsec/ward/credential"
)

// Principal is an authenticated external caller: what the passport says.
type Principal struct {
	Subject     string
	Issuer      string
	Tenant      string
	Scope       string
	Roles       []string
	ClientID    string
	Method      string // a Cred* kind
	AuthTime    int64
	Expiry      time.Time // zero: no expiry of its own (API keys without one)
	Fingerprint string    // of the credential: first 16 hex digits of its SHA-256

	// What a revocation event names.
	jti, keyID string
}

func (p *Principal) hasScope(s string) bool {
	for _, f := range strings.Fields(p.Scope) {
		if f == s {
			return true
		}
	}
	return false
}

// Errors of the credential chain.
var (
	errNoCredential   = errors.New("no credential")
	errMalformed      = errors.New("malformed credential")
	errNotAccepted    = errors.New("credential kind not accepted on this route")
	errUnknownIssuer  = errors.New("token issuer not trusted")
	errCredentialSize = errors.New("credential too large")
)

// maxCredential bounds a presented credential.
const maxCredential = 8 << 10

// Verifier is what the chain needs from credential.Verifier.
type Verifier interface {
	VerifyAccessToken(ctx context.Context, raw string, cs *tls.ConnectionState) (*credential.Claims, error)
	VerifyExternal(ctx context.Context, raw string) (*credential.ExternalClaims, error)
	Introspect(ctx context.Context, token string) (map[string]any, error)
}

var _ Verifier = (*credential.Verifier)(nil)

// presented is the credential of a request: a bearer token or API key.
type presented struct {
	token string
	kind  string // CredAPIKey, CredJWT, CredOIDC, CredIntrospection
}

// extract finds the request's credential: "Authorization: Bearer T" or
// "X-Api-Key: ward_…". Two of them, or two values of one, are refused.
func extract(r *http.Request, authorityIssuer string, isExternal func(string) bool) (presented, error) {
	authz := r.Header.Values("Authorization")
	keys := r.Header.Values("X-Api-Key")
	switch {
	case len(authz)+len(keys) == 0:
		return presented{}, errNoCredential
	case len(authz)+len(keys) > 1:
		return presented{}, fmt.Errorf("%w: more than one credential", errMalformed)
	}
	var tok string
	if len(keys) == 1 {
		tok = strings.TrimSpace(keys[0])
	} else {
		scheme, rest, ok := strings.Cut(authz[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return presented{}, fmt.Errorf("%w: expected Authorization: Bearer", errMalformed)
		}
		tok = strings.TrimSpace(rest)
	}
	switch {
	case tok == "":
		return presented{}, fmt.Errorf("%w: empty", errMalformed)
	case len(tok) > maxCredential:
		return presented{}, errCredentialSize
	case strings.HasPrefix(tok, "ward_"):
		return presented{token: tok, kind: CredAPIKey}, nil
	case strings.Count(tok, ".") == 2:
		iss, err := unverifiedIssuer(tok)
		if err != nil {
			return presented{}, err
		}
		switch {
		case iss == authorityIssuer:
			return presented{token: tok, kind: CredJWT}, nil
		case isExternal(iss):
			return presented{token: tok, kind: CredOIDC}, nil
		}
		return presented{}, errUnknownIssuer
	}
	return presented{token: tok, kind: CredIntrospection}, nil
}

// unverifiedIssuer reads a JWT's iss only to pick its verifier; nothing
// else is trusted before the signature is checked.
func unverifiedIssuer(tok string) (string, error) {
	parts := strings.SplitN(tok, ".", 3)
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("%w: payload is not base64url", errMalformed)
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", fmt.Errorf("%w: payload is not a JSON object", errMalformed)
	}
	return strings.TrimRight(c.Iss, "/"), nil
}

func fingerprint(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:8])
}

// verify runs the credential through its verifier and maps the answer to
// a Principal.
func verify(ctx context.Context, v Verifier, p presented, cs *tls.ConnectionState, authorityIssuer string) (*Principal, error) {
	fp := fingerprint(p.token)
	switch p.kind {
	case CredJWT:
		c, err := v.VerifyAccessToken(ctx, p.token, cs)
		if err != nil {
			return nil, err
		}
		return &Principal{Subject: c.Subject, Issuer: c.Issuer, Scope: c.Scope, ClientID: c.ClientID, Method: CredJWT,
			AuthTime: c.IssuedAt, Expiry: time.Unix(c.Expiry, 0), Fingerprint: fp, jti: c.ID}, nil
	case CredOIDC:
		c, err := v.VerifyExternal(ctx, p.token)
		if err != nil {
			return nil, err
		}
		pr := &Principal{Subject: c.Subject, Issuer: c.Issuer, Method: CredOIDC, Expiry: c.Expiry, Fingerprint: fp,
			Scope: stringClaim(c.Raw, "scope"), Tenant: stringClaim(c.Raw, "tenant"), ClientID: firstString(c.Raw, "azp", "client_id"),
			Roles: stringsClaim(c.Raw, "roles"), AuthTime: int64Claim(c.Raw, "auth_time")}
		if pr.AuthTime == 0 {
			pr.AuthTime = int64Claim(c.Raw, "iat")
		}
		return pr, nil
	case CredAPIKey, CredIntrospection:
		info, err := v.Introspect(ctx, p.token)
		if err != nil {
			return nil, err
		}
		pr := &Principal{Subject: stringClaim(info, "sub"), Issuer: authorityIssuer, Method: p.kind, Fingerprint: fp,
			Scope: stringClaim(info, "scope"), Tenant: stringClaim(info, "tenant"), ClientID: stringClaim(info, "client_id"),
			Roles: stringsClaim(info, "roles"), AuthTime: int64Claim(info, "iat"), jti: stringClaim(info, "jti"), keyID: stringClaim(info, "key_id")}
		if iss := stringClaim(info, "iss"); iss != "" {
			pr.Issuer = iss
		}
		if exp := int64Claim(info, "exp"); exp > 0 {
			pr.Expiry = time.Unix(exp, 0)
		}
		if pr.Subject == "" {
			return nil, fmt.Errorf("%w: introspection gave no subject", credential.ErrInvalid)
		}
		return pr, nil
	}
	return nil, errMalformed
}

// mtlsPrincipal is the caller of a partner client certificate (verified
// by the listener against the partner CAs): its SPIFFE ID, else its
// subject common name.
func mtlsPrincipal(cert *x509.Certificate) *Principal {
	sub := cert.Subject.CommonName
	if id, err := x509svid.IDFromCert(cert); err == nil {
		sub = id.String()
	}
	sum := sha256.Sum256(cert.Raw)
	return &Principal{Subject: sub, Issuer: cert.Issuer.String(), Method: CredMTLS, Expiry: cert.NotAfter,
		Fingerprint: hex.EncodeToString(sum[:8]), ClientID: cert.Subject.CommonName}
}

func stringClaim(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func firstString(m map[string]any, keys ...string) string {
	for _, k := range keys {
		if s := stringClaim(m, k); s != "" {
			return s
		}
	}
	return ""
}

func int64Claim(m map[string]any, k string) int64 {
	f, _ := m[k].(float64)
	return int64(f)
}

// stringsClaim reads a claim that is an array of strings or one
// space-separated string; at most 64 values.
func stringsClaim(m map[string]any, k string) []string {
	var out []string
	switch v := m[k].(type) {
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok && s != "" {
				out = append(out, s)
			}
		}
	case string:
		out = strings.Fields(v)
	}
	if len(out) > 64 {
		out = out[:64]
	}
	return out
}

// credCache caches verification results under a hash of the credential
// (never the credential) and the scopes the route asks for. A positive
// entry lives until the credential's own expiry or maxTTL, whichever comes
// first; a negative one negTTL. Concurrent checks of one key are
// coalesced; revocations evict at once.
type credCache struct {
	maxTTL, negTTL time.Duration
	max, maxNeg    int
	now            func() time.Time

	group singleflight.Group
	mu    sync.Mutex
	pos   map[[32]byte]posEntry
	neg   map[[32]byte]negEntry

	hits, misses, coalesced, evictions func()
}

type posEntry struct {
	p       *Principal
	expires time.Time
}

type negEntry struct {
	err     error
	expires time.Time
}

func newCredCache(maxTTL, negTTL time.Duration, max, maxNeg int, now func() time.Time) *credCache {
	nop := func() {}
	return &credCache{maxTTL: maxTTL, negTTL: negTTL, max: max, maxNeg: maxNeg, now: now,
		pos: map[[32]byte]posEntry{}, neg: map[[32]byte]negEntry{}, hits: nop, misses: nop, coalesced: nop, evictions: nop}
}

// cacheKey hashes the credential with the scopes asked for.
func cacheKey(tok string, scopes []string) [32]byte {
	h := sha256.New()
	h.Write([]byte(tok))
	for _, s := range scopes {
		h.Write([]byte{0})
		h.Write([]byte(s))
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// get returns the cached result for key, or runs check once for all
// concurrent callers of key and caches its result. Errors that say the
// credential is bad are cached briefly; an unavailable authority is not.
func (c *credCache) get(key [32]byte, check func() (*Principal, error)) (*Principal, error) {
	now := c.now()
	c.mu.Lock()
	if e, ok := c.pos[key]; ok {
		if now.Before(e.expires) {
			c.mu.Unlock()
			c.hits()
			return e.p, nil
		}
		delete(c.pos, key)
	}
	if e, ok := c.neg[key]; ok {
		if now.Before(e.expires) {
			c.mu.Unlock()
			c.hits()
			return nil, e.err
		}
		delete(c.neg, key)
	}
	c.mu.Unlock()
	c.misses()
	v, err, shared := c.group.Do(string(key[:]), func() (any, error) {
		p, err := check()
		c.store(key, p, err)
		return p, err
	})
	if shared {
		c.coalesced()
	}
	if err != nil {
		return nil, err
	}
	return v.(*Principal), nil
}

func (c *credCache) store(key [32]byte, p *Principal, err error) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if errors.Is(err, credential.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		if len(c.neg) >= c.maxNeg {
			sweep(c.neg, now, c.maxNeg, func(e negEntry) time.Time { return e.expires })
		}
		c.neg[key] = negEntry{err: err, expires: now.Add(c.negTTL)}
		return
	}
	exp := now.Add(c.maxTTL)
	if !p.Expiry.IsZero() && p.Expiry.Before(exp) {
		exp = p.Expiry
	}
	if !exp.After(now) {
		return
	}
	if len(c.pos) >= c.max {
		sweep(c.pos, now, c.max, func(e posEntry) time.Time { return e.expires })
	}
	c.pos[key] = posEntry{p: p, expires: exp}
}

// sweep drops expired entries, then arbitrary ones until a tenth is free.
func sweep[E any](m map[[32]byte]E, now time.Time, max int, expires func(E) time.Time) {
	for k, e := range m {
		if !now.Before(expires(e)) {
			delete(m, k)
		}
	}
	for k := range m {
		if len(m) < max-max/10 {
			return
		}
		delete(m, k)
	}
}

// revoke evicts every entry of a revoked token (jti), client or API key.
func (c *credCache) revoke(kind, id string) {
	if id == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.pos {
		var hit bool
		switch kind {
		case "token":
			hit = e.p.jti == id
		case "client":
			hit = e.p.ClientID == id
		case "apikey":
			hit = e.p.keyID == id || (e.p.Method == CredAPIKey && e.p.ClientID == id)
		}
		if hit {
			delete(c.pos, k)
			c.evictions()
		}
	}
}

func (c *credCache) size() (pos, neg int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pos), len(c.neg)
}
