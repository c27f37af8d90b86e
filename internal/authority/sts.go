package authority

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/bus"
	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/internal/sts"
)

// kindCredentialRevocation events carry revocations of the token service:
// {"kind":"token|apikey|client","id":"…","expires_at":"…"}. Every replica
// applies them to its in-memory revoked set; every watcher receives them.
const kindCredentialRevocation = "credential-revocation"

type credentialRevocationPayload struct {
	Kind      string    `json:"kind"`
	ID        string    `json:"id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// newSTS builds the token service of this replica.
func (a *Authority) newSTS(ctx context.Context) (*sts.Service, error) {
	return sts.New(ctx, sts.Config{
		Store:       a.st,
		KMS:         a.kms,
		Issuer:      a.publicURL,
		TrustDomain: a.td,
		Logger:      a.log,
		Now:         a.now,
		OnIssue: func(grant string, c sts.Claims) {
			a.record(audit.Event{Kind: audit.KindTokenIssued, Caller: c.ClientID, User: c.Subject, Action: grant,
				Resource: strings.Join(c.Audience, " "), Decision: audit.Allow, Extra: map[string]any{"jti": c.ID, "scope": c.Scope, "exp": c.Expiry}})
		},
		OnRevoke: func(ctx context.Context, kind, id string, expiresAt time.Time) error {
			a.record(audit.Event{Kind: audit.KindTokenRevoked, Resource: kind, Extra: map[string]any{"id": id}})
			p := credentialRevocationPayload{Kind: kind, ID: id, ExpiresAt: expiresAt.UTC()}
			if _, err := a.appendEvent(ctx, kindCredentialRevocation, p); err != nil {
				return err
			}
			// The payload itself on the bus, for verifiers without a
			// watch stream; replicas apply the stored event instead.
			if a.bus != nil {
				data, _ := json.Marshal(p)
				if err := a.bus.Publish(ctx, bus.SubjectCredentialRevocations, data); err != nil {
					a.log.WarnContext(ctx, "publishing a credential revocation on the bus failed; it is in the event log", "kind", kind, "error", err)
				}
			}
			return nil
		},
	})
}

// stsPeer is the verified mTLS peer of a request, for tls_client_auth and
// certificate-bound tokens.
func (a *Authority) stsPeer(r *http.Request) (sts.Peer, bool) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return sts.Peer{}, false
	}
	p, err := a.requirePeer(r)
	if err != nil {
		return sts.Peer{}, false
	}
	return sts.Peer{ID: p.id, Cert: p.leaf}, true
}

// applyCredentialRevocation makes a revocation effective in this replica.
func (a *Authority) applyCredentialRevocation(ctx context.Context, seq int64, payload []byte) bool {
	var p credentialRevocationPayload
	if err := json.Unmarshal(payload, &p); err != nil || p.ID == "" {
		a.log.ErrorContext(ctx, "bad credential-revocation event", "seq", seq, "error", err)
		return false
	}
	a.sts.ApplyRevocation(p.Kind, p.ID, p.ExpiresAt)
	return true
}

type oauthClientView struct {
	ClientID     string     `json:"client_id"`
	Name         string     `json:"name"`
	GrantTypes   []string   `json:"grant_types"`
	Scopes       []string   `json:"scopes"`
	Audiences    []string   `json:"audiences,omitempty"`
	AuthMethod   string     `json:"token_endpoint_auth_method"`
	TLSSubject   string     `json:"tls_client_auth_subject,omitempty"`
	TokenAlg     string     `json:"token_alg"`
	TokenTTL     string     `json:"token_ttl"`
	CreatedAt    time.Time  `json:"created_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	ClientSecret string     `json:"client_secret,omitempty"`
}

func viewClient(c store.OAuthClient) oauthClientView {
	return oauthClientView{
		ClientID: c.ID, Name: c.Name, GrantTypes: c.GrantTypes, Scopes: c.Scopes, Audiences: c.Audiences,
		AuthMethod: c.AuthMethod, TLSSubject: c.TLSSubject, TokenAlg: c.TokenAlg, TokenTTL: c.TokenTTL.String(),
		CreatedAt: c.CreatedAt.UTC(), RevokedAt: utcPtr(c.RevokedAt),
	}
}

// POST /v1/oauth-clients
func (a *Authority) handleCreateClient(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Name       string          `json:"name"`
		GrantTypes []string        `json:"grant_types"`
		Scopes     []string        `json:"scopes"`
		Audiences  []string        `json:"audiences"`
		AuthMethod string          `json:"token_endpoint_auth_method"`
		TLSSubject string          `json:"tls_client_auth_subject"`
		TokenAlg   string          `json:"token_alg"`
		TokenTTL   string          `json:"token_ttl"`
		JWKS       json.RawMessage `json:"jwks"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	var ttl time.Duration
	if req.TokenTTL != "" {
		d, err := time.ParseDuration(req.TokenTTL)
		if err != nil {
			return errBadRequest(fmt.Sprintf("token_ttl %s is invalid: want a duration such as 10m", quote(req.TokenTTL)))
		}
		ttl = d
	}
	var jwks []byte
	if len(req.JWKS) > 0 && string(req.JWKS) != "null" {
		jwks = req.JWKS
	}
	c, secret, err := a.sts.CreateClient(r.Context(), sts.ClientSpec{
		Name: req.Name, GrantTypes: req.GrantTypes, Scopes: req.Scopes, Audiences: req.Audiences,
		AuthMethod: req.AuthMethod, TLSSubject: req.TLSSubject, TokenAlg: req.TokenAlg, TokenTTL: ttl,
		JWKS: jwks,
	})
	if err != nil {
		return stsError(err)
	}
	a.log.InfoContext(r.Context(), "oauth client created", "client_id", c.ID, "name", c.Name, "auth", c.AuthMethod, "by", p.id)
	v := viewClient(c)
	v.ClientSecret = secret
	return writeJSON(w, http.StatusCreated, v)
}

// GET /v1/oauth-clients
func (a *Authority) handleListClients(w http.ResponseWriter, r *http.Request, _ *principal) error {
	list, err := a.st.ListOAuthClients(r.Context())
	if err != nil {
		return err
	}
	out := make([]oauthClientView, 0, len(list))
	for _, c := range list {
		out = append(out, viewClient(c))
	}
	return writeJSON(w, http.StatusOK, out)
}

// POST /v1/oauth-clients/{id}/revoke
func (a *Authority) handleRevokeClient(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	if !validID(strings.ReplaceAll(id, "_", "-")) {
		return errNotFound(fmt.Sprintf("client %s does not exist", quote(id)))
	}
	if err := a.sts.RevokeClient(r.Context(), id); err != nil {
		return stsError(err)
	}
	a.syncEvents(r.Context())
	a.log.InfoContext(r.Context(), "oauth client revoked", "client_id", id, "by", p.id)
	c, err := a.st.GetOAuthClient(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewClient(c))
}

type apiKeyView struct {
	ID        string            `json:"id"`
	Subject   string            `json:"subject"`
	Tenant    string            `json:"tenant,omitempty"`
	Scopes    []string          `json:"scopes"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	RevokedAt *time.Time        `json:"revoked_at,omitempty"`
	APIKey    string            `json:"api_key,omitempty"`
}

func viewAPIKey(k store.APIKey) apiKeyView {
	return apiKeyView{ID: k.ID, Subject: k.Subject, Tenant: k.Tenant, Scopes: k.Scopes, Metadata: k.Metadata,
		CreatedAt: k.CreatedAt.UTC(), ExpiresAt: utcPtr(k.ExpiresAt), RevokedAt: utcPtr(k.RevokedAt)}
}

// POST /v1/api-keys
func (a *Authority) handleCreateAPIKey(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Subject  string            `json:"subject"`
		Tenant   string            `json:"tenant"`
		Scopes   []string          `json:"scopes"`
		TTL      string            `json:"ttl"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return errBadRequest(fmt.Sprintf("ttl %s is invalid: want a positive duration such as 720h", quote(req.TTL)))
		}
		ttl = d
	}
	k, key, err := a.sts.CreateAPIKey(r.Context(), sts.APIKeySpec{Subject: req.Subject, Tenant: req.Tenant, Scopes: req.Scopes, TTL: ttl, Metadata: req.Metadata})
	if err != nil {
		return stsError(err)
	}
	a.log.InfoContext(r.Context(), "api key created", "id", k.ID, "subject", k.Subject, "by", p.id)
	v := viewAPIKey(k)
	v.APIKey = key
	return writeJSON(w, http.StatusCreated, v)
}

// GET /v1/api-keys
func (a *Authority) handleListAPIKeys(w http.ResponseWriter, r *http.Request, _ *principal) error {
	list, err := a.st.ListAPIKeys(r.Context())
	if err != nil {
		return err
	}
	out := make([]apiKeyView, 0, len(list))
	for _, k := range list {
		out = append(out, viewAPIKey(k))
	}
	return writeJSON(w, http.StatusOK, out)
}

// POST /v1/api-keys/{id}/revoke
func (a *Authority) handleRevokeAPIKey(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	if err := a.sts.RevokeAPIKey(r.Context(), id); err != nil {
		return stsError(err)
	}
	a.syncEvents(r.Context())
	a.log.InfoContext(r.Context(), "api key revoked", "id", id, "by", p.id)
	k, err := a.st.GetAPIKey(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewAPIKey(k))
}

// stsError maps the token service's errors to problems.
func stsError(err error) error {
	switch {
	case isNotFound(err):
		return errNotFound(clientText(err))
	case errors.Is(err, store.ErrConflict):
		return errConflict(clientText(err))
	case errors.Is(err, sts.ErrInvalidSpec):
		return errBadRequest(strings.TrimPrefix(err.Error(), "sts: "))
	}
	return err
}

// kindTokenKeys events tell replicas to reload the token-signing keys.
const kindTokenKeys = "token-keys"

// rotateTokenKeys advances the token service's key schedule (forced or
// not) and tells every replica when something changed.
func (a *Authority) rotateTokenKeys(ctx context.Context, force bool) (bool, error) {
	changed, err := a.sts.RotateKeys(ctx, force)
	if changed {
		if _, perr := a.appendEvent(ctx, kindTokenKeys, map[string]bool{"forced": force}); perr != nil && err == nil {
			err = perr
		}
	}
	return changed, err
}

// GET /v1/token-keys
func (a *Authority) handleListTokenKeys(w http.ResponseWriter, r *http.Request, _ *principal) error {
	keys, err := a.sts.Keys(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, keys)
}

// POST /v1/token-keys/rotate: activate new token-signing keys now.
func (a *Authority) handleRotateTokenKeys(w http.ResponseWriter, r *http.Request, p *principal) error {
	a.adminMu.Lock()
	defer a.adminMu.Unlock()
	if _, err := a.rotateTokenKeys(r.Context(), true); err != nil {
		return err
	}
	a.syncEvents(r.Context())
	a.log.InfoContext(r.Context(), "token signing keys rotated", "by", p.id)
	keys, err := a.sts.Keys(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, keys)
}
