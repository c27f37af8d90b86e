package passport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/identity"
)

// Events delivers verified watch-stream payloads (*identity.Source).
type Events interface {
	Subscribe(fn func(kind string, payload []byte)) (unsubscribe func())
}

// Config configures New.
type Config struct {
	// Audience is the trust domain name passports must be for. Required
	// (NewForSource fills it).
	Audience string
	// AuthorityURL is the authority's https URL; keys are fetched from
	// AuthorityURL + "/v1/passport/keys". Without it only SetKeys and
	// Events supply keys.
	AuthorityURL string
	// HTTPClient reaches the authority, trusting it. Required with
	// AuthorityURL.
	HTTPClient *http.Client
	// Events, if set, delivers key-set changes (kind "passport-keys").
	Events Events
	// Leeway tolerates clock skew on exp and iat; 0 means 5s.
	Leeway time.Duration
	// CacheSize bounds verified passports kept; 0 means 10000.
	CacheSize int
	// KeyRefreshInterval is the least time between key fetches caused by
	// unknown kids; 0 means 1s.
	KeyRefreshInterval time.Duration
	Logger             *slog.Logger
	Now                func() time.Time
}

// Verifier checks passports. It is safe for concurrent use.
type Verifier struct {
	cfg   Config
	now   func() time.Time
	log   *slog.Logger
	unsub func()

	seed maphash.Seed

	mu      sync.RWMutex
	keys    map[string]ed25519.PublicKey
	cache   map[uint64]cached
	headers map[string]string // accepted encoded headers → kid
	fetched time.Time
	fetchMu sync.Mutex // one fetch in flight
}

// cached is a verified passport, under a keyed 64-bit hash of its bytes;
// the bytes are compared in full on a hit.
type cached struct {
	raw string
	c   *Claims
	kid string
	exp int64
}

// Bounds.
const (
	maxKeys    = 256
	maxKeySet  = 256 << 10
	maxClaims  = 16 << 10
	defaultTTL = 5 * time.Second
)

// New returns a Verifier.
func New(cfg Config) (*Verifier, error) {
	if cfg.Audience == "" {
		return nil, errors.New("passport: Config.Audience is required")
	}
	if cfg.AuthorityURL != "" {
		u, err := url.Parse(cfg.AuthorityURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("passport: Config.AuthorityURL %q must be an https URL", cfg.AuthorityURL)
		}
		if cfg.HTTPClient == nil {
			return nil, errors.New("passport: Config.HTTPClient is required with AuthorityURL")
		}
		cfg.AuthorityURL = strings.TrimRight(cfg.AuthorityURL, "/")
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = defaultTTL
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 10000
	}
	if cfg.KeyRefreshInterval == 0 {
		cfg.KeyRefreshInterval = time.Second
	}
	v := &Verifier{cfg: cfg, now: cfg.Now, log: cfg.Logger, keys: map[string]ed25519.PublicKey{}, cache: map[uint64]cached{},
		headers: map[string]string{}, seed: maphash.MakeSeed()}
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Events != nil {
		v.unsub = cfg.Events.Subscribe(v.onEvent)
	}
	return v, nil
}

// NewForSource returns a Verifier that follows src's watch stream and
// fetches keys from src's authority over mTLS.
func NewForSource(src *identity.Source, cfg Config) (*Verifier, error) {
	if src == nil {
		return nil, errors.New("passport: NewForSource needs an identity.Source")
	}
	td := src.ID().TrustDomain()
	authority, err := spiffeid.FromSegments(td, "ward", "authority")
	if err != nil {
		return nil, err
	}
	if cfg.Audience == "" {
		cfg.Audience = td.Name()
	}
	if cfg.AuthorityURL == "" {
		cfg.AuthorityURL = src.AuthorityURL()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: src.ClientTLSConfig(identity.AuthorizeID(authority)), MaxIdleConnsPerHost: 2}}
	}
	cfg.Events = src
	return New(cfg)
}

// Close stops following the watch stream.
func (v *Verifier) Close() {
	if v.unsub != nil {
		v.unsub()
	}
}

func (v *Verifier) onEvent(kind string, payload []byte) {
	if kind != "passport-keys" {
		return
	}
	if err := v.SetKeys(payload); err != nil {
		v.log.Warn("passport: bad key-set event", "error", err)
	}
}

// SetKeys replaces the key set with a JWKS ({"keys":[…]}); only public
// Ed25519 keys with a kid and alg EdDSA are kept. Passports of keys no
// longer in the set stop verifying at once.
func (v *Verifier) SetKeys(jwks []byte) error {
	if len(jwks) > maxKeySet {
		return fmt.Errorf("%w: key set larger than %d bytes", ErrInvalid, maxKeySet)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		return fmt.Errorf("%w: key set: %v", ErrInvalid, err)
	}
	keys := map[string]ed25519.PublicKey{}
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if k.UnmarshalJSON(raw) != nil || k.KeyID == "" || k.Algorithm != string(jose.EdDSA) || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
			continue
		}
		pub, ok := k.Key.(ed25519.PublicKey)
		if !ok || len(keys) >= maxKeys {
			continue
		}
		keys[k.KeyID] = pub
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keys = keys
	clear(v.headers)
	for h, e := range v.cache {
		if _, ok := keys[e.kid]; !ok {
			delete(v.cache, h)
		}
	}
	return nil
}

// Verify checks a passport and returns its claims (shared: do not
// modify them).
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if raw == "" {
		return nil, ErrMissing
	}
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxSize)
	}
	sum := maphash.String(v.seed, raw)
	now := v.now()
	v.mu.RLock()
	e, hit := v.cache[sum]
	v.mu.RUnlock()
	// The seed is secret and random: nobody can aim at another passport's
	// hash, so the full comparison is no timing oracle.
	if hit && e.raw == raw {
		if now.Unix() < e.exp+int64(v.cfg.Leeway/time.Second) {
			return e.c, nil
		}
		return nil, ErrExpired
	}
	c, kid, err := v.verify(ctx, raw, now)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if _, ok := v.keys[kid]; ok {
		if len(v.cache) >= v.cfg.CacheSize {
			for h, x := range v.cache {
				if now.Unix() >= x.exp+int64(v.cfg.Leeway/time.Second) || len(v.cache) >= v.cfg.CacheSize {
					delete(v.cache, h)
				}
				if len(v.cache) < v.cfg.CacheSize-v.cfg.CacheSize/10 {
					break
				}
			}
		}
		v.cache[sum] = cached{raw: raw, c: c, kid: kid, exp: c.Expiry}
	}
	v.mu.Unlock()
	return c, nil
}

type header struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
}

func (v *Verifier) verify(ctx context.Context, raw string, now time.Time) (*Claims, string, error) {
	h64, rest, ok := strings.Cut(raw, ".")
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(s64, ".") {
		return nil, "", fmt.Errorf("%w: not a compact JWS", ErrInvalid)
	}
	v.mu.RLock()
	kid, known := v.headers[h64]
	v.mu.RUnlock()
	if !known {
		hb, err := base64.RawURLEncoding.DecodeString(h64)
		if err != nil {
			return nil, "", fmt.Errorf("%w: header is not base64url", ErrInvalid)
		}
		var h header
		if err := json.Unmarshal(hb, &h); err != nil {
			return nil, "", fmt.Errorf("%w: header is not JSON", ErrInvalid)
		}
		if h.Alg != "EdDSA" || h.Typ != JWSType || h.Kid == "" || h.Crit != nil {
			return nil, "", fmt.Errorf("%w: header must be alg EdDSA, typ %s, with a kid", ErrInvalid, JWSType)
		}
		kid = h.Kid
	}
	sig, err := base64.RawURLEncoding.DecodeString(s64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, "", fmt.Errorf("%w: bad signature encoding", ErrInvalid)
	}
	key, err := v.key(ctx, kid)
	if err != nil {
		return nil, "", err
	}
	if !ed25519.Verify(key, []byte(raw[:len(h64)+1+len(p64)]), sig) {
		return nil, "", fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	if !known { // a header that verified: skip its decoding next time
		v.mu.Lock()
		if _, ok := v.keys[kid]; ok && len(v.headers) < maxKeys {
			v.headers[h64] = kid
		}
		v.mu.Unlock()
	}
	pb, err := base64.RawURLEncoding.DecodeString(p64)
	if err != nil || len(pb) > maxClaims {
		return nil, "", fmt.Errorf("%w: payload", ErrInvalid)
	}
	var c Claims
	if err := json.Unmarshal(pb, &c); err != nil {
		return nil, "", fmt.Errorf("%w: claims are not JSON", ErrInvalid)
	}
	leeway := int64(v.cfg.Leeway / time.Second)
	switch n := now.Unix(); {
	case c.Audience != v.cfg.Audience:
		return nil, "", fmt.Errorf("%w: not for audience %s", ErrInvalid, v.cfg.Audience)
	case c.Subject == "" || c.ID == "" || c.AuthMethod == "":
		return nil, "", fmt.Errorf("%w: sub, jti and auth_method are required", ErrInvalid)
	case c.Expiry-c.IssuedAt > int64(MaxTTL/time.Second) || c.Expiry <= c.IssuedAt:
		return nil, "", fmt.Errorf("%w: lifetime beyond %s", ErrInvalid, MaxTTL)
	case n >= c.Expiry+leeway:
		return nil, "", ErrExpired
	case c.IssuedAt > n+leeway:
		return nil, "", fmt.Errorf("%w: issued in the future", ErrInvalid)
	}
	return &c, kid, nil
}

// key returns the key of kid, fetching the key set once (coalesced, at
// most once per KeyRefreshInterval) when kid is unknown.
func (v *Verifier) key(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	v.mu.RLock()
	k, ok := v.keys[kid]
	v.mu.RUnlock()
	if ok {
		return k, nil
	}
	if v.cfg.AuthorityURL == "" {
		return nil, ErrUnknownKey
	}
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	v.mu.RLock()
	k, ok = v.keys[kid]
	recent := v.now().Sub(v.fetched) < v.cfg.KeyRefreshInterval
	v.mu.RUnlock()
	if ok {
		return k, nil
	}
	if recent {
		return nil, ErrUnknownKey
	}
	if err := v.fetch(ctx); err != nil {
		return nil, err
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	if k, ok := v.keys[kid]; ok {
		return k, nil
	}
	return nil, ErrUnknownKey
}

func (v *Verifier) fetch(ctx context.Context) error {
	v.mu.Lock()
	v.fetched = v.now()
	v.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.AuthorityURL+"/v1/passport/keys", nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeySet+1))
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: the authority answered %d", ErrUnavailable, resp.StatusCode)
	}
	return v.SetKeys(bytes.TrimSpace(body))
}
