package authority

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/catalog"
	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/internal/store"
)

// The dependency catalogue: services declare what they provide and consume
// (POST /v1/catalog/declarations, by SVID); a new or widened consumption
// becomes a pending access request; reviewers approve or deny it; approved
// requests are grants, compiled into each provider's signed access list.

// Problem slugs of the catalogue.
const (
	slugInvalidManifest     = "invalid-manifest"
	slugUnknownDependency   = "unknown-dependency"
	slugUnsupportedMedia    = "unsupported-media-type"
	slugTooManyDeclarations = "too-many-declarations"
)

// allowDeclaration charges one changed declaration to service: a burst of
// tun.declareBurst, refilled at tun.declareRate per second, so that one
// service cannot grow the declaration history and the review queue
// without bound. Unchanged declarations (every instance declaring at
// start-up) are free. The limiters are per registered service.
func (a *Authority) allowDeclaration(service string) bool {
	a.declMu.Lock()
	defer a.declMu.Unlock()
	if a.declLimits == nil {
		a.declLimits = map[string]*rate.Limiter{}
	}
	l, ok := a.declLimits[service]
	if !ok {
		l = rate.NewLimiter(rate.Limit(a.tun.declareRate), a.tun.declareBurst)
		a.declLimits[service] = l
	}
	return l.Allow()
}

// requestView is an access request as the admin API shows it.
type requestView struct {
	ID              string     `json:"id"`
	Consumer        string     `json:"consumer"`
	ConsumerLevel   string     `json:"consumer_level,omitempty"`
	Provider        string     `json:"provider"`
	ProviderLevel   string     `json:"provider_level,omitempty"`
	ProviderTeam    string     `json:"provider_team,omitempty"`
	Resource        string     `json:"resource"`
	Actions         []string   `json:"actions"`
	ConsumerVersion string     `json:"consumer_version"`
	State           string     `json:"state"`
	RequestedAt     time.Time  `json:"requested_at"`
	Approvers       []string   `json:"approvers,omitempty"`           // roles that may decide (pending only)
	NeedsReason     bool       `json:"needs_justification,omitempty"` // approval must carry a justification
	Auto            bool       `json:"auto,omitempty"`
	DecidedBy       string     `json:"decided_by,omitempty"`
	DecidedRole     string     `json:"decided_role,omitempty"`
	DecidedAt       *time.Time `json:"decided_at,omitempty"`
	Reason          string     `json:"reason,omitempty"`
	RevokedBy       string     `json:"revoked_by,omitempty"`
	RevokedAt       *time.Time `json:"revoked_at,omitempty"`
	RevokeReason    string     `json:"revoke_reason,omitempty"`
}

// reviewContext is what deciding a request depends on.
type reviewContext struct {
	consumer, provider store.Service
	rule               catalog.Rule
}

// review loads the services of a request and the rule that governs it,
// with the levels and the provider's declaration as they are now.
func (a *Authority) review(ctx context.Context, req store.AccessRequest) (reviewContext, error) {
	var rc reviewContext
	var err error
	// a.service caches: team and level never change, revocations arrive
	// as events.
	if rc.consumer, err = a.service(ctx, req.Consumer); err != nil {
		return rc, fmt.Errorf("authority: request %s: consumer: %w", req.ID, err)
	}
	if rc.provider, err = a.service(ctx, req.Provider); err != nil {
		return rc, fmt.Errorf("authority: request %s: provider: %w", req.ID, err)
	}
	auto := false
	if d, err := a.st.LatestDeclaration(ctx, req.Provider); err == nil {
		m, err := catalog.DecodeStored(d.Manifest)
		if err != nil {
			return rc, fmt.Errorf("authority: declaration of %s: %w", req.Provider, err)
		}
		auto = m.AutoApproveL1
	} else if !isNotFound(err) {
		return rc, err
	}
	rc.rule = catalog.RuleFor(rc.consumer.Level, rc.provider.Level, auto)
	return rc, nil
}

// approvers lists the roles that may approve under rule.
func approvers(rule catalog.Rule, providerTeam string) []string {
	if rule.SecurityOnly {
		return []string{roleSecurity, roleAdmin}
	}
	return []string{roleSecurity, roleAdmin, roleTeamPrefix + providerTeam}
}

// decidingRole is the role under which p may decide on a request to a
// provider of providerTeam; false when it may not.
func decidingRole(p *principal, rule catalog.Rule, providerTeam string) (string, bool) {
	switch {
	case p.roles[roleSecurity]:
		return roleSecurity, true
	case p.roles[roleAdmin]:
		return roleAdmin, true
	case !rule.SecurityOnly && p.teams[providerTeam]:
		return roleTeamPrefix + providerTeam, true
	}
	return "", false
}

func (a *Authority) viewRequest(ctx context.Context, req store.AccessRequest) requestView {
	v := requestView{
		ID: req.ID, Consumer: req.Consumer, Provider: req.Provider, Resource: req.Resource,
		Actions: req.Actions, ConsumerVersion: req.ConsumerVersion, State: req.State,
		RequestedAt: req.RequestedAt.UTC(), Auto: req.Auto, DecidedBy: req.DecidedBy,
		DecidedRole: req.DecidedRole, DecidedAt: utcPtr(req.DecidedAt), Reason: req.Reason,
		RevokedBy: req.RevokedBy, RevokedAt: utcPtr(req.RevokedAt), RevokeReason: req.RevokeReason,
	}
	if rc, err := a.review(ctx, req); err == nil {
		v.ConsumerLevel, v.ProviderLevel, v.ProviderTeam = rc.consumer.Level, rc.provider.Level, rc.provider.Team
		if req.State == store.RequestPending {
			v.Approvers = approvers(rc.rule, rc.provider.Team)
			v.NeedsReason = rc.rule.NeedsJustification
		}
	}
	return v
}

// visible reports whether p may see a request: a global reader, or a team
// token of the consumer's or the provider's team.
func (a *Authority) visible(ctx context.Context, p *principal, req store.AccessRequest) bool {
	if p.can(actRead) {
		return true
	}
	for _, name := range []string{req.Consumer, req.Provider} {
		if svc, err := a.service(ctx, name); err == nil && p.teams[svc.Team] {
			return true
		}
	}
	return false
}

// consumptionResult reports what a declaration did with one consumes entry.
type consumptionResult struct {
	Provider  string   `json:"provider"`
	Resource  string   `json:"resource"`
	Actions   []string `json:"actions"`
	State     string   `json:"state"` // granted, pending, approved (automatically now), denied
	RequestID string   `json:"request_id,omitempty"`
	Missing   []string `json:"missing,omitempty"` // actions not yet granted
	Reason    string   `json:"reason,omitempty"`
}

type declarationView struct {
	Service    string              `json:"service"`
	Version    string              `json:"version"`
	DeclaredAt time.Time           `json:"declared_at"`
	Unchanged  bool                `json:"unchanged"` // identical to the current declaration; nothing stored
	Consumes   []consumptionResult `json:"consumes"`
}

// readManifest reads a declaration body: YAML or JSON, at most
// catalog.MaxManifestSize.
func readManifest(r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			return nil, problem.New(http.StatusUnsupportedMediaType, slugUnsupportedMedia, "Unsupported media type", "Content-Type is malformed")
		case mt == "application/yaml", mt == "application/x-yaml", mt == "text/yaml", mt == "application/json", mt == "text/plain":
		default:
			return nil, problem.New(http.StatusUnsupportedMediaType, slugUnsupportedMedia, "Unsupported media type", "send the manifest as application/yaml or application/json")
		}
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, catalog.MaxManifestSize+1))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, err
		}
		return nil, errBadRequest("could not read the request body")
	}
	if len(data) > catalog.MaxManifestSize {
		return nil, problem.New(http.StatusRequestEntityTooLarge, slugTooLarge, "Payload too large", fmt.Sprintf("a manifest is at most %d bytes", catalog.MaxManifestSize))
	}
	return data, nil
}

func errUnknownDependency(detail string) error {
	return problem.New(http.StatusUnprocessableEntity, slugUnknownDependency, "Unknown dependency", detail)
}

// POST /v1/catalog/declarations (mTLS): a service declares itself.
func (a *Authority) handleDeclare(w http.ResponseWriter, r *http.Request) error {
	self, p, err := a.servicePeer(r)
	if err != nil {
		return err
	}
	data, err := readManifest(r)
	if err != nil {
		return err
	}
	m, err := catalog.ParseManifest(data)
	if err != nil {
		return problem.New(http.StatusBadRequest, slugInvalidManifest, "Invalid manifest", strings.TrimPrefix(err.Error(), "catalog: invalid manifest: "))
	}
	if m.Service != self.Name {
		a.log.WarnContext(r.Context(), "declaration for another service refused", "peer", p.id.String(), "declared", m.Service)
		return errForbiddenIdentity(fmt.Sprintf("%s may declare only service %s, not %s", p.id, quote(self.Name), quote(m.Service)))
	}
	ctx := r.Context()
	// Every consumption must name a provided resource and action.
	providers := map[string]store.Service{}
	provided := map[string]catalog.Manifest{}
	for i, c := range m.Consumes {
		psvc, err := a.st.GetService(ctx, c.Service)
		if isNotFound(err) || (err == nil && psvc.RevokedAt != nil) {
			return errUnknownDependency(fmt.Sprintf("consumes[%d]: service %s is not registered", i, quote(c.Service)))
		}
		if err != nil {
			return err
		}
		pm, ok := provided[c.Service]
		if !ok {
			d, err := a.st.LatestDeclaration(ctx, c.Service)
			if isNotFound(err) {
				return errUnknownDependency(fmt.Sprintf("consumes[%d]: service %s has not declared what it provides yet", i, quote(c.Service)))
			}
			if err != nil {
				return err
			}
			if pm, err = catalog.DecodeStored(d.Manifest); err != nil {
				return fmt.Errorf("authority: declaration of %s: %w", c.Service, err)
			}
			provided[c.Service] = pm
		}
		providers[c.Service] = psvc
		if pm.ProvidedActions(c.Resource) == nil {
			return errUnknownDependency(fmt.Sprintf("consumes[%d]: service %s provides no resource %s", i, quote(c.Service), quote(c.Resource)))
		}
		for j, act := range c.Actions {
			if !pm.ProvidesAction(c.Resource, act) {
				return errUnknownDependency(fmt.Sprintf("consumes[%d].actions[%d]: service %s provides no action %s on %s", i, j, quote(c.Service), quote(act), quote(c.Resource)))
			}
		}
	}

	a.catalogMu.Lock()
	defer a.catalogMu.Unlock()
	now := a.now().UTC()
	view := declarationView{Service: m.Service, Version: m.Version, DeclaredAt: now, Consumes: []consumptionResult{}}
	canonical := m.Canonical()
	latest, err := a.st.LatestDeclaration(ctx, self.Name)
	switch {
	case err == nil && latest.Version == m.Version && bytes.Equal(latest.Manifest, canonical):
		view.Unchanged, view.DeclaredAt = true, latest.DeclaredAt.UTC()
	case err == nil || isNotFound(err):
		if !a.allowDeclaration(self.Name) {
			a.log.WarnContext(ctx, "declaration refused: too many changes", "service", self.Name)
			return problem.New(http.StatusTooManyRequests, slugTooManyDeclarations, "Too many declarations",
				fmt.Sprintf("service %s changed its declaration too often; retry later", quote(self.Name)))
		}
		bump := true
		if err == nil {
			old, derr := catalog.DecodeStored(latest.Manifest)
			bump = derr != nil || !slices.EqualFunc(old.Provides, m.Provides, func(x, y catalog.Provided) bool {
				return x.Resource == y.Resource && slices.Equal(x.Actions, y.Actions)
			})
		}
		_, version, err := a.st.PutDeclaration(ctx, store.Declaration{
			Service: self.Name, Version: m.Version, Manifest: canonical, Serial: serialOf(p.leaf), DeclaredAt: now,
		}, bump)
		if err != nil {
			return err
		}
		if bump {
			if err := a.listChanged(ctx, self.Name, version); err != nil {
				return err
			}
		}
		a.log.InfoContext(ctx, "service declared", "service", self.Name, "version", m.Version,
			"provides", len(m.Provides), "consumes", len(m.Consumes), "list_changed", bump)
	default:
		return err
	}

	for _, c := range m.Consumes {
		res, err := a.consume(ctx, self, providers[c.Service], provided[c.Service], m.Version, c, now)
		if err != nil {
			return err
		}
		view.Consumes = append(view.Consumes, res)
	}
	a.syncEvents(ctx)
	return writeJSON(w, http.StatusOK, view)
}

// consume turns one consumes entry into nothing (already granted or
// pending), a new pending request (superseding a pending one that asked
// for other actions), or an automatic grant. A request denied for the
// same actions and consumer version is not asked again.
func (a *Authority) consume(ctx context.Context, consumer, provider store.Service, pm catalog.Manifest, version string, c catalog.Consumed, now time.Time) (consumptionResult, error) {
	res := consumptionResult{Provider: c.Service, Resource: c.Resource, Actions: c.Actions}
	reqs, err := a.st.ListAccessRequests(ctx, store.AccessRequestFilter{Consumer: consumer.Name, Provider: c.Service, Resource: c.Resource})
	if err != nil {
		return res, err
	}
	granted := map[string]bool{}
	for _, q := range reqs {
		if q.State == store.RequestApproved {
			for _, act := range q.Actions {
				granted[act] = true
			}
		}
	}
	var missing []string
	for _, act := range c.Actions {
		if !granted[act] {
			missing = append(missing, act)
		}
	}
	if len(missing) == 0 {
		res.State = "granted"
		return res, nil
	}
	res.Missing = missing
	for _, q := range reqs {
		switch {
		case q.State == store.RequestPending && slices.Equal(q.Actions, missing):
			res.State, res.RequestID = store.RequestPending, q.ID
			return res, nil
		case q.State == store.RequestPending:
			_, _, err := a.st.DecideAccessRequest(ctx, q.ID, store.AccessDecision{
				State: store.RequestSuperseded, By: "catalog", Role: "catalog",
				Reason: fmt.Sprintf("superseded by declaration version %s", version), At: now,
			})
			if err != nil && !errors.Is(err, store.ErrConflict) {
				return res, err
			}
		case q.State == store.RequestDenied && slices.Equal(q.Actions, missing) && q.ConsumerVersion == version:
			res.State, res.RequestID, res.Reason = store.RequestDenied, q.ID, q.Reason
			return res, nil
		}
	}
	id, err := randomHex(8)
	if err != nil {
		return res, err
	}
	req := store.AccessRequest{
		ID: "req-" + id, Consumer: consumer.Name, Provider: c.Service, Resource: c.Resource,
		Actions: missing, ConsumerVersion: version, State: store.RequestPending, RequestedAt: now,
	}
	rule := catalog.RuleFor(consumer.Level, provider.Level, pm.AutoApproveL1)
	if rule.Auto {
		req.State, req.Auto = store.RequestApproved, true
		req.DecidedBy, req.DecidedRole, req.DecidedAt = "auto", "auto", &now
		req.Reason = "L1 consumer of an L1 provider that opted in (auto_approve_l1)"
	}
	listVersion, err := a.st.CreateAccessRequest(ctx, req)
	if errors.Is(err, store.ErrConflict) {
		// Another replica created the pending request concurrently.
		res.State = store.RequestPending
		return res, nil
	}
	if err != nil {
		return res, err
	}
	res.RequestID = req.ID
	if rule.Auto {
		res.State = store.RequestApproved
		a.metrics.catalogDecisions.WithLabelValues("auto").Inc()
		a.log.InfoContext(ctx, "access granted automatically", "request", req.ID, "consumer", req.Consumer,
			"provider", req.Provider, "resource", req.Resource, "actions", strings.Join(req.Actions, ","))
		return res, a.listChanged(ctx, req.Provider, listVersion)
	}
	res.State = store.RequestPending
	a.log.InfoContext(ctx, "access requested", "request", req.ID, "consumer", req.Consumer,
		"provider", req.Provider, "resource", req.Resource, "actions", strings.Join(req.Actions, ","))
	return res, nil
}

// GET /v1/catalog/requests?state=pending|approved|denied|superseded|revoked|all&consumer=&provider=
func (a *Authority) handleListRequests(w http.ResponseWriter, r *http.Request, p *principal) error {
	q := r.URL.Query()
	f := store.AccessRequestFilter{Consumer: q.Get("consumer"), Provider: q.Get("provider")}
	for _, n := range []string{f.Consumer, f.Provider} {
		if n != "" && !nameRE.MatchString(n) {
			return errBadRequest(fmt.Sprintf("service name %s is invalid", quote(n)))
		}
	}
	switch st := q.Get("state"); st {
	case "", store.RequestPending:
		f.States = []string{store.RequestPending}
	case "all":
	case store.RequestApproved, store.RequestDenied, store.RequestSuperseded, store.RequestRevoked:
		f.States = []string{st}
	default:
		return errBadRequest(fmt.Sprintf("state %s is invalid: want pending, approved, denied, superseded, revoked or all", quote(st)))
	}
	return a.writeRequests(w, r, p, f)
}

// GET /v1/catalog/grants?consumer=&provider=: approved requests.
func (a *Authority) handleListGrants(w http.ResponseWriter, r *http.Request, p *principal) error {
	q := r.URL.Query()
	f := store.AccessRequestFilter{Consumer: q.Get("consumer"), Provider: q.Get("provider"), States: []string{store.RequestApproved}}
	for _, n := range []string{f.Consumer, f.Provider} {
		if n != "" && !nameRE.MatchString(n) {
			return errBadRequest(fmt.Sprintf("service name %s is invalid", quote(n)))
		}
	}
	return a.writeRequests(w, r, p, f)
}

func (a *Authority) writeRequests(w http.ResponseWriter, r *http.Request, p *principal, f store.AccessRequestFilter) error {
	reqs, err := a.st.ListAccessRequests(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]requestView, 0, len(reqs))
	for _, req := range reqs {
		if a.visible(r.Context(), p, req) {
			out = append(out, a.viewRequest(r.Context(), req))
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// lookupRequest finds a request p may see; anything else is 404.
func (a *Authority) lookupRequest(r *http.Request, p *principal) (store.AccessRequest, error) {
	id := r.PathValue("id")
	notFound := errNotFound(fmt.Sprintf("access request %s does not exist", quote(id)))
	if !strings.HasPrefix(id, "req-") || !validID(id) {
		return store.AccessRequest{}, notFound
	}
	req, err := a.st.GetAccessRequest(r.Context(), id)
	if isNotFound(err) {
		return store.AccessRequest{}, notFound
	}
	if err != nil {
		return store.AccessRequest{}, err
	}
	if !a.visible(r.Context(), p, req) {
		return store.AccessRequest{}, notFound
	}
	return req, nil
}

// GET /v1/catalog/requests/{id}
func (a *Authority) handleGetRequest(w http.ResponseWriter, r *http.Request, p *principal) error {
	req, err := a.lookupRequest(r, p)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, a.viewRequest(r.Context(), req))
}

// notPending explains why a request cannot be decided.
func notPending(req store.AccessRequest) error {
	at := ""
	if req.DecidedAt != nil {
		at = " at " + req.DecidedAt.UTC().Format(time.RFC3339)
	}
	switch req.State {
	case store.RequestApproved:
		return errConflict(fmt.Sprintf("access request %s was already approved%s by %s", req.ID, at, quote(req.DecidedBy)))
	case store.RequestDenied:
		return errConflict(fmt.Sprintf("access request %s was denied%s by %s; the consumer must declare a new version to ask again", req.ID, at, quote(req.DecidedBy)))
	case store.RequestSuperseded:
		return errConflict(fmt.Sprintf("access request %s was superseded by a newer declaration; see `ward catalog pending`", req.ID))
	case store.RequestRevoked:
		return errConflict(fmt.Sprintf("access request %s was approved and has since been revoked", req.ID))
	}
	return errConflict(fmt.Sprintf("access request %s is %s", req.ID, req.State))
}

type decisionBody struct {
	Reason string `json:"reason"`
}

const maxReason = 1024

func readReason(r *http.Request, required bool, what string) (string, error) {
	var body decisionBody
	if err := decodeJSON(r, &body, !required); err != nil {
		return "", err
	}
	reason := strings.TrimSpace(body.Reason)
	if len(reason) > maxReason {
		return "", errBadRequest(fmt.Sprintf("reason is longer than %d bytes", maxReason))
	}
	if required && reason == "" {
		return "", errBadRequest(fmt.Sprintf("a reason is required to %s", what))
	}
	return reason, nil
}

// POST /v1/catalog/requests/{id}/approve {"reason": "..."}
func (a *Authority) handleApprove(w http.ResponseWriter, r *http.Request, p *principal) error {
	return a.decide(w, r, p, store.RequestApproved)
}

// POST /v1/catalog/requests/{id}/deny {"reason": "..."} (reason required)
func (a *Authority) handleDeny(w http.ResponseWriter, r *http.Request, p *principal) error {
	return a.decide(w, r, p, store.RequestDenied)
}

func (a *Authority) decide(w http.ResponseWriter, r *http.Request, p *principal, state string) error {
	req, err := a.lookupRequest(r, p)
	if err != nil {
		return err
	}
	verb := "approve"
	if state == store.RequestDenied {
		verb = "deny"
	}
	reason, err := readReason(r, state == store.RequestDenied, verb+" an access request")
	if err != nil {
		return err
	}
	if req.State != store.RequestPending {
		return notPending(req)
	}
	ctx := r.Context()
	rc, err := a.review(ctx, req)
	if err != nil {
		return err
	}
	role, ok := decidingRole(p, rc.rule, rc.provider.Team)
	if !ok {
		if rc.rule.SecurityOnly {
			return errForbidden(fmt.Sprintf("%s is an L3 service: only the security role may decide on access to it", quote(req.Provider)))
		}
		return errForbidden(fmt.Sprintf("deciding on access to %s needs the security role or team:%s", quote(req.Provider), rc.provider.Team))
	}
	if state == store.RequestApproved && rc.rule.NeedsJustification && !catalog.Justified(reason) {
		return errBadRequest(fmt.Sprintf("%s (L1) may reach the L3 service %s only with a recorded justification: give a reason of at least %d characters",
			quote(req.Consumer), quote(req.Provider), catalog.MinJustification))
	}
	if state == store.RequestApproved && rc.consumer.RevokedAt != nil {
		return errConflict(fmt.Sprintf("the consumer %s has been revoked", quote(req.Consumer)))
	}
	updated, version, err := a.st.DecideAccessRequest(ctx, req.ID, store.AccessDecision{
		State: state, By: p.name, ByID: p.id, Role: role, Reason: reason, At: a.now().UTC(),
	})
	if errors.Is(err, store.ErrConflict) {
		return notPending(updated)
	}
	if err != nil {
		return err
	}
	a.metrics.catalogDecisions.WithLabelValues(state).Inc()
	a.log.InfoContext(ctx, "access request decided", "request", req.ID, "decision", state, "consumer", req.Consumer,
		"provider", req.Provider, "resource", req.Resource, "actions", strings.Join(req.Actions, ","), "by", p.id, "role", role)
	kind := "catalog." + state // catalog.approved, catalog.denied
	a.record(audit.Event{Kind: kind, User: p.name, Caller: req.Consumer, Resource: req.Provider + "/" + req.Resource,
		Action: strings.Join(req.Actions, ","), Decision: map[bool]string{true: audit.Allow, false: audit.Deny}[state == store.RequestApproved],
		Reason: reason, Extra: map[string]any{"request": req.ID, "role": role}})
	if state == store.RequestApproved {
		if err := a.listChanged(ctx, req.Provider, version); err != nil {
			return err
		}
		a.syncEvents(ctx)
	}
	return writeJSON(w, http.StatusOK, a.viewRequest(ctx, updated))
}

// POST /v1/catalog/grants/{id}/revoke {"reason": "..."} (reason required):
// security, admin or the provider's team take a grant back.
func (a *Authority) handleRevokeGrant(w http.ResponseWriter, r *http.Request, p *principal) error {
	req, err := a.lookupRequest(r, p)
	if err != nil {
		return err
	}
	reason, err := readReason(r, true, "revoke a grant")
	if err != nil {
		return err
	}
	if req.State != store.RequestApproved {
		if req.State == store.RequestRevoked {
			return errConflict(fmt.Sprintf("grant %s was already revoked", req.ID))
		}
		return errConflict(fmt.Sprintf("%s is not a grant: the request is %s", req.ID, req.State))
	}
	ctx := r.Context()
	provider, err := a.st.GetService(ctx, req.Provider)
	if err != nil {
		return err
	}
	// Taking access back is never harder than granting it: the provider's
	// team may do it for any level.
	role, ok := decidingRole(p, catalog.Rule{}, provider.Team)
	if !ok {
		return errForbidden(fmt.Sprintf("revoking access to %s needs the security role or team:%s", quote(req.Provider), provider.Team))
	}
	updated, version, err := a.st.RevokeAccessGrant(ctx, req.ID, store.AccessDecision{
		By: p.name, ByID: p.id, Role: role, Reason: reason, At: a.now().UTC(),
	})
	if errors.Is(err, store.ErrConflict) {
		return errConflict(fmt.Sprintf("grant %s is %s", req.ID, updated.State))
	}
	if err != nil {
		return err
	}
	a.metrics.catalogDecisions.WithLabelValues("revoked").Inc()
	a.log.InfoContext(ctx, "grant revoked", "grant", req.ID, "consumer", req.Consumer, "provider", req.Provider,
		"resource", req.Resource, "by", p.id, "role", role)
	if err := a.listChanged(ctx, req.Provider, version); err != nil {
		return err
	}
	a.syncEvents(ctx)
	return writeJSON(w, http.StatusOK, a.viewRequest(ctx, updated))
}

// GET /v1/posture: every service with its level, grants and the rules
// they break.
func (a *Authority) handlePosture(w http.ResponseWriter, r *http.Request, _ *principal) error {
	in, err := a.postureInput(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, catalog.Posture(in))
}

func (a *Authority) postureInput(ctx context.Context) (catalog.PostureInput, error) {
	var in catalog.PostureInput
	var err error
	if in.Services, err = a.st.ListServices(ctx); err != nil {
		return in, err
	}
	if in.Declarations, err = a.st.ListLatestDeclarations(ctx); err != nil {
		return in, err
	}
	if in.Grants, err = a.st.ListAccessRequests(ctx, store.AccessRequestFilter{States: []string{store.RequestApproved}}); err != nil {
		return in, err
	}
	if in.Pending, err = a.st.ListAccessRequests(ctx, store.AccessRequestFilter{States: []string{store.RequestPending}}); err != nil {
		return in, err
	}
	return in, nil
}

// GET /v1/catalog/graph?format=dot|mermaid: who may call whom.
func (a *Authority) handleGraph(w http.ResponseWriter, r *http.Request, _ *principal) error {
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "dot"
	}
	in, err := a.postureInput(r.Context())
	if err != nil {
		return err
	}
	out, err := catalog.Graph(in.Services, in.Grants, format)
	if errors.Is(err, catalog.ErrUnknownFormat) {
		return errBadRequest(fmt.Sprintf("format %s is invalid: want dot or mermaid", quote(format)))
	}
	if err != nil {
		return err
	}
	ct := "text/vnd.graphviz; charset=utf-8"
	if format == "mermaid" {
		ct = "text/vnd.mermaid; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, out)
	return nil
}
