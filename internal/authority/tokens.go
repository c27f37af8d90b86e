package authority

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/wardsec/ward/internal/store"
)

// Token formats: prefix + base64url(32 random bytes), no padding.
const (
	adminTokenPrefix     = "wardadm_"
	bootstrapTokenPrefix = "wardbt_"
	tokenRandomBytes     = 32
)

var tokenBodyLen = base64.RawURLEncoding.EncodedLen(tokenRandomBytes)

// newToken returns a fresh secret token and its SHA-256.
func newToken(prefix string) (token string, hash []byte, err error) {
	b := make([]byte, tokenRandomBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("authority: token: %w", err)
	}
	token = prefix + base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token), nil
}

func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// tokenFingerprint identifies a token in logs without revealing it: the
// first 8 hex digits of its SHA-256.
func tokenFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:4])
}

// wellFormedToken checks the shape of a presented token before any lookup.
func wellFormedToken(token, prefix string) bool {
	body, ok := strings.CutPrefix(token, prefix)
	if !ok || len(body) != tokenBodyLen {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(body)
	return err == nil
}

// bearer extracts the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// randomHex returns 2n hex digits from n random bytes.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("authority: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// sameHash compares two token hashes in constant time.
func sameHash(a, b []byte) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare(a, b) == 1
}

// authBootstrap authenticates a workload's bootstrap token and returns it.
// Every failure is the same 401, so a caller learns nothing about which
// tokens exist.
func (a *Authority) authBootstrap(r *http.Request) (store.BootstrapToken, error) {
	tok, ok := bearer(r)
	if !ok {
		return store.BootstrapToken{}, errUnauthorized("a bootstrap token (Authorization: Bearer wardbt_...) is required")
	}
	fp := tokenFingerprint(tok)
	if !wellFormedToken(tok, bootstrapTokenPrefix) {
		a.log.InfoContext(r.Context(), "bootstrap token refused", "token_fp", fp, "why", "malformed", "remote", r.RemoteAddr)
		return store.BootstrapToken{}, errUnauthorized("invalid or revoked bootstrap token")
	}
	h := hashToken(tok)
	bt, err := a.st.GetBootstrapTokenByHash(r.Context(), h)
	if err != nil || !sameHash(bt.Hash, h) || bt.RevokedAt != nil {
		if err != nil && !isNotFound(err) {
			return store.BootstrapToken{}, fmt.Errorf("authority: bootstrap token lookup: %w", err)
		}
		a.log.InfoContext(r.Context(), "bootstrap token refused", "token_fp", fp, "why", "unknown or revoked", "remote", r.RemoteAddr)
		return store.BootstrapToken{}, errUnauthorized("invalid or revoked bootstrap token")
	}
	if bt.ExpiresAt != nil && !a.now().Before(*bt.ExpiresAt) {
		a.log.InfoContext(r.Context(), "bootstrap token refused", "token_fp", fp, "token_id", bt.ID, "why", "expired", "remote", r.RemoteAddr)
		return store.BootstrapToken{}, errUnauthorized("bootstrap token expired; issue a new one with `ward service token " + bt.Service + "`")
	}
	return bt, nil
}

// Admin tokens API.

type adminTokenView struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Roles     []string   `json:"roles"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Token     string     `json:"token,omitempty"`
}

func viewAdminToken(t store.AdminToken) adminTokenView {
	roles := t.Roles
	if roles == nil {
		roles = []string{}
	}
	return adminTokenView{ID: t.ID, Name: t.Name, Roles: roles, CreatedAt: t.CreatedAt.UTC(), RevokedAt: utcPtr(t.RevokedAt)}
}

func (a *Authority) handleCreateAdminToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Name  string   `json:"name"`
		Roles []string `json:"roles"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	if err := checkName("name", req.Name); err != nil {
		return err
	}
	if len(req.Roles) == 0 || len(req.Roles) > 32 {
		return errBadRequest("roles must list between 1 and 32 roles")
	}
	seen := map[string]bool{}
	roles := make([]string, 0, len(req.Roles))
	for _, role := range req.Roles {
		if err := checkRole(role); err != nil {
			return err
		}
		if team, ok := strings.CutPrefix(role, roleTeamPrefix); ok {
			if _, err := a.st.GetTeam(r.Context(), team); err != nil {
				if isNotFound(err) {
					return errNotFound(fmt.Sprintf("team %q does not exist", team))
				}
				return err
			}
		}
		if !seen[role] {
			seen[role] = true
			roles = append(roles, role)
		}
	}
	token, hash, err := newToken(adminTokenPrefix)
	if err != nil {
		return err
	}
	id, err := randomHex(8)
	if err != nil {
		return err
	}
	t := store.AdminToken{ID: "adm-" + id, Name: req.Name, Hash: hash, Roles: roles, CreatedAt: a.now().UTC()}
	if err := a.st.CreateAdminToken(r.Context(), t); err != nil {
		return err
	}
	a.log.InfoContext(r.Context(), "admin token created", "id", t.ID, "name", t.Name, "roles", roles, "token_fp", tokenFingerprint(token), "by", p.id)
	v := viewAdminToken(t)
	v.Token = token
	return writeJSON(w, http.StatusCreated, v)
}

func (a *Authority) handleListAdminTokens(w http.ResponseWriter, r *http.Request, _ *principal) error {
	list, err := a.st.ListAdminTokens(r.Context())
	if err != nil {
		return err
	}
	out := make([]adminTokenView, 0, len(list))
	for _, t := range list {
		out = append(out, viewAdminToken(t))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *Authority) handleRevokeAdminToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	if !validID(id) {
		return errNotFound("no such admin token")
	}
	// Never revoke the last working admin token: nobody could make another.
	list, err := a.st.ListAdminTokens(r.Context())
	if err != nil {
		return err
	}
	target, admins := false, 0
	for _, t := range list {
		if t.RevokedAt != nil || !slices.Contains(t.Roles, roleAdmin) {
			continue
		}
		admins++
		target = target || t.ID == id
	}
	if target && admins == 1 {
		return errConflict("this is the last admin token with role admin; create another one first")
	}
	at := a.now().UTC()
	if err := a.st.RevokeAdminToken(r.Context(), id, at); err != nil {
		if isNotFound(err) {
			return errNotFound(fmt.Sprintf("admin token %q does not exist", id))
		}
		return err
	}
	a.log.InfoContext(r.Context(), "admin token revoked", "id", id, "by", p.id)
	return writeJSON(w, http.StatusOK, map[string]any{"id": id, "revoked_at": at})
}
