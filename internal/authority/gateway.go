package authority

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/catalog"
	"github.com/wardsec/ward/internal/route"
	"github.com/wardsec/ward/internal/store"
)

// The edge gateway's side of the authority: bootstrap tokens of ward
// components (so that `ward gateway run` obtains and renews its SVID
// spiffe://<td>/ward/gateway like any workload), the route table every
// gateway loads (and the catalogue grants routes record), and the
// passport keys gateways register.

// Event kinds of this file.
const (
	// kindRoutes: the route table changed, {"version": N}; sent only to
	// gateway watch streams.
	kindRoutes = "routes"
	// kindPassportKeys: the passport key set changed, {"keys": [jwk…]};
	// sent to every watch stream (services verify passports).
	kindPassportKeys = "passport-keys"
)

// components may obtain SVIDs with a component bootstrap token.
var components = map[string]bool{"gateway": true, "agent": true, "audit": true}

// componentSVIDTTL is the lifetime of a component SVID obtained or renewed
// over the API.
const componentSVIDTTL = time.Hour

// Bounds of the gateway tables.
const (
	maxRoutes        = 1000
	maxPassportKeys  = 64
	maxPassportAhead = 48 * time.Hour
)

// hostRE is a host name in a per-host component identity: one DNS label,
// which is also a NATS subject token.
var hostRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// validComponent reports whether name is a component that may hold a
// bootstrap token: gateway, audit, agent, or agent/<host> (an agent bound
// to one host, which may publish only that host's audit events).
func validComponent(name string) bool {
	base, host, perHost := strings.Cut(name, "/")
	if !components[base] {
		return false
	}
	return !perHost || (base == "agent" && hostRE.MatchString(host))
}

// componentID is spiffe://<td>/ward/<name> (name may be agent/<host>).
func (a *Authority) componentID(name string) spiffeid.ID {
	id, _ := spiffeid.FromSegments(a.td, append([]string{"ward"}, strings.Split(name, "/")...)...)
	return id
}

// gatewayPeer authenticates a request as a gateway (mTLS,
// spiffe://<td>/ward/gateway).
func (a *Authority) gatewayPeer(r *http.Request) (peer, error) {
	p, err := a.requirePeer(r)
	if err != nil {
		return peer{}, err
	}
	if p.id != a.componentID("gateway") {
		return peer{}, errForbiddenIdentity(fmt.Sprintf("%s is not a gateway identity (spiffe://%s/ward/gateway)", p.id, a.td.Name()))
	}
	return p, nil
}

// CreateComponentToken makes a bootstrap token for a ward component
// ("gateway"), valid for ttl, and returns it (only its hash is stored).
func (a *Authority) CreateComponentToken(ctx context.Context, component string, ttl time.Duration) (string, error) {
	t, token, err := a.createComponentToken(ctx, component, ttl)
	if err == nil {
		a.log.InfoContext(ctx, "component bootstrap token created", "id", t.ID, "component", component, "token_fp", tokenFingerprint(token))
	}
	return token, err
}

func (a *Authority) createComponentToken(ctx context.Context, component string, ttl time.Duration) (store.ComponentToken, string, error) {
	if !validComponent(component) {
		return store.ComponentToken{}, "", errNotFound(fmt.Sprintf("no component %s (components that take bootstrap tokens: gateway, agent, audit)", quote(component)))
	}
	if ttl < time.Minute || ttl > 720*time.Hour {
		return store.ComponentToken{}, "", errBadRequest("ttl must be between 1m and 720h")
	}
	token, hash, err := newToken(bootstrapTokenPrefix)
	if err != nil {
		return store.ComponentToken{}, "", err
	}
	id, err := randomHex(8)
	if err != nil {
		return store.ComponentToken{}, "", err
	}
	now := a.now().UTC()
	exp := now.Add(ttl)
	t := store.ComponentToken{ID: "cbt-" + id, Component: component, Hash: hash, CreatedAt: now, ExpiresAt: &exp}
	if err := a.st.CreateComponentToken(ctx, t); err != nil {
		return store.ComponentToken{}, "", err
	}
	return t, token, nil
}

// POST /v1/components/{component}/bootstrap-token {"ttl":"24h"}
func (a *Authority) handleCreateComponentToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		TTL  string `json:"ttl"`
		Host string `json:"host"`
	}
	if err := decodeJSON(r, &req, true); err != nil {
		return err
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			return errBadRequest(fmt.Sprintf("ttl %s is not a duration such as 24h", quote(req.TTL)))
		}
		ttl = d
	}
	component := r.PathValue("component")
	if req.Host != "" {
		if component != "agent" || !hostRE.MatchString(req.Host) {
			return errBadRequest("host binds an agent to one host: only for component agent, and one lower-case DNS label")
		}
		component += "/" + req.Host
	}
	t, token, err := a.createComponentToken(r.Context(), component, ttl)
	if err != nil {
		return err
	}
	a.log.InfoContext(r.Context(), "component bootstrap token created", "id", t.ID, "component", component, "token_fp", tokenFingerprint(token), "by", p.id)
	return writeJSON(w, http.StatusCreated, map[string]any{"id": t.ID, "component": component,
		"spiffe_id": a.componentID(component).String(), "token": token, "expires_at": t.ExpiresAt})
}

// GET /v1/components/bootstrap-tokens
func (a *Authority) handleListComponentTokens(w http.ResponseWriter, r *http.Request, _ *principal) error {
	list, err := a.st.ListComponentTokens(r.Context())
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(list))
	for _, t := range list {
		out = append(out, map[string]any{"id": t.ID, "component": t.Component, "created_at": t.CreatedAt.UTC(),
			"expires_at": utcPtr(t.ExpiresAt), "revoked_at": utcPtr(t.RevokedAt)})
	}
	return writeJSON(w, http.StatusOK, out)
}

// POST /v1/components/bootstrap-tokens/{id}/revoke
func (a *Authority) handleRevokeComponentToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	if !validID(id) {
		return errNotFound("no such component token")
	}
	at := a.now().UTC()
	if err := a.st.RevokeComponentToken(r.Context(), id, at); err != nil {
		if isNotFound(err) {
			return errNotFound(fmt.Sprintf("component token %s does not exist", quote(id)))
		}
		return err
	}
	a.log.InfoContext(r.Context(), "component bootstrap token revoked", "id", id, "by", p.id)
	return writeJSON(w, http.StatusOK, map[string]any{"id": id, "revoked_at": at})
}

// componentBootstrap looks the request's bearer token up among component
// tokens: ok is false when it is not one (the caller then tries service
// tokens, which answer every failure with the same 401).
func (a *Authority) componentBootstrap(r *http.Request) (store.ComponentToken, bool, error) {
	tok, ok := bearer(r)
	if !ok || !wellFormedToken(tok, bootstrapTokenPrefix) {
		return store.ComponentToken{}, false, nil
	}
	h := hashToken(tok)
	t, err := a.st.GetComponentTokenByHash(r.Context(), h)
	switch {
	case isNotFound(err):
		return store.ComponentToken{}, false, nil
	case err != nil:
		return store.ComponentToken{}, false, fmt.Errorf("authority: component token lookup: %w", err)
	case !sameHash(t.Hash, h) || t.RevokedAt != nil || (t.ExpiresAt != nil && !a.now().Before(*t.ExpiresAt)) || !validComponent(t.Component):
		a.log.InfoContext(r.Context(), "component bootstrap token refused", "token_fp", tokenFingerprint(tok), "token_id", t.ID, "remote", r.RemoteAddr)
		return store.ComponentToken{}, true, errUnauthorized("invalid, expired or revoked bootstrap token")
	}
	return t, true, nil
}

// issueComponentSVID signs an SVID spiffe://<td>/ward/<component> for a
// CSR's key, from the default intermediate.
func (a *Authority) issueComponentSVID(ctx context.Context, component string, csrData []byte, kind string) (IssuedSVID, error) {
	csr, err := ca.ParseCSR(csrData)
	if err != nil {
		return IssuedSVID{}, err
	}
	id := a.componentID(component)
	if len(csr.URIs) > 1 || (len(csr.URIs) == 1 && csr.URIs[0].String() != id.String()) {
		return IssuedSVID{}, fmt.Errorf("%w: the CSR asks for another identity than %s", ca.ErrCSRIdentity, id)
	}
	leaf, iss, err := a.issueOwn(ctx, id, csr.PublicKey, componentSVIDTTL, nil, nil, nil, kind)
	if err != nil {
		return IssuedSVID{}, err
	}
	return IssuedSVID{ID: id, Serial: serialOf(leaf), InstanceID: leaf.Subject.SerialNumber, IssuerID: iss.ID,
		ExpiresAt: leaf.NotAfter, Certificates: iss.chain(leaf)}, nil
}

// renewComponent reissues a component SVID to its holder.
func (a *Authority) renewComponent(w http.ResponseWriter, r *http.Request, p peer) (bool, error) {
	comp, ok := strings.CutPrefix(p.id.Path(), "/ward/")
	if !ok || p.id.TrustDomain() != a.td || !validComponent(comp) {
		return false, nil
	}
	csr, err := readCSR(r)
	if err != nil {
		return true, err
	}
	s, err := a.issueComponentSVID(r.Context(), comp, csr, "renew")
	if err != nil {
		return true, err
	}
	// Moved to another intermediate (a CA rotation): the old certificate
	// is revoked as superseded, so nothing live is left chaining to the
	// retiring hierarchy. Ordinary renewals leave it to expire.
	if !bytes.Equal(p.leaf.AuthorityKeyId, s.Certificates[0].AuthorityKeyId) {
		if err := a.RevokeSuperseded(r.Context(), p.leaf); err != nil {
			return true, err
		}
	}
	a.log.InfoContext(r.Context(), "component svid renewed", "spiffe_id", p.id.String(), "serial", s.Serial, "previous", serialOf(p.leaf))
	return true, a.writeSVID(w, s)
}

var (
	pathCharsRE = regexp.MustCompile(`^/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$`)
	scopeRE     = regexp.MustCompile(`^[!#-\[\]-~]{1,64}$`)
)

// validateRoute checks the fields of a route that need no lookup and
// fills defaults. It is fuzzed: it must never panic.
func validateRoute(rs *route.Route) error {
	if err := checkName("route name", rs.Name); err != nil {
		return err
	}
	rs.Host = strings.ToLower(rs.Host)
	if rs.Host != "" && (len(rs.Host) > 253 || !validDNSName(rs.Host)) {
		return errBadRequest(fmt.Sprintf("host %s must be a DNS name without a port", quote(rs.Host)))
	}
	if len(rs.Prefix) > 256 || !pathCharsRE.MatchString(rs.Prefix) || strings.Contains(rs.Prefix, "//") {
		return errBadRequest(fmt.Sprintf("prefix %s must be an absolute path of at most 256 bytes, without // or a query", quote(rs.Prefix)))
	}
	for _, seg := range strings.Split(rs.Prefix[1:], "/") {
		if seg == "." || seg == ".." {
			return errBadRequest(fmt.Sprintf("prefix %s must not hold . or .. segments", quote(rs.Prefix)))
		}
	}
	u, err := url.Parse(rs.Upstream)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Port() == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return errBadRequest(fmt.Sprintf("upstream %s must be https://HOST:PORT", quote(rs.Upstream)))
	}
	if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
		return errBadRequest(fmt.Sprintf("upstream %s has an invalid port", quote(rs.Upstream)))
	}
	if h := u.Hostname(); net.ParseIP(h) == nil && !validDNSName(h) {
		return errBadRequest(fmt.Sprintf("upstream %s has an invalid host", quote(rs.Upstream)))
	}
	if rs.Credentials == nil {
		rs.Credentials = slices.Clone(route.Default)
	}
	if len(rs.Credentials) == 0 {
		return errBadRequest("credentials must name at least one kind: apikey, jwt, oidc, introspection, mtls")
	}
	for _, c := range rs.Credentials {
		if !slices.Contains(route.Kinds, c) {
			return errBadRequest(fmt.Sprintf("credential kind %s is unknown (apikey, jwt, oidc, introspection, mtls)", quote(c)))
		}
	}
	slices.Sort(rs.Credentials)
	rs.Credentials = slices.Compact(rs.Credentials)
	if len(rs.Scopes) > 32 {
		return errBadRequest("at most 32 scopes")
	}
	for _, s := range rs.Scopes {
		if !scopeRE.MatchString(s) {
			return errBadRequest(fmt.Sprintf("scope %s must be 1-64 printable characters without space, \" or \\", quote(s)))
		}
	}
	if rs.Scopes == nil {
		rs.Scopes = []string{}
	}
	if rs.Rate.PerSecond < 0 || rs.Rate.PerSecond > 1e6 || rs.Rate.Burst < 0 || rs.Rate.Burst > 1e6 {
		return errBadRequest("rate.per_second and rate.burst must lie in [0, 1000000]")
	}
	if rs.Timeout == "" {
		rs.Timeout = "30s"
	}
	if d, err := time.ParseDuration(rs.Timeout); err != nil || d < time.Second || d > 5*time.Minute {
		return errBadRequest(fmt.Sprintf("timeout %s must be a duration from 1s to 5m", quote(rs.Timeout)))
	}
	return nil
}

// PUT /v1/routes/{name}
func (a *Authority) handlePutRoute(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.can(actReview) {
		return errForbidden("setting a route grants the gateway access to a service: it needs role admin or security")
	}
	var rs route.Route
	if err := decodeJSON(r, &rs, false); err != nil {
		return err
	}
	rs.Name, rs.Version, rs.UpdatedBy, rs.UpdatedAt = r.PathValue("name"), 0, "", nil
	if err := validateRoute(&rs); err != nil {
		return err
	}
	ctx := r.Context()
	svc, err := a.st.GetService(ctx, rs.Service)
	if isNotFound(err) {
		return errNotFound(fmt.Sprintf("service %s is not registered", quote(rs.Service)))
	}
	if err != nil {
		return err
	}
	if svc.RevokedAt != nil {
		return errConflict(fmt.Sprintf("service %s has been revoked", quote(rs.Service)))
	}
	provided := map[string][]string{}
	if d, err := a.st.LatestDeclaration(ctx, rs.Service); err == nil {
		m, err := catalog.DecodeStored(d.Manifest)
		if err != nil {
			return fmt.Errorf("authority: declaration of %s: %w", rs.Service, err)
		}
		for _, pr := range m.Provides {
			provided[pr.Resource] = pr.Actions
		}
	} else if !isNotFound(err) {
		return err
	}
	if rs.Exposes == nil {
		for res, acts := range provided {
			rs.Exposes = append(rs.Exposes, route.Exposure{Resource: res, Actions: slices.Clone(acts)})
		}
		if len(rs.Exposes) == 0 {
			return errConflict(fmt.Sprintf("service %s declares nothing it provides; it must declare a manifest first (or name --expose)", quote(rs.Service)))
		}
	}
	if len(rs.Exposes) == 0 || len(rs.Exposes) > 64 {
		return errBadRequest("exposes must list 1 to 64 resources")
	}
	for _, e := range rs.Exposes {
		acts, ok := provided[e.Resource]
		if !ok {
			return errConflict(fmt.Sprintf("service %s does not provide resource %s", quote(rs.Service), quote(e.Resource)))
		}
		if len(e.Actions) == 0 {
			return errBadRequest(fmt.Sprintf("exposes of %s names no action", quote(e.Resource)))
		}
		for _, act := range e.Actions {
			if !slices.Contains(acts, act) {
				return errConflict(fmt.Sprintf("service %s does not provide action %s on %s", quote(rs.Service), quote(act), quote(e.Resource)))
			}
		}
		slices.Sort(e.Actions)
	}
	slices.SortFunc(rs.Exposes, func(x, y route.Exposure) int { return strings.Compare(x.Resource, y.Resource) })

	a.catalogMu.Lock()
	defer a.catalogMu.Unlock()
	existing, _, err := a.st.ListGatewayRoutes(ctx)
	if err != nil {
		return err
	}
	count := 0
	for _, gr := range existing {
		var o route.Route
		if json.Unmarshal(gr.Spec, &o) == nil && o.Name != rs.Name {
			count++
			if o.Host == rs.Host && o.Prefix == rs.Prefix {
				return errConflict(fmt.Sprintf("route %s already serves host %s prefix %s", quote(o.Name), quote(rs.Host), quote(rs.Prefix)))
			}
		}
	}
	if count >= maxRoutes {
		return errConflict(fmt.Sprintf("the route table holds its maximum of %d routes", maxRoutes))
	}
	// The gateway's grants for what the route exposes.
	now := a.now().UTC()
	role := roleSecurity
	if p.roles[roleAdmin] {
		role = roleAdmin
	}
	var grantIDs []string
	for _, e := range rs.Exposes {
		rid, err := randomHex(8)
		if err != nil {
			return err
		}
		req := store.AccessRequest{ID: "req-" + rid, Consumer: catalog.ComponentPrefix + "gateway", Provider: rs.Service, Resource: e.Resource,
			Actions: e.Actions, ConsumerVersion: "route", State: store.RequestApproved, RequestedAt: now,
			DecidedBy: p.name, DecidedByID: p.id, DecidedRole: role, DecidedAt: &now, Reason: "route " + rs.Name}
		version, err := a.st.CreateAccessRequest(ctx, req)
		if err != nil {
			return err
		}
		grantIDs = append(grantIDs, req.ID)
		if err := a.listChanged(ctx, rs.Service, version); err != nil {
			return err
		}
	}
	spec, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	version, prev, err := a.st.PutGatewayRoute(ctx, store.GatewayRoute{Name: rs.Name, Spec: spec, GrantIDs: grantIDs, UpdatedBy: p.name, UpdatedAt: now})
	if err != nil {
		return err
	}
	if prev != nil {
		a.withdrawGrants(ctx, prev.GrantIDs, p, "route "+rs.Name+" replaced")
	}
	if _, err := a.appendEvent(ctx, kindRoutes, map[string]int64{"version": version}); err != nil {
		return err
	}
	a.log.InfoContext(ctx, "route set", "route", rs.Name, "service", rs.Service, "prefix", rs.Prefix, "by", p.id, "version", version)
	rs.Version, rs.UpdatedBy, rs.UpdatedAt = version, p.name, &now
	status := http.StatusOK
	if prev == nil {
		status = http.StatusCreated
	}
	return writeJSON(w, status, rs)
}

// withdrawGrants revokes a route's grants (those still approved).
func (a *Authority) withdrawGrants(ctx context.Context, ids []string, p *principal, reason string) {
	for _, id := range ids {
		g, version, err := a.st.RevokeAccessGrant(ctx, id, store.AccessDecision{By: p.name, ByID: p.id, At: a.now().UTC(), Reason: reason})
		if errors.Is(err, store.ErrConflict) || isNotFound(err) {
			continue // revoked already (ward catalog revoke-grant)
		}
		if err != nil {
			a.log.ErrorContext(ctx, "withdrawing a route grant failed", "grant", id, "error", err)
			continue
		}
		if err := a.listChanged(ctx, g.Provider, version); err != nil {
			a.log.ErrorContext(ctx, "announcing an access-list change failed", "provider", g.Provider, "error", err)
		}
	}
}

// DELETE /v1/routes/{name}
func (a *Authority) handleDeleteRoute(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.can(actReview) {
		return errForbidden("deleting a route needs role admin or security")
	}
	name := r.PathValue("name")
	if !nameRE.MatchString(name) {
		return errNotFound("no such route")
	}
	ctx := r.Context()
	a.catalogMu.Lock()
	defer a.catalogMu.Unlock()
	gr, version, err := a.st.DeleteGatewayRoute(ctx, name)
	if err != nil {
		if isNotFound(err) {
			return errNotFound(fmt.Sprintf("route %s does not exist", quote(name)))
		}
		return err
	}
	a.withdrawGrants(ctx, gr.GrantIDs, p, "route "+name+" deleted")
	if _, err := a.appendEvent(ctx, kindRoutes, map[string]int64{"version": version}); err != nil {
		return err
	}
	a.log.InfoContext(ctx, "route deleted", "route", name, "by", p.id)
	return writeJSON(w, http.StatusOK, map[string]any{"name": name, "deleted_at": a.now().UTC()})
}

// routeTable reads the routes and the table version.
func (a *Authority) routeTable(ctx context.Context) ([]route.Route, int64, error) {
	list, version, err := a.st.ListGatewayRoutes(ctx)
	if err != nil {
		return nil, 0, err
	}
	out := make([]route.Route, 0, len(list))
	for _, gr := range list {
		var rs route.Route
		if err := json.Unmarshal(gr.Spec, &rs); err != nil {
			return nil, 0, fmt.Errorf("authority: stored route %s: %w", gr.Name, err)
		}
		rs.Version, rs.UpdatedBy = gr.Version, gr.UpdatedBy
		at := gr.UpdatedAt.UTC()
		rs.UpdatedAt = &at
		out = append(out, rs)
	}
	return out, version, nil
}

// GET /v1/routes
func (a *Authority) handleListRoutes(w http.ResponseWriter, r *http.Request, _ *principal) error {
	routes, _, err := a.routeTable(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, routes)
}

// GET /v1/gateway/routes (mTLS, gateways only)
func (a *Authority) handleGatewayRoutes(w http.ResponseWriter, r *http.Request) error {
	if _, err := a.gatewayPeer(r); err != nil {
		return err
	}
	routes, version, err := a.routeTable(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"version": version, "routes": routes})
}

// POST /v1/passport/keys (mTLS, gateways only)
func (a *Authority) handleRegisterPassportKey(w http.ResponseWriter, r *http.Request) error {
	p, err := a.gatewayPeer(r)
	if err != nil {
		return err
	}
	var req struct {
		JWK      json.RawMessage `json:"jwk"`
		NotAfter time.Time       `json:"not_after"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(req.JWK); err != nil {
		return errBadRequest("jwk is not a valid JSON Web Key")
	}
	pub, ok := k.Key.(ed25519.PublicKey)
	if !ok || !k.IsPublic() || k.Algorithm != string(jose.EdDSA) || (k.Use != "" && k.Use != "sig") {
		return errBadRequest("jwk must be a public Ed25519 key with alg EdDSA")
	}
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil || k.KeyID != base64.RawURLEncoding.EncodeToString(tp) {
		return errBadRequest("jwk kid must be its RFC 7638 SHA-256 thumbprint")
	}
	now := a.now()
	if !req.NotAfter.After(now) || req.NotAfter.After(now.Add(maxPassportAhead)) {
		return errBadRequest("not_after must lie within the next 48 hours")
	}
	ctx := r.Context()
	current, err := a.st.ListPassportKeys(ctx, now)
	if err != nil {
		return err
	}
	known := slices.ContainsFunc(current, func(x store.PassportKey) bool { return x.KID == k.KeyID })
	if !known && len(current) >= maxPassportKeys {
		return errConflict(fmt.Sprintf("%d passport keys are registered and unexpired, the maximum", maxPassportKeys))
	}
	pubJWK, _ := json.Marshal(jose.JSONWebKey{Key: pub, KeyID: k.KeyID, Algorithm: string(jose.EdDSA), Use: "sig"})
	if err := a.st.PutPassportKey(ctx, store.PassportKey{KID: k.KeyID, JWK: pubJWK, Serial: serialOf(p.leaf), CreatedAt: now.UTC(),
		NotAfter: req.NotAfter.UTC()}, now.Add(-7*24*time.Hour)); err != nil {
		return err
	}
	set, err := a.passportKeySet(ctx)
	if err != nil {
		return err
	}
	if _, err := a.appendEvent(ctx, kindPassportKeys, set); err != nil {
		return err
	}
	a.log.InfoContext(ctx, "passport key registered", "kid", k.KeyID, "serial", serialOf(p.leaf), "not_after", req.NotAfter.UTC())
	status := http.StatusCreated
	if known {
		status = http.StatusOK
	}
	return writeJSON(w, status, map[string]any{"kid": k.KeyID, "not_after": req.NotAfter.UTC()})
}

// passportKeySet is the JWKS of unexpired passport keys.
func (a *Authority) passportKeySet(ctx context.Context) (map[string][]json.RawMessage, error) {
	keys, err := a.st.ListPassportKeys(ctx, a.now())
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(keys))
	for _, k := range keys {
		out = append(out, json.RawMessage(k.JWK))
	}
	return map[string][]json.RawMessage{"keys": out}, nil
}

// GET /v1/passport/keys (public)
func (a *Authority) handlePassportKeys(w http.ResponseWriter, r *http.Request) error {
	set, err := a.passportKeySet(r.Context())
	if err != nil {
		return err
	}
	body, err := json.Marshal(set)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/jwk-set+json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "max-age=60")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
	return nil
}
