package sts

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/internal/store"
)

// Peer is the verified client certificate of a request (mTLS).
type Peer struct {
	ID   spiffeid.ID
	Cert *x509.Certificate
}

// oauthError is an RFC 6749 §5.2 error response.
type oauthError struct {
	status int
	code   string
	desc   string
	basic  bool // add WWW-Authenticate: Basic
}

func (e *oauthError) Error() string { return "sts: " + e.code + ": " + e.desc }

func errOAuth(status int, code, desc string) *oauthError {
	return &oauthError{status: status, code: code, desc: desc}
}

func invalidRequest(desc string) *oauthError {
	return errOAuth(http.StatusBadRequest, "invalid_request", desc)
}

func invalidClient(basic bool) *oauthError {
	return &oauthError{status: http.StatusUnauthorized, code: "invalid_client", desc: "client authentication failed", basic: basic}
}

// Handler serves /oauth2/token, /oauth2/introspect, /oauth2/revoke,
// /.well-known/oauth-authorization-server and /.well-known/jwks.json.
// peer returns the verified mTLS client certificate of a request, if any.
func (s *Service) Handler(peer func(r *http.Request) (Peer, bool)) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /oauth2/token", s.endpoint(peer, s.token))
	mux.Handle("POST /oauth2/introspect", s.endpoint(peer, s.introspect))
	mux.Handle("POST /oauth2/revoke", s.endpoint(peer, s.revoke))
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.metadata)
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(s.JWKS())
	})
	return mux
}

type endpointFunc func(r *http.Request, form url.Values, p Peer, hasPeer bool) (any, error)

// endpoint parses the form (bounded, no repeated parameters) and writes
// the JSON answer or the RFC 6749 error.
func (s *Service) endpoint(peer func(*http.Request) (Peer, bool), fn endpointFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		form, err := readForm(r)
		var out any
		if err == nil {
			p, ok := peer(r)
			out, err = fn(r, form, p, ok)
		}
		if err != nil {
			var oe *oauthError
			if !errors.As(err, &oe) {
				s.log.ErrorContext(r.Context(), "token service request failed", "path", r.URL.Path, "error", err)
				oe = errOAuth(http.StatusInternalServerError, "server_error", "internal error")
			}
			if oe.basic {
				w.Header().Set("WWW-Authenticate", `Basic realm="ward"`)
			}
			writeJSON(w, oe.status, map[string]string{"error": oe.code, "error_description": oe.desc})
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// readForm reads an application/x-www-form-urlencoded body of at most
// 64 KiB; repeated parameters are invalid (RFC 6749 §3.2).
func readForm(r *http.Request) (url.Values, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, invalidRequest("the body must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, invalidRequest("could not read the body")
	}
	if len(body) > maxBody {
		return nil, errOAuth(http.StatusRequestEntityTooLarge, "invalid_request", fmt.Sprintf("the body is larger than %d bytes", maxBody))
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, invalidRequest("the body is not valid form encoding")
	}
	for k, v := range form {
		if len(v) > 1 {
			return nil, invalidRequest(fmt.Sprintf("parameter %q is repeated", clip(k)))
		}
	}
	return form, nil
}

// authenticate identifies the calling client (RFC 6749 §2.3, RFC 8705):
// HTTP Basic, form client_secret, or the mTLS certificate with client_id.
// Exactly one method may be used.
func (s *Service) authenticate(r *http.Request, form url.Values, p Peer, hasPeer bool) (store.OAuthClient, error) {
	user, pass, basic := r.BasicAuth()
	_, postSecret := form["client_secret"]
	_, assertion := form["client_assertion"]
	methods := 0
	for _, m := range []bool{basic, postSecret, assertion} {
		if m {
			methods++
		}
	}
	switch {
	case methods > 1:
		return store.OAuthClient{}, invalidRequest("use one client authentication method")
	case assertion:
		if form.Get("client_assertion_type") != assertionType {
			return store.OAuthClient{}, invalidRequest("client_assertion_type must be " + assertionType)
		}
		c, err := s.authenticateAssertion(r.Context(), form.Get("client_assertion"), form.Get("client_id"))
		if errors.Is(err, errBadAssertion) {
			s.log.InfoContext(r.Context(), "client authentication failed", "method", "private_key_jwt")
			return store.OAuthClient{}, invalidClient(false)
		}
		return c, err
	case basic:
		id, err1 := url.QueryUnescape(user)
		secret, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil {
			return store.OAuthClient{}, invalidClient(true)
		}
		c, err := s.authenticateSecret(r.Context(), id, secret, store.AuthClientSecretBasic)
		if errors.Is(err, errBadClient) {
			s.log.InfoContext(r.Context(), "client authentication failed", "client_id", clip(id), "method", "basic")
			return store.OAuthClient{}, invalidClient(true)
		}
		return c, err
	case postSecret:
		c, err := s.authenticateSecret(r.Context(), form.Get("client_id"), form.Get("client_secret"), store.AuthClientSecretPost)
		if errors.Is(err, errBadClient) {
			s.log.InfoContext(r.Context(), "client authentication failed", "client_id", clip(form.Get("client_id")), "method", "post")
			return store.OAuthClient{}, invalidClient(false)
		}
		return c, err
	case hasPeer && form.Get("client_id") != "":
		id := form.Get("client_id")
		if !strings.HasPrefix(id, "wc_") || len(id) != 27 {
			return store.OAuthClient{}, invalidClient(false)
		}
		c, err := s.client(r.Context(), id)
		if errors.Is(err, store.ErrNotFound) {
			return store.OAuthClient{}, invalidClient(false)
		}
		if err != nil {
			return store.OAuthClient{}, err
		}
		if c.AuthMethod != store.AuthTLSClient || c.TLSSubject != p.ID.String() || c.RevokedAt != nil || s.clientRevoked(c.ID) {
			s.log.InfoContext(r.Context(), "client authentication failed", "client_id", c.ID, "method", "tls", "peer", p.ID.String())
			return store.OAuthClient{}, invalidClient(false)
		}
		return c, nil
	}
	return store.OAuthClient{}, invalidClient(false)
}

// tokenResponse is RFC 6749 §5.1 (and RFC 8693 §2.2.1).
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
}

// tokenTypeAccess is RFC 8693's URI for an OAuth access token.
const tokenTypeAccess = "urn:ietf:params:oauth:token-type:access_token"

// exchange is the RFC 8693 token exchange: the client (or the party of
// actor_token) acts for the subject of subject_token. The new token keeps
// the subject, nests the actor chain in act, never widens scope (a subset
// of the subject token's), never outlives the subject token, and honours
// may_act.
func (s *Service) exchange(form url.Values, c store.OAuthClient, p Peer) (any, error) {
	if form.Get("subject_token") == "" || form.Get("subject_token_type") != tokenTypeAccess {
		return nil, invalidRequest("subject_token and subject_token_type " + tokenTypeAccess + " are required")
	}
	if rt := form.Get("requested_token_type"); rt != "" && rt != tokenTypeAccess {
		return nil, invalidRequest("only access tokens can be requested")
	}
	subject, err := s.parseToken(form.Get("subject_token"))
	if err != nil {
		return nil, errOAuth(http.StatusBadRequest, "invalid_grant", "subject_token is invalid, expired or revoked")
	}
	actorSub := "client:" + c.Name
	if c.AuthMethod == store.AuthTLSClient {
		actorSub = c.TLSSubject
	}
	if at := form.Get("actor_token"); at != "" {
		if form.Get("actor_token_type") != tokenTypeAccess {
			return nil, invalidRequest("actor_token_type " + tokenTypeAccess + " is required with actor_token")
		}
		actor, err := s.parseToken(at)
		if err != nil {
			return nil, errOAuth(http.StatusBadRequest, "invalid_grant", "actor_token is invalid, expired or revoked")
		}
		if actor.ClientID != c.ID {
			return nil, errOAuth(http.StatusBadRequest, "invalid_grant", "actor_token was not issued to this client")
		}
		actorSub = actor.Subject
	} else if form.Has("actor_token_type") {
		return nil, invalidRequest("actor_token_type without actor_token")
	}
	if subject.MayAct != nil && subject.MayAct.Sub != actorSub {
		return nil, errOAuth(http.StatusBadRequest, "invalid_grant", fmt.Sprintf("the subject token does not allow %s to act for it", clip(actorSub)))
	}
	act := &Actor{Sub: actorSub, Act: subject.Act}
	if act.depth() > maxChain {
		return nil, errOAuth(http.StatusBadRequest, "invalid_grant", fmt.Sprintf("the delegation chain would be longer than %d", maxChain))
	}
	have := strings.Fields(subject.Scope)
	scopes := have
	if raw := form.Get("scope"); raw != "" {
		scopes = strings.Fields(raw)
		for _, sc := range scopes {
			if !slices.Contains(have, sc) {
				return nil, errOAuth(http.StatusBadRequest, "invalid_scope", fmt.Sprintf("scope %q is not in the subject token: an exchange never widens scope", clip(sc)))
			}
		}
	}
	aud := []string(subject.Audience)
	if a := form.Get("audience"); a != "" {
		if !slices.Contains(c.Audiences, a) {
			return nil, errOAuth(http.StatusBadRequest, "invalid_target", fmt.Sprintf("audience %q is not allowed for this client", clip(a)))
		}
		aud = []string{a}
	}
	if form.Has("resource") {
		return nil, errOAuth(http.StatusBadRequest, "invalid_target", "use audience, not resource")
	}
	ttl := c.TokenTTL
	if ttl == 0 {
		ttl = s.cfg.DefaultTTL
	}
	now := s.now()
	exp := min(now.Add(ttl).Unix(), subject.Expiry)
	jti, err := newJTI()
	if err != nil {
		return nil, err
	}
	claims := Claims{
		Issuer: s.cfg.Issuer, Subject: subject.Subject, Audience: aud, Expiry: exp, IssuedAt: now.Unix(),
		NotBefore: now.Unix(), ID: jti, Scope: strings.Join(scopes, " "), ClientID: c.ID, Act: act,
	}
	if c.AuthMethod == store.AuthTLSClient && p.Cert != nil {
		claims.Cnf = &Confirmation{X5tS256: Thumbprint(p.Cert)}
	}
	tok, err := s.mint(c.TokenAlg, claims)
	if err != nil {
		return nil, err
	}
	s.log.Info("token exchanged", "client_id", c.ID, "sub", claims.Subject, "actor", actorSub, "chain", act.depth(), "jti", jti)
	if s.cfg.OnIssue != nil {
		s.cfg.OnIssue(GrantTokenExchange, claims)
	}
	return tokenResponse{AccessToken: tok, IssuedTokenType: tokenTypeAccess, TokenType: "Bearer", ExpiresIn: exp - now.Unix(), Scope: claims.Scope}, nil
}

// POST /oauth2/token
func (s *Service) token(r *http.Request, form url.Values, p Peer, hasPeer bool) (any, error) {
	c, err := s.authenticate(r, form, p, hasPeer)
	if err != nil {
		return nil, err
	}
	switch gt := form.Get("grant_type"); {
	case gt == "":
		return nil, invalidRequest("grant_type is required")
	case gt != GrantClientCredentials && gt != GrantTokenExchange:
		return nil, errOAuth(http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant type %q is not supported", clip(gt)))
	case !slices.Contains(c.GrantTypes, gt):
		return nil, errOAuth(http.StatusBadRequest, "unauthorized_client", fmt.Sprintf("this client may not use the %s grant", gt))
	case gt == GrantTokenExchange:
		return s.exchange(form, c, p)
	}
	scopes := c.Scopes
	if raw := form.Get("scope"); raw != "" {
		scopes = strings.Fields(raw)
		for _, sc := range scopes {
			if !slices.Contains(c.Scopes, sc) {
				return nil, errOAuth(http.StatusBadRequest, "invalid_scope", fmt.Sprintf("scope %q is not granted to this client", clip(sc)))
			}
		}
	}
	aud := s.cfg.Audience
	if a := form.Get("audience"); a != "" {
		if !slices.Contains(c.Audiences, a) {
			return nil, errOAuth(http.StatusBadRequest, "invalid_target", fmt.Sprintf("audience %q is not allowed for this client", clip(a)))
		}
		aud = a
	}
	ttl := c.TokenTTL
	if ttl == 0 {
		ttl = s.cfg.DefaultTTL
	}
	jti, err := newJTI()
	if err != nil {
		return nil, err
	}
	now := s.now()
	claims := Claims{
		Issuer: s.cfg.Issuer, Subject: "client:" + c.Name, Audience: []string{aud},
		Expiry: now.Add(ttl).Unix(), IssuedAt: now.Unix(), NotBefore: now.Unix(), ID: jti,
		Scope: strings.Join(scopes, " "), ClientID: c.ID,
	}
	if c.AuthMethod == store.AuthTLSClient {
		claims.Subject = c.TLSSubject
		claims.Cnf = &Confirmation{X5tS256: Thumbprint(p.Cert)}
	}
	tok, err := s.mint(c.TokenAlg, claims)
	if err != nil {
		return nil, err
	}
	if s.cfg.OnIssue != nil {
		s.cfg.OnIssue(GrantClientCredentials, claims)
	}
	return tokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: int64(ttl / 1e9), Scope: claims.Scope}, nil
}

// POST /oauth2/introspect (RFC 7662): for authenticated clients and for
// workloads with an SVID.
func (s *Service) introspect(r *http.Request, form url.Values, p Peer, hasPeer bool) (any, error) {
	if !(hasPeer && form.Get("client_id") == "" && r.Header.Get("Authorization") == "" && !form.Has("client_secret")) {
		if _, err := s.authenticate(r, form, p, hasPeer); err != nil {
			return nil, err
		}
	}
	raw := form.Get("token")
	if raw == "" {
		return nil, invalidRequest("token is required")
	}
	inactive := map[string]any{"active": false}
	if strings.HasPrefix(raw, apiKeyPrefix) {
		k, err := s.VerifyAPIKey(r.Context(), raw)
		if err != nil {
			if errors.Is(err, ErrInvalidCredential) {
				return inactive, nil
			}
			return nil, err
		}
		out := map[string]any{"active": true, "token_type": "api_key", "sub": k.Subject, "scope": strings.Join(k.Scopes, " "), "iat": k.CreatedAt.Unix(),
			"key_id": k.ID, "client_id": k.ID}
		if roles := strings.FieldsFunc(k.Metadata["roles"], func(r rune) bool { return r == ',' || r == ' ' }); len(roles) > 0 {
			out["roles"] = roles
		}
		if k.Tenant != "" {
			out["tenant"] = k.Tenant
		}
		if k.ExpiresAt != nil {
			out["exp"] = k.ExpiresAt.Unix()
		}
		return out, nil
	}
	c, err := s.parseToken(raw)
	if err != nil {
		return inactive, nil
	}
	out := claimsMap(c)
	out["active"] = true
	out["token_type"] = "Bearer"
	return out, nil
}

// POST /oauth2/revoke (RFC 7009): a client revokes one of its tokens.
func (s *Service) revoke(r *http.Request, form url.Values, p Peer, hasPeer bool) (any, error) {
	cl, err := s.authenticate(r, form, p, hasPeer)
	if err != nil {
		return nil, err
	}
	raw := form.Get("token")
	if raw == "" {
		return nil, invalidRequest("token is required")
	}
	if strings.HasPrefix(raw, apiKeyPrefix) {
		return nil, errOAuth(http.StatusBadRequest, "unsupported_token_type", "API keys are revoked by an administrator (ward apikey revoke)")
	}
	c, err := s.parseToken(raw)
	if err != nil {
		return struct{}{}, nil // invalid, expired or already revoked: nothing to do (RFC 7009 §2.2)
	}
	if c.ClientID != cl.ID {
		return nil, errOAuth(http.StatusBadRequest, "invalid_request", "the token was not issued to this client")
	}
	exp := unixTime(c.Expiry)
	if err := s.st.RevokeToken(r.Context(), store.RevokedToken{JTI: c.ID, ClientID: c.ClientID, ExpiresAt: exp, RevokedAt: s.now().UTC()}); err != nil {
		return nil, err
	}
	if err := s.notify(r.Context(), "token", c.ID, exp); err != nil {
		return nil, err
	}
	s.log.InfoContext(r.Context(), "access token revoked", "jti", c.ID, "client_id", c.ClientID)
	return struct{}{}, nil
}

// GET /.well-known/oauth-authorization-server (RFC 8414)
func (s *Service) metadata(w http.ResponseWriter, _ *http.Request) {
	iss := s.cfg.Issuer
	methods := []string{store.AuthClientSecretBasic, store.AuthClientSecretPost, store.AuthPrivateKeyJWT, store.AuthTLSClient}
	w.Header().Set("Cache-Control", "max-age=300")
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                iss,
		"token_endpoint":                        iss + "/oauth2/token",
		"introspection_endpoint":                iss + "/oauth2/introspect",
		"revocation_endpoint":                   iss + "/oauth2/revoke",
		"jwks_uri":                              iss + "/.well-known/jwks.json",
		"grant_types_supported":                 []string{GrantClientCredentials, GrantTokenExchange},
		"response_types_supported":              []string{},
		"token_endpoint_auth_methods_supported": methods,
		"introspection_endpoint_auth_methods_supported": methods,
		"revocation_endpoint_auth_methods_supported":    methods,
		"tls_client_certificate_bound_access_tokens":    true,
	})
}
