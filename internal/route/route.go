// Package route is the wire form of a gateway route, shared by the
// authority (which validates and stores routes) and the gateway (which
// loads and serves them), so the two cannot drift apart.
package route

import "time"

// Credential kinds a route may accept.
const (
	CredAPIKey        = "apikey"        // ward API keys, introspected (cached)
	CredJWT           = "jwt"           // ward JWT access tokens, verified offline
	CredOIDC          = "oidc"          // JWTs of configured external OpenID Connect issuers
	CredIntrospection = "introspection" // opaque OAuth tokens, introspected
	CredMTLS          = "mtls"          // partner client certificates
)

// Kinds are all credential kinds; Default those a route accepts when it
// names none (partner certificates must be asked for).
var (
	Kinds   = []string{CredAPIKey, CredJWT, CredOIDC, CredIntrospection, CredMTLS}
	Default = []string{CredAPIKey, CredJWT, CredOIDC, CredIntrospection}
)

// Route is one entry of the route table: what the admin API stores
// (PUT /v1/routes/{name}) and gateways load (GET /v1/gateway/routes).
type Route struct {
	Name        string     `json:"name"`
	Host        string     `json:"host"`
	Prefix      string     `json:"prefix"`
	Service     string     `json:"service"`
	Upstream    string     `json:"upstream"`
	Credentials []string   `json:"credentials"`
	Scopes      []string   `json:"scopes"`
	Rate        Rate       `json:"rate"`
	Anonymous   bool       `json:"anonymous"`
	Exposes     []Exposure `json:"exposes"`
	Timeout     string     `json:"timeout"`
	Version     int64      `json:"version"`
	// Who last set the route, and when (the authority's record).
	UpdatedBy string     `json:"updated_by,omitempty"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
}

// Rate is a route's post-authentication rate limit per caller; zero
// values mean the gateway's defaults.
type Rate struct {
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst"`
}

// Exposure is a resource of the upstream and the actions the route
// exposes.
type Exposure struct {
	Resource string   `json:"resource"`
	Actions  []string `json:"actions"`
}

// Table is the answer of GET /v1/gateway/routes.
type Table struct {
	Version int64   `json:"version"`
	Routes  []Route `json:"routes"`
}
