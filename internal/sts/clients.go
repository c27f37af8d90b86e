package sts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/internal/store"
)

// clientSecretPrefix starts every client secret.
const clientSecretPrefix = "wcs_"

var (
	nameRE  = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	scopeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9:._/-]{0,127}$`)
)

// ClientSpec describes a new OAuth client.
type ClientSpec struct {
	Name       string
	GrantTypes []string // default client_credentials
	Scopes     []string
	Audiences  []string
	AuthMethod string // default client_secret_basic
	TLSSubject string // tls_client_auth: the client certificate's SPIFFE ID
	JWKS       []byte // private_key_jwt: the client's public keys (a JWKS)
	TokenAlg   string // EdDSA (default) or ES256
	TokenTTL   time.Duration
}

func checkScopes(scopes []string) ([]string, error) {
	if len(scopes) > maxScopes {
		return nil, fmt.Errorf("%w: at most %d scopes", ErrInvalidSpec, maxScopes)
	}
	out := make([]string, 0, len(scopes))
	for _, sc := range scopes {
		if !scopeRE.MatchString(sc) {
			return nil, fmt.Errorf("%w: scope %q: want letters, digits and : . _ / -", ErrInvalidSpec, clip(sc))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	slices.Sort(out)
	return out, nil
}

// CreateClient registers a client; the secret ("" for tls_client_auth) is
// returned once and stored as a SHA-256 (it has 256 bits of entropy, so a
// fast hash is enough).
func (s *Service) CreateClient(ctx context.Context, spec ClientSpec) (store.OAuthClient, string, error) {
	if !nameRE.MatchString(spec.Name) {
		return store.OAuthClient{}, "", fmt.Errorf("%w: name %q must match ^[a-z][a-z0-9-]{0,62}$", ErrInvalidSpec, clip(spec.Name))
	}
	if len(spec.GrantTypes) == 0 {
		spec.GrantTypes = []string{GrantClientCredentials}
	}
	for _, g := range spec.GrantTypes {
		if g != GrantClientCredentials && g != GrantTokenExchange {
			return store.OAuthClient{}, "", fmt.Errorf("%w: grant type %q is not supported (client_credentials, %s)", ErrInvalidSpec, clip(g), GrantTokenExchange)
		}
	}
	scopes, err := checkScopes(spec.Scopes)
	if err != nil {
		return store.OAuthClient{}, "", err
	}
	auds, err := checkScopes(spec.Audiences)
	if err != nil {
		return store.OAuthClient{}, "", fmt.Errorf("%w (audiences)", err)
	}
	if spec.AuthMethod == "" {
		spec.AuthMethod = store.AuthClientSecretBasic
	}
	if spec.TokenAlg == "" {
		spec.TokenAlg = AlgEdDSA
	}
	if spec.TokenAlg != AlgEdDSA && spec.TokenAlg != AlgES256 {
		return store.OAuthClient{}, "", fmt.Errorf("%w: token alg %q: want EdDSA or ES256", ErrInvalidSpec, clip(spec.TokenAlg))
	}
	if spec.TokenTTL != 0 && (spec.TokenTTL < time.Second || spec.TokenTTL > maxTTL) {
		return store.OAuthClient{}, "", fmt.Errorf("%w: token ttl must lie in [1s, 24h]", ErrInvalidSpec)
	}
	var idb [12]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return store.OAuthClient{}, "", err
	}
	c := store.OAuthClient{
		ID: "wc_" + hex.EncodeToString(idb[:]), Name: spec.Name, GrantTypes: spec.GrantTypes, Scopes: scopes,
		Audiences: auds, AuthMethod: spec.AuthMethod, TokenAlg: spec.TokenAlg, TokenTTL: spec.TokenTTL, CreatedAt: s.now().UTC(),
	}
	var secret string
	switch spec.AuthMethod {
	case store.AuthClientSecretBasic, store.AuthClientSecretPost:
		if spec.TLSSubject != "" || spec.JWKS != nil {
			return store.OAuthClient{}, "", fmt.Errorf("%w: a TLS subject or JWKS needs auth method tls_client_auth or private_key_jwt", ErrInvalidSpec)
		}
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return store.OAuthClient{}, "", err
		}
		secret = clientSecretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
		sum := sha256.Sum256([]byte(secret))
		c.SecretHash = sum[:]
	case store.AuthTLSClient:
		id, err := spiffeid.FromString(spec.TLSSubject)
		if err != nil || id.TrustDomain() != s.cfg.TrustDomain {
			return store.OAuthClient{}, "", fmt.Errorf("%w: tls_client_auth needs the SPIFFE ID of a workload of %s, got %q", ErrInvalidSpec, s.cfg.TrustDomain, clip(spec.TLSSubject))
		}
		c.TLSSubject = id.String()
	case store.AuthPrivateKeyJWT:
		if _, err := parseClientKeys(spec.JWKS); err != nil {
			return store.OAuthClient{}, "", fmt.Errorf("%w: private_key_jwt: %v", ErrInvalidSpec, err)
		}
		c.JWKS = spec.JWKS
	default:
		return store.OAuthClient{}, "", fmt.Errorf("%w: auth method %q: want client_secret_basic, client_secret_post, private_key_jwt or tls_client_auth", ErrInvalidSpec, clip(spec.AuthMethod))
	}
	if err := s.st.CreateOAuthClient(ctx, c); err != nil {
		return store.OAuthClient{}, "", fmt.Errorf("sts: create client %q: %w", spec.Name, err)
	}
	return c, secret, nil
}

// RevokeClient revokes a client: it gets no new token, and its tokens are
// refused.
func (s *Service) RevokeClient(ctx context.Context, id string) error {
	if !strings.HasPrefix(id, "wc_") || len(id) != 27 {
		return fmt.Errorf("sts: client %q: %w", clip(id), store.ErrNotFound)
	}
	if err := s.st.RevokeOAuthClient(ctx, id, s.now().UTC()); err != nil {
		return err
	}
	return s.notify(ctx, "client", id, s.now().Add(maxTTL))
}

// authenticateSecret checks a client ID and secret.
func (s *Service) authenticateSecret(ctx context.Context, id, secret string, method string) (store.OAuthClient, error) {
	if !strings.HasPrefix(id, "wc_") || len(id) != 27 || !strings.HasPrefix(secret, clientSecretPrefix) || len(secret) > 128 {
		return store.OAuthClient{}, errBadClient
	}
	c, err := s.client(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.OAuthClient{}, errBadClient
	}
	if err != nil {
		return store.OAuthClient{}, err
	}
	sum := sha256.Sum256([]byte(secret))
	if !sameHash(c.SecretHash, sum[:]) || c.RevokedAt != nil || s.clientRevoked(c.ID) {
		return store.OAuthClient{}, errBadClient
	}
	if c.AuthMethod != method {
		return store.OAuthClient{}, errBadClient
	}
	return c, nil
}

var errBadClient = errors.New("sts: client authentication failed")

func sameHash(a, b []byte) bool {
	return len(a) == sha256.Size && subtle.ConstantTimeCompare(a, b) == 1
}

// clientCacheTTL is how long a client record is reused without reading
// the store. Revocations do not wait for it: they are checked in the
// in-memory revoked set, which every replica updates from the event log.
const clientCacheTTL = 10 * time.Second

type cachedClient struct {
	c  store.OAuthClient
	at time.Time
}

// client returns a client record, from the cache when fresh.
func (s *Service) client(ctx context.Context, id string) (store.OAuthClient, error) {
	now := s.now()
	s.mu.Lock()
	e, ok := s.clientCache[id]
	s.mu.Unlock()
	if ok && now.Sub(e.at) < clientCacheTTL {
		return e.c, nil
	}
	c, err := s.st.GetOAuthClient(ctx, id)
	if err != nil {
		return c, err
	}
	s.mu.Lock()
	if s.clientCache == nil || len(s.clientCache) >= maxCachedClients {
		s.clientCache = map[string]cachedClient{}
	}
	s.clientCache[id] = cachedClient{c: c, at: now}
	s.mu.Unlock()
	return c, nil
}

// maxCachedClients bounds the client cache.
const maxCachedClients = 10000
