package store

import "time"

// OAuth client authentication methods (RFC 7591 names).
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt"
	AuthTLSClient         = "tls_client_auth"
)

// OAuthClient is a registered OAuth 2.0 client of the token service.
type OAuthClient struct {
	ID         string   // client_id: "wc_" + 24 hex characters
	Name       string   // unique, ^[a-z][a-z0-9-]{0,62}$
	GrantTypes []string // e.g. client_credentials, urn:ietf:params:oauth:grant-type:token-exchange
	Scopes     []string // the scopes it may ask for
	Audiences  []string // the audiences it may ask for; empty: only the default audience
	AuthMethod string   // one of the Auth* constants
	SecretHash []byte   // SHA-256 of the client secret; nil when it has none
	TLSSubject string   // tls_client_auth: the SPIFFE ID its client certificate must carry
	JWKS       []byte   // private_key_jwt: its public keys (JWKS JSON)
	TokenAlg   string   // "EdDSA" (default) or "ES256"
	TokenTTL   time.Duration
	CreatedAt  time.Time
	RevokedAt  *time.Time
}

// APIKey is an opaque key for an external API consumer. Only a hash of
// the key is stored.
type APIKey struct {
	ID        string // "wk_" + 16 hex characters; also the key's visible prefix part
	Hash      []byte // SHA-256 of the whole key
	Subject   string
	Tenant    string
	Scopes    []string
	Metadata  map[string]string
	CreatedAt time.Time
	ExpiresAt *time.Time // nil: until revoked
	RevokedAt *time.Time
}

// RevokedToken records a revoked access token (by its jti) until it would
// have expired anyway.
type RevokedToken struct {
	JTI       string
	ClientID  string
	ExpiresAt time.Time // the token's exp: the record can go after it
	RevokedAt time.Time
}

// Token-service signing key states: a key is published (next) before it
// signs (active), and kept published (retiring) until every token it
// signed has expired (retired).
const (
	KeyStateNext     = "next"
	KeyStateActive   = "active"
	KeyStateRetiring = "retiring"
	KeyStateRetired  = "retired"
)

// SigningKey is a token-service signing key.
type SigningKey struct {
	ID            string // kid: RFC 7638 thumbprint
	Alg           string // "EdDSA" or "ES256"
	KeyCiphertext []byte // PKCS#8 private key sealed by the KMS
	PublicJWK     []byte // the public JWK (JSON)
	State         string // one of the KeyState* constants
	CreatedAt     time.Time
	ActivatedAt   *time.Time
	RetiredAt     *time.Time // when it left the active state
}
