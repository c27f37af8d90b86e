// Package sts is ward's OAuth 2.0 token service: registered clients get
// short-lived JWT access tokens with the client-credentials grant (RFC
// 6749), certificate-bound when the client authenticated with mTLS (RFC
// 8705); tokens and opaque API keys are introspected (RFC 7662) and
// revoked (RFC 7009); the signing keys are published as a JWKS (RFC 7517)
// and the endpoints in RFC 8414 metadata. The authority mounts Handler on
// its HTTPS server:
//
//	s, err := sts.New(ctx, sts.Config{Store: st, KMS: k, Issuer: publicURL, TrustDomain: td, OnRevoke: publish})
//	mux.Handle("/oauth2/", s.Handler(peer))
//	mux.Handle("/.well-known/", s.Handler(peer))
//
// Revocations are kept in memory (loaded from the store at New, updated by
// Revoke* and by ApplyRevocation for other replicas' revocations) until the
// revoked token would have expired anyway.
package sts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/internal/store"
)

// Errors callers branch on.
var (
	// ErrInvalidSpec: a client or API key specification is invalid.
	ErrInvalidSpec = errors.New("sts: invalid specification")
	// ErrInvalidCredential: a token, API key or client credential is
	// malformed, unknown, expired or revoked.
	ErrInvalidCredential = errors.New("sts: invalid credential")
)

// Grant types.
const (
	GrantClientCredentials = "client_credentials"
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
)

// Limits.
const (
	maxTTL     = 24 * time.Hour
	maxScopes  = 64
	maxBody    = 64 << 10
	defaultTTL = 10 * time.Minute
)

// Config configures New.
type Config struct {
	// Store holds clients, keys and revocations. Required.
	Store *store.Store
	// KMS seals the signing keys (aad "sts-key:<kid>"). Required.
	KMS kms.KMS
	// Issuer is the authority's public URL: the iss of every token.
	// Required.
	Issuer string
	// TrustDomain of the authority. Required.
	TrustDomain spiffeid.TrustDomain
	// Audience is the audience of tokens for which a client asks none;
	// "" means "ward".
	Audience string
	// DefaultTTL is the lifetime of tokens of clients without their own;
	// 0 means 10m; at most 24h.
	DefaultTTL time.Duration
	// RotateEvery is how long a key signs before RotateKeys replaces it;
	// 0 means 30 days.
	RotateEvery time.Duration
	// PublishLead is how long a new key is published before it may sign;
	// 0 means 1h (verifiers cache the JWKS for 5 minutes).
	PublishLead time.Duration
	// OnRevoke is called after every revocation (kind "token" with the
	// jti, "apikey" with the key ID, "client" with the client ID); nil
	// ignores them.
	OnRevoke func(ctx context.Context, kind, id string, expiresAt time.Time) error
	// OnIssue, if set, is called for every token issued (grant is
	// client_credentials or token-exchange), after it was signed.
	OnIssue func(grant string, c Claims)
	// Logger; nil discards.
	Logger *slog.Logger
	// Now; nil means time.Now.
	Now func() time.Time
}

// Service is the token service of one authority replica.
type Service struct {
	cfg  Config
	st   *store.Store
	log  *slog.Logger
	now  func() time.Time
	keys atomic.Pointer[keyRing]

	verified verifiedCache // tokens whose signature verified

	mu           sync.Mutex
	revoked      map[string]time.Time // jti → exp
	clients      map[string]time.Time // revoked client IDs → when
	clientCache  map[string]cachedClient
	keysReloaded time.Time // last reload for an unknown kid
}

// New loads (or, on first use, creates and activates) the signing keys and
// the revoked set.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.KMS == nil {
		return nil, errors.New("sts: Config.Store and Config.KMS are required")
	}
	u, err := url.Parse(cfg.Issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("sts: Config.Issuer %q must be an https URL", cfg.Issuer)
	}
	cfg.Issuer = strings.TrimRight(cfg.Issuer, "/")
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("sts: Config.TrustDomain is required")
	}
	if cfg.Audience == "" {
		cfg.Audience = "ward"
	}
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = defaultTTL
	}
	if cfg.DefaultTTL < time.Second || cfg.DefaultTTL > maxTTL {
		return nil, fmt.Errorf("sts: Config.DefaultTTL %v is outside [1s, 24h]", cfg.DefaultTTL)
	}
	s := &Service{cfg: cfg, st: cfg.Store, log: cfg.Logger, now: cfg.Now, revoked: map[string]time.Time{}, clients: map[string]time.Time{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.loadKeys(ctx); err != nil {
		return nil, err
	}
	revoked, err := s.st.ListRevokedTokens(ctx, s.now())
	if err != nil {
		return nil, fmt.Errorf("sts: load revocations: %w", err)
	}
	for _, r := range revoked {
		s.revoked[r.JTI] = r.ExpiresAt
	}
	return s, nil
}

// ApplyRevocation records a revocation made elsewhere (another replica).
func (s *Service) ApplyRevocation(kind, id string, expiresAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch kind {
	case "token":
		s.revoked[id] = expiresAt
	case "client":
		s.clients[id] = s.now()
	}
	// API keys are looked up in the store on every use.
	now := s.now()
	if len(s.revoked) > 1024 {
		for jti, exp := range s.revoked {
			if !exp.After(now) {
				delete(s.revoked, jti)
			}
		}
	}
}

// Revoked reports whether the token with jti is revoked.
func (s *Service) Revoked(jti string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.revoked[jti]
	return ok
}

func (s *Service) clientRevoked(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.clients[id]
	return ok
}

func (s *Service) notify(ctx context.Context, kind, id string, exp time.Time) error {
	s.ApplyRevocation(kind, id, exp)
	if s.cfg.OnRevoke == nil {
		return nil
	}
	return s.cfg.OnRevoke(ctx, kind, id, exp)
}
