package authority

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/pdp"
)

// Teams.

type teamView struct {
	Name      string    `json:"name"`
	CAID      string    `json:"ca_id"`
	CreatedAt time.Time `json:"created_at"`
}

// POST /v1/teams {"name":"payments"}: the team and its own intermediate,
// active at once, under the active root.
func (a *Authority) handleCreateTeam(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	if err := checkName("name", req.Name); err != nil {
		return err
	}
	ctx := r.Context()
	a.adminMu.Lock()
	defer a.adminMu.Unlock()
	if _, err := a.st.GetTeam(ctx, req.Name); err == nil {
		return errConflict(fmt.Sprintf("team %s already exists", quote(req.Name)))
	} else if !isNotFound(err) {
		return err
	}
	root := a.cas.Load().activeRoot
	if root == nil {
		return fmt.Errorf("%w: no active root", ErrNoActiveCA)
	}
	// The intermediate first: a team never exists without one.
	rec, err := a.newIntermediate(ctx, root, req.Name, store.CAStateActive)
	if err != nil {
		return err
	}
	now := a.now().UTC()
	if err := a.st.CreateTeam(ctx, store.Team{Name: req.Name, CreatedAt: now}); err != nil {
		_ = a.st.SetCAState(ctx, rec.ID, store.CAStateRetired, nil)
		if errors.Is(err, store.ErrConflict) {
			return errConflict(fmt.Sprintf("team %s already exists", quote(req.Name)))
		}
		return err
	}
	if _, err := a.appendEvent(ctx, kindCA, caPayload{CAID: rec.ID, Team: req.Name, Change: "team-created"}); err != nil {
		return err
	}
	a.syncEvents(ctx)
	a.log.InfoContext(ctx, "team created", "team", req.Name, "ca_id", rec.ID, "by", p.id)
	return writeJSON(w, http.StatusCreated, teamView{Name: req.Name, CAID: rec.ID, CreatedAt: now})
}

// newIntermediate creates and stores an intermediate for team ("" = the
// authority's own) under parent.
func (a *Authority) newIntermediate(ctx context.Context, parent *caEntry, team, state string) (store.CA, error) {
	s, err := ca.NewIntermediate(parent.signer, a.td, team, a.interTTL, a.now())
	if err != nil {
		return store.CA{}, fmt.Errorf("authority: new intermediate: %w", err)
	}
	return saveCA(ctx, a.st, a.kms, s, store.CAKindIntermediate, team, parent.ID, state, a.now())
}

// GET /v1/teams
func (a *Authority) handleListTeams(w http.ResponseWriter, r *http.Request, p *principal) error {
	teams, err := a.st.ListTeams(r.Context())
	if err != nil {
		return err
	}
	st := a.cas.Load()
	out := make([]teamView, 0, len(teams))
	for _, t := range teams {
		if !p.canTeam(actRead, t.Name) {
			continue
		}
		v := teamView{Name: t.Name, CreatedAt: t.CreatedAt.UTC()}
		if e := st.active[t.Name]; e != nil {
			v.CAID = e.ID
		}
		out = append(out, v)
	}
	return writeJSON(w, http.StatusOK, out)
}

// Services.

var validLevels = map[string]bool{"L1": true, "L2": true, "L3": true}

// defaultLevel applies when a service is created without one.
const defaultLevel = "L2"

type serviceView struct {
	Name           string     `json:"name"`
	Team           string     `json:"team"`
	Level          string     `json:"level"`
	SVIDTTL        string     `json:"svid_ttl"`
	SPIFFEID       string     `json:"spiffe_id"`
	CreatedAt      time.Time  `json:"created_at"`
	RevokedAt      *time.Time `json:"revoked_at,omitempty"`
	BootstrapToken string     `json:"bootstrap_token,omitempty"`
	// BootstrapTokenExpiresAt is set when the token was created with a TTL.
	BootstrapTokenExpiresAt *time.Time `json:"bootstrap_token_expires_at,omitempty"`
}

func (a *Authority) viewService(svc store.Service) serviceView {
	id, _ := spiffeid.FromSegments(a.td, "svc", svc.Name)
	return serviceView{
		Name:      svc.Name,
		Team:      svc.Team,
		Level:     svc.Level,
		SVIDTTL:   a.svidTTLFor(svc).String(),
		SPIFFEID:  id.String(),
		CreatedAt: svc.CreatedAt.UTC(),
		RevokedAt: utcPtr(svc.RevokedAt),
	}
}

// POST /v1/services {"name","team","level","svid_ttl"}: the service and its
// first bootstrap token (shown once).
func (a *Authority) handleCreateService(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Name    string `json:"name"`
		Team    string `json:"team"`
		Level   string `json:"level"`
		SVIDTTL string `json:"svid_ttl"`
		// BootstrapTokenTTL bounds the first bootstrap token's life
		// (default: valid until revoked).
		BootstrapTokenTTL string `json:"bootstrap_token_ttl"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	if err := checkName("name", req.Name); err != nil {
		return err
	}
	if req.Name == pdp.EdgeDomain {
		return errBadRequest(fmt.Sprintf("service name %q is reserved: it is the gateway's policy domain", pdp.EdgeDomain))
	}
	if err := checkName("team", req.Team); err != nil {
		return err
	}
	if req.Level == "" {
		req.Level = defaultLevel
	}
	if !validLevels[req.Level] {
		return errBadRequest(fmt.Sprintf("level %s is invalid: want L1, L2 or L3", quote(req.Level)))
	}
	var ttl time.Duration
	if req.SVIDTTL != "" {
		d, err := time.ParseDuration(req.SVIDTTL)
		if err != nil || d < minSVIDTTL || d > maxSVIDTTL {
			return errBadRequest(fmt.Sprintf("svid_ttl %s is invalid: want a duration from 1s to 24h, such as 15m", quote(req.SVIDTTL)))
		}
		ttl = d
	}
	tokenTTL, err := parseTokenTTL(req.BootstrapTokenTTL)
	if err != nil {
		return err
	}
	if !p.canTeam(actCreate, req.Team) {
		return errForbidden(fmt.Sprintf("this admin token cannot create services in team %s", quote(req.Team)))
	}
	ctx := r.Context()
	if _, err := a.st.GetTeam(ctx, req.Team); err != nil {
		if isNotFound(err) {
			return errNotFound(fmt.Sprintf("team %s does not exist", quote(req.Team)))
		}
		return err
	}
	svc := store.Service{Name: req.Name, Team: req.Team, Level: req.Level, SVIDTTL: ttl, CreatedAt: a.now().UTC()}
	if err := a.st.CreateService(ctx, svc); err != nil {
		switch {
		case errors.Is(err, store.ErrConflict):
			return errConflict(fmt.Sprintf("service %s already exists", quote(req.Name)))
		case isNotFound(err):
			return errNotFound(fmt.Sprintf("team %s does not exist", quote(req.Team)))
		}
		return err
	}
	token, tokenID, expires, err := a.newBootstrapToken(ctx, req.Name, tokenTTL)
	if err != nil {
		return err
	}
	a.log.InfoContext(ctx, "service created", "service", req.Name, "team", req.Team, "level", req.Level, "token_id", tokenID, "token_fp", tokenFingerprint(token), "by", p.id)
	v := a.viewService(svc)
	v.BootstrapToken = token
	v.BootstrapTokenExpiresAt = expires
	return writeJSON(w, http.StatusCreated, v)
}

// maxBootstrapTokenTTL bounds a bootstrap token's optional lifetime.
const maxBootstrapTokenTTL = 366 * 24 * time.Hour

// parseTokenTTL reads an optional bootstrap token lifetime; "" is 0 (no
// expiry).
func parseTokenTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second || d > maxBootstrapTokenTTL {
		return 0, errBadRequest(fmt.Sprintf("bootstrap_token_ttl %s is invalid: want a duration from 1s to 8784h (366 days), such as 720h", quote(s)))
	}
	return d, nil
}

// newBootstrapToken creates a bootstrap token for service; with ttl > 0 it
// expires then (expires is nil otherwise).
func (a *Authority) newBootstrapToken(ctx context.Context, service string, ttl time.Duration) (token, id string, expires *time.Time, err error) {
	token, hash, err := newToken(bootstrapTokenPrefix)
	if err != nil {
		return "", "", nil, err
	}
	suffix, err := randomHex(8)
	if err != nil {
		return "", "", nil, err
	}
	id = "bt-" + suffix
	now := a.now().UTC()
	if ttl > 0 {
		t := now.Add(ttl)
		expires = &t
	}
	if err := a.st.CreateBootstrapToken(ctx, store.BootstrapToken{ID: id, Service: service, Hash: hash, CreatedAt: now, ExpiresAt: expires}); err != nil {
		return "", "", nil, err
	}
	return token, id, expires, nil
}

// GET /v1/services
func (a *Authority) handleListServices(w http.ResponseWriter, r *http.Request, p *principal) error {
	list, err := a.st.ListServices(r.Context())
	if err != nil {
		return err
	}
	out := make([]serviceView, 0, len(list))
	for _, svc := range list {
		if p.canTeam(actRead, svc.Team) {
			out = append(out, a.viewService(svc))
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// lookupService finds a service the principal may act on; others are 404
// (a team token does not learn other teams' service names).
func (a *Authority) lookupService(r *http.Request, p *principal, act action) (store.Service, error) {
	name := r.PathValue("name")
	notFound := errNotFound(fmt.Sprintf("service %s does not exist", quote(name)))
	if !nameRE.MatchString(name) {
		return store.Service{}, notFound
	}
	svc, err := a.st.GetService(r.Context(), name)
	if err != nil {
		if isNotFound(err) {
			return store.Service{}, notFound
		}
		return store.Service{}, err
	}
	if !p.canTeam(act, svc.Team) {
		return store.Service{}, notFound
	}
	return svc, nil
}

// GET /v1/services/{name}
func (a *Authority) handleGetService(w http.ResponseWriter, r *http.Request, p *principal) error {
	svc, err := a.lookupService(r, p, actRead)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, a.viewService(svc))
}

// POST /v1/services/{name}/bootstrap-token: one more token; earlier ones
// stay valid until the service is revoked.
func (a *Authority) handleBootstrapToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	svc, err := a.lookupService(r, p, actCreate)
	if err != nil {
		return err
	}
	var req struct {
		TTL string `json:"ttl"`
	}
	if err := decodeJSON(r, &req, true); err != nil {
		return err
	}
	ttl, err := parseTokenTTL(req.TTL)
	if err != nil {
		return err
	}
	if svc.RevokedAt != nil {
		return errConflict(fmt.Sprintf("service %s is revoked", svc.Name))
	}
	token, id, expires, err := a.newBootstrapToken(r.Context(), svc.Name, ttl)
	if err != nil {
		return err
	}
	a.log.InfoContext(r.Context(), "bootstrap token created", "service", svc.Name, "token_id", id, "token_fp", tokenFingerprint(token), "by", p.id)
	out := map[string]any{"id": id, "service": svc.Name, "bootstrap_token": token}
	if expires != nil {
		out["expires_at"] = *expires
	}
	return writeJSON(w, http.StatusCreated, out)
}
