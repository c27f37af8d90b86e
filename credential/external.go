package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is a trusted external OpenID Connect issuer (a company IdP),
// whose JWTs the verifier accepts for Audience.
type Issuer struct {
	// URL is the issuer identifier, exactly as in the tokens' iss.
	URL string
	// Audience must be among the tokens' aud. Required.
	Audience string
	// JWKSURL is where the issuer publishes its keys; "" discovers it
	// from URL + "/.well-known/openid-configuration".
	JWKSURL string
}

// ExternalClaims are the verified standard claims of an external token,
// with every claim in Raw.
type ExternalClaims struct {
	Issuer   string
	Subject  string
	Audience []string
	Expiry   time.Time
	Raw      map[string]any
}

// ErrUnknownIssuer: the token's issuer is not configured.
var ErrUnknownIssuer = errors.New("credential: issuer not trusted")

// externalAlgs are the algorithms accepted from external issuers; the
// key's type must match (go-jose refuses a mismatch), so an RSA key
// cannot verify an HMAC.
var externalAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.ES256, jose.ES384, jose.EdDSA}

// issuerKeys caches one issuer's JWKS.
type issuerKeys struct {
	cfg     Issuer
	mu      sync.Mutex
	keys    map[string]jose.JSONWebKey
	fetched time.Time
	fetches int // for tests and metrics
}

func (v *Verifier) issuer(iss string) *issuerKeys {
	v.extOnce.Do(func() {
		v.external = map[string]*issuerKeys{}
		for _, is := range v.cfg.ExternalIssuers {
			v.external[strings.TrimRight(is.URL, "/")] = &issuerKeys{cfg: is}
		}
	})
	return v.external[strings.TrimRight(iss, "/")]
}

// VerifyExternal verifies a JWT of a configured external issuer: its
// signature with the issuer's key of that kid (the JWKS is fetched on
// first use and again on an unknown kid, at most once per
// KeyRefreshInterval), iss, aud, exp and nbf.
func (v *Verifier) VerifyExternal(ctx context.Context, raw string) (*ExternalClaims, error) {
	if len(raw) > maxTokenSize || strings.Count(raw, ".") != 2 {
		return nil, fmt.Errorf("%w: not a compact JWT", ErrInvalid)
	}
	tok, err := jwt.ParseSigned(raw, externalAlgs)
	if err != nil || len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	is := v.issuer(unverified.Issuer)
	if is == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownIssuer, clip(unverified.Issuer))
	}
	h := tok.Headers[0]
	key, err := v.externalKey(ctx, is, h.KeyID)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != "" && key.Algorithm != h.Algorithm {
		return nil, fmt.Errorf("%w: algorithm %s does not match the key's %s", ErrInvalid, h.Algorithm, key.Algorithm)
	}
	var std jwt.Claims
	all := map[string]any{}
	if err := tok.Claims(key.Key, &std, &all); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: unverified.Issuer, Time: v.now()}, v.cfg.Leeway); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if std.Expiry == nil {
		return nil, fmt.Errorf("%w: no exp", ErrInvalid)
	}
	if !slices.Contains(std.Audience, is.cfg.Audience) {
		return nil, fmt.Errorf("%w: not for audience %q", ErrInvalid, is.cfg.Audience)
	}
	return &ExternalClaims{Issuer: std.Issuer, Subject: std.Subject, Audience: std.Audience, Expiry: std.Expiry.Time(), Raw: all}, nil
}

func (v *Verifier) externalKey(ctx context.Context, is *issuerKeys, kid string) (jose.JSONWebKey, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if k, ok := is.keys[kid]; ok {
		return k, nil
	}
	if !is.fetched.IsZero() && v.now().Sub(is.fetched) < v.cfg.KeyRefreshInterval {
		return jose.JSONWebKey{}, fmt.Errorf("%w: unknown key %q of %s", ErrInvalid, clip(kid), is.cfg.URL)
	}
	is.fetched = v.now()
	is.fetches++
	keys, err := v.fetchIssuerKeys(ctx, is.cfg)
	if err != nil {
		return jose.JSONWebKey{}, err
	}
	is.keys = keys
	if k, ok := keys[kid]; ok {
		return k, nil
	}
	return jose.JSONWebKey{}, fmt.Errorf("%w: unknown key %q of %s", ErrInvalid, clip(kid), is.cfg.URL)
}

func (v *Verifier) fetchIssuerKeys(ctx context.Context, is Issuer) (map[string]jose.JSONWebKey, error) {
	jwksURL := is.JWKSURL
	if jwksURL == "" {
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := v.getJSON(ctx, v.externalClient(), strings.TrimRight(is.URL, "/")+"/.well-known/openid-configuration", &doc); err != nil {
			return nil, err
		}
		if strings.TrimRight(doc.Issuer, "/") != strings.TrimRight(is.URL, "/") {
			return nil, fmt.Errorf("%w: discovery document names issuer %q", ErrInvalid, clip(doc.Issuer))
		}
		jwksURL = doc.JWKSURI
	}
	if u, err := url.Parse(jwksURL); err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("%w: JWKS URL %q must be https", ErrUnavailable, clip(jwksURL))
	}
	var set jose.JSONWebKeySet
	if err := v.getJSON(ctx, v.externalClient(), jwksURL, &set); err != nil {
		return nil, err
	}
	keys := map[string]jose.JSONWebKey{}
	for _, k := range set.Keys {
		if k.IsPublic() && (k.Use == "" || k.Use == "sig") && len(keys) < 64 {
			keys[k.KeyID] = k
		}
	}
	return keys, nil
}

func (v *Verifier) getJSON(ctx context.Context, hc *http.Client, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("credential: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil || resp.StatusCode != http.StatusOK || len(body) > maxJWKSSize {
		return fmt.Errorf("%w: %s answered %d", ErrUnavailable, clip(u), resp.StatusCode)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, clip(u), err)
	}
	return nil
}

// externalClient reaches external issuers: Config.ExternalHTTPClient,
// else HTTPClient.
func (v *Verifier) externalClient() *http.Client {
	if v.cfg.ExternalHTTPClient != nil {
		return v.cfg.ExternalHTTPClient
	}
	return v.cfg.HTTPClient
}
