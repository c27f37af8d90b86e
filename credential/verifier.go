package credential

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Errors callers branch on.
var (
	// ErrInvalid: malformed, wrongly signed, from another issuer or for
	// another audience, expired, or not yet valid.
	ErrInvalid = errors.New("credential: invalid token")
	// ErrRevoked: the token, its client or the API key was revoked.
	ErrRevoked = errors.New("credential: revoked")
	// ErrBindingMismatch: a certificate-bound token presented without the
	// certificate it is bound to.
	ErrBindingMismatch = errors.New("credential: token is bound to another client certificate")
	// ErrUnavailable: the authority could not be reached to check online.
	ErrUnavailable = errors.New("credential: authority unavailable")
)

// Events delivers verified watch-stream payloads (*identity.Source).
type Events interface {
	Subscribe(fn func(kind string, payload []byte)) (unsubscribe func())
}

// Config configures New.
type Config struct {
	// Issuer is the authority's public URL (the tokens' iss). Required.
	Issuer string
	// HTTPClient reaches the authority (trusting its bundle); for
	// introspection it must authenticate, with an SVID (identity's
	// ClientTLSConfig) or ClientID/ClientSecret. Required.
	HTTPClient *http.Client
	// ClientID and ClientSecret authenticate introspection when the
	// HTTPClient presents no SVID.
	ClientID, ClientSecret string
	// Audience, if set, must be among the token's aud.
	Audience string
	// Events, if set, delivers revocations at once.
	Events Events
	// KeyRefreshInterval is the least time between two JWKS fetches
	// caused by unknown kids; 0 means 30s.
	KeyRefreshInterval time.Duration
	// APIKeyCacheTTL is how long an introspected API key is trusted; 0
	// means 30s. Revocations on Events end it at once.
	APIKeyCacheTTL time.Duration
	// Leeway tolerates clock skew on exp and nbf; 0 means 30s.
	Leeway time.Duration
	// ExternalIssuers are trusted OpenID Connect issuers (VerifyExternal).
	ExternalIssuers []Issuer
	// ExternalHTTPClient fetches external issuers' discovery documents
	// and keys (usually trusting the system roots); nil means HTTPClient.
	ExternalHTTPClient *http.Client
	Logger             *slog.Logger
	Now                func() time.Time
}

// Claims are the verified claims of an access token.
type Claims struct {
	Issuer    string       `json:"iss"`
	Subject   string       `json:"sub"`
	Audience  jwt.Audience `json:"aud"`
	Expiry    int64        `json:"exp"`
	IssuedAt  int64        `json:"iat"`
	NotBefore int64        `json:"nbf"`
	ID        string       `json:"jti"`
	Scope     string       `json:"scope"`
	ClientID  string       `json:"client_id"`
	Cnf       *struct {
		X5tS256 string `json:"x5t#S256"`
	} `json:"cnf,omitempty"`
	Act *Actor `json:"act,omitempty"`
}

// Actor is one link of a delegation chain.
type Actor struct {
	Sub string `json:"sub"`
	Act *Actor `json:"act,omitempty"`
}

// HasScope reports whether the token carries scope.
func (c *Claims) HasScope(scope string) bool { return slices.Contains(strings.Fields(c.Scope), scope) }

// Verifier checks ward credentials. It is safe for concurrent use.
type Verifier struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	unsub func()

	mu          sync.Mutex
	keys        map[string]jose.JSONWebKey // by kid
	keysFetched time.Time
	revoked     map[string]time.Time // jti → until
	clients     map[string]time.Time // client_id → until
	apiKeys     map[[32]byte]apiKeyEntry

	extOnce  sync.Once
	external map[string]*issuerKeys // by issuer URL
}

type apiKeyEntry struct {
	info    map[string]any
	id      string
	expires time.Time
}

// Bounds.
const (
	maxTokenSize   = 8 << 10
	maxJWKSSize    = 256 << 10
	maxCached      = 10000
	maxRevocations = 100000
	apiKeyLen      = 5 + 16 + 1 + 43 + 1 + 8
)

// New returns a Verifier. It fetches nothing until first use.
func New(cfg Config) (*Verifier, error) {
	u, err := url.Parse(cfg.Issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("credential: Config.Issuer %q must be an https URL", cfg.Issuer)
	}
	cfg.Issuer = strings.TrimRight(cfg.Issuer, "/")
	if cfg.HTTPClient == nil {
		return nil, errors.New("credential: Config.HTTPClient is required")
	}
	if cfg.KeyRefreshInterval == 0 {
		cfg.KeyRefreshInterval = 30 * time.Second
	}
	if cfg.APIKeyCacheTTL == 0 {
		cfg.APIKeyCacheTTL = 30 * time.Second
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	for i, is := range cfg.ExternalIssuers {
		if u, err := url.Parse(is.URL); err != nil || u.Scheme != "https" || u.Host == "" || is.Audience == "" {
			return nil, fmt.Errorf("credential: Config.ExternalIssuers[%d]: an https URL and an Audience are required", i)
		}
	}
	v := &Verifier{cfg: cfg, log: cfg.Logger, now: cfg.Now, keys: map[string]jose.JSONWebKey{},
		revoked: map[string]time.Time{}, clients: map[string]time.Time{}, apiKeys: map[[32]byte]apiKeyEntry{}}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if v.now == nil {
		v.now = time.Now
	}
	if cfg.Events != nil {
		v.unsub = cfg.Events.Subscribe(v.onEvent)
	}
	return v, nil
}

// Close stops following the watch stream.
func (v *Verifier) Close() {
	if v.unsub != nil {
		v.unsub()
	}
}

// VerifyAccessToken verifies a JWT access token offline. cs is the TLS
// state of the request that presented it: a certificate-bound token
// (cnf.x5t#S256) is accepted only when the peer's certificate is the one
// it is bound to.
func (v *Verifier) VerifyAccessToken(ctx context.Context, raw string, cs *tls.ConnectionState) (*Claims, error) {
	if len(raw) > maxTokenSize || strings.Count(raw, ".") != 2 {
		return nil, fmt.Errorf("%w: not a compact JWT", ErrInvalid)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil || len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "at+jwt" {
		return nil, fmt.Errorf("%w: typ %q", ErrInvalid, typ)
	}
	key, err := v.key(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != h.Algorithm {
		return nil, fmt.Errorf("%w: algorithm %s does not match key %s", ErrInvalid, h.Algorithm, key.Algorithm)
	}
	var c Claims
	if err := tok.Claims(key.Key, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	now := v.now()
	leeway := int64(v.cfg.Leeway / time.Second)
	switch {
	case c.Issuer != v.cfg.Issuer:
		return nil, fmt.Errorf("%w: issuer %q", ErrInvalid, c.Issuer)
	case v.cfg.Audience != "" && !slices.Contains(c.Audience, v.cfg.Audience):
		return nil, fmt.Errorf("%w: not for audience %q", ErrInvalid, v.cfg.Audience)
	case c.Expiry+leeway <= now.Unix():
		return nil, fmt.Errorf("%w: expired", ErrInvalid)
	case c.NotBefore > now.Unix()+leeway:
		return nil, fmt.Errorf("%w: not yet valid", ErrInvalid)
	case c.ID == "":
		return nil, fmt.Errorf("%w: no jti", ErrInvalid)
	}
	if v.isRevoked(c.ID, c.ClientID) {
		return nil, ErrRevoked
	}
	if c.Cnf != nil {
		if cs == nil || len(cs.PeerCertificates) == 0 {
			return nil, fmt.Errorf("%w: no client certificate", ErrBindingMismatch)
		}
		sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
		if base64.RawURLEncoding.EncodeToString(sum[:]) != c.Cnf.X5tS256 {
			return nil, ErrBindingMismatch
		}
	}
	return &c, nil
}

// key returns the JWK of kid, fetching the JWKS when kid is unknown (at
// most once per KeyRefreshInterval).
func (v *Verifier) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	v.mu.Lock()
	k, ok := v.keys[kid]
	stale := v.now().Sub(v.keysFetched) >= v.cfg.KeyRefreshInterval
	v.mu.Unlock()
	if ok {
		return k, nil
	}
	if !stale {
		return jose.JSONWebKey{}, fmt.Errorf("%w: unknown key %q", ErrInvalid, clip(kid))
	}
	if err := v.fetchKeys(ctx); err != nil {
		return jose.JSONWebKey{}, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if k, ok := v.keys[kid]; ok {
		return k, nil
	}
	return jose.JSONWebKey{}, fmt.Errorf("%w: unknown key %q", ErrInvalid, clip(kid))
}

func (v *Verifier) fetchKeys(ctx context.Context) error {
	v.mu.Lock()
	v.keysFetched = v.now()
	v.mu.Unlock()
	var set jose.JSONWebKeySet
	if err := v.getJSON(ctx, v.cfg.HTTPClient, v.cfg.Issuer+"/.well-known/jwks.json", &set); err != nil {
		return err
	}
	keys := map[string]jose.JSONWebKey{}
	for _, k := range set.Keys {
		if k.KeyID == "" || !k.IsPublic() || (k.Algorithm != string(jose.EdDSA) && k.Algorithm != string(jose.ES256)) || (k.Use != "" && k.Use != "sig") {
			continue
		}
		keys[k.KeyID] = k
	}
	v.mu.Lock()
	v.keys = keys
	v.mu.Unlock()
	return nil
}

func (v *Verifier) isRevoked(jti, client string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, t := v.revoked[jti]
	_, c := v.clients[client]
	return t || c
}

// onEvent applies credential-revocation events from the watch stream.
func (v *Verifier) onEvent(kind string, payload []byte) {
	if kind != "credential-revocation" || len(payload) > 64<<10 {
		return
	}
	var p struct {
		Kind      string    `json:"kind"`
		ID        string    `json:"id"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if json.Unmarshal(payload, &p) != nil || p.ID == "" {
		return
	}
	v.Revoke(p.Kind, p.ID, p.ExpiresAt)
}

// Revoke records a revocation (kind "token" with a jti, "client" with a
// client ID, "apikey" with a key ID) until until.
func (v *Verifier) Revoke(kind, id string, until time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	if len(v.revoked)+len(v.clients) >= maxRevocations {
		for k, t := range v.revoked {
			if !t.After(now) {
				delete(v.revoked, k)
			}
		}
		for k, t := range v.clients {
			if !t.After(now) {
				delete(v.clients, k)
			}
		}
	}
	switch kind {
	case "token":
		v.revoked[id] = until
	case "client":
		v.clients[id] = until
	case "apikey":
		for h, e := range v.apiKeys {
			if e.id == id {
				delete(v.apiKeys, h)
			}
		}
	}
}

// Introspect asks the authority (RFC 7662) about any credential, API keys
// included; an active API key answer is cached for APIKeyCacheTTL. It
// returns the introspection answer of an active credential, ErrInvalid
// for an inactive one.
func (v *Verifier) Introspect(ctx context.Context, token string) (map[string]any, error) {
	if len(token) > maxTokenSize || token == "" {
		return nil, fmt.Errorf("%w: token too large or empty", ErrInvalid)
	}
	isKey := strings.HasPrefix(token, "ward_")
	sum := sha256.Sum256([]byte(token))
	if isKey {
		v.mu.Lock()
		e, ok := v.apiKeys[sum]
		v.mu.Unlock()
		if ok && v.now().Before(e.expires) {
			return e.info, nil
		}
	}
	form := url.Values{"token": {token}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.cfg.Issuer+"/oauth2/introspect", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if v.cfg.ClientID != "" {
		req.SetBasicAuth(url.QueryEscape(v.cfg.ClientID), url.QueryEscape(v.cfg.ClientSecret))
	}
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: introspection answered %d", ErrUnavailable, resp.StatusCode)
	}
	info := map[string]any{}
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, fmt.Errorf("%w: introspection: %v", ErrUnavailable, err)
	}
	if info["active"] != true {
		return nil, fmt.Errorf("%w: inactive", ErrInvalid)
	}
	if isKey {
		id := ""
		if len(token) == apiKeyLen {
			id = "wk_" + token[5:21] // ward_<16 hex id>_…
		}
		v.mu.Lock()
		if len(v.apiKeys) >= maxCached {
			clear(v.apiKeys)
		}
		v.apiKeys[sum] = apiKeyEntry{info: info, id: id, expires: v.now().Add(v.cfg.APIKeyCacheTTL)}
		v.mu.Unlock()
	}
	return info, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
