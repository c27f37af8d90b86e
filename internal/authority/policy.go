package authority

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/internal/policy"
	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/pdp"
)

// kindPolicy events announce a domain's new bundle revision:
// {"domain": "...", "revision": N}; they reach only the domain's
// workloads (the service's instances, or gateways for "edge").
const kindPolicy = pdp.EventKind

// policyPayload is the stored payload of a policy event.
type policyPayload struct {
	Domain   string `json:"domain"`
	Revision int64  `json:"revision"`
	Subject  string `json:"subject"` // the SPIFFE ID that receives it
	// Bundle is the signed bundle itself when it is small (at most
	// maxInlineBundle bytes), so that a fleet applies it without a fetch;
	// PDPs verify it like a fetched one.
	Bundle string `json:"bundle,omitempty"`
}

// maxInlineBundle bounds a bundle carried in its announcement.
const maxInlineBundle = 32 << 10

// Policy administration limits.
const (
	// maxPolicyBody bounds a push (policies, schema and tests as JSON).
	maxPolicyBody = 8 << 20
	// statusWindow is how recent a report must be to count an instance
	// as running (PDPs report every 30 s).
	statusWindow = 2 * time.Minute
	// maxHistory bounds `ward policy history`.
	maxHistory = 200
)

// Problem slugs of the policy API.
const (
	slugPolicyRejected = "policy-rejected"
	slugNoPolicy       = "no-policy"
)

// bundleCache keeps the signed bundle of each domain's latest revision.
type bundleCache struct {
	mu sync.Mutex
	m  map[string]signedList // version field holds the revision
}

func (c *bundleCache) get(domain string, revision int64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[domain]
	return s.jws, ok && s.version == revision
}

func (c *bundleCache) put(domain string, revision int64, jws []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]signedList{}
	}
	if len(c.m) >= maxCachedLists {
		clear(c.m)
	}
	c.m[domain] = signedList{version: revision, jws: jws}
}

// domainSubject is the SPIFFE ID whose workloads enforce domain.
func (a *Authority) domainSubject(domain string) (spiffeid.ID, error) {
	if domain == pdp.EdgeDomain {
		return a.componentID("gateway"), nil
	}
	return spiffeid.FromSegments(a.td, "svc", domain)
}

// authorizeDomain checks that p may change domain: "edge" needs a global
// reviewer (admin, security); a service's domain its team (or them).
func (a *Authority) authorizeDomain(ctx context.Context, p *principal, domain string, act action) error {
	if !pdp.ValidDomain(domain) {
		return errBadRequest(fmt.Sprintf("policy domain %s is invalid: a service name or %q", quote(domain), pdp.EdgeDomain))
	}
	if domain == pdp.EdgeDomain {
		if p.can(act) {
			return nil
		}
		return errForbidden("only admin and security tokens may change the edge policy domain")
	}
	svc, err := a.st.GetService(ctx, domain)
	if isNotFound(err) {
		return errNotFound(fmt.Sprintf("no service %s: a policy domain is a registered service or %q", quote(domain), pdp.EdgeDomain))
	}
	if err != nil {
		return err
	}
	if !p.canTeam(act, svc.Team) {
		return errForbidden(fmt.Sprintf("this token may not change the policies of %s (team %s)", quote(domain), quote(svc.Team)))
	}
	return nil
}

// pushRequest is the body of POST /v1/policy/domains/{domain}/versions.
type pushRequest struct {
	policy.Source
	// Shadow publishes the version as a candidate evaluated beside the
	// active one, not enforced.
	Shadow bool `json:"shadow"`
}

// versionView is a version as the API shows it.
type versionView struct {
	Domain     string    `json:"domain"`
	Version    int64     `json:"version"`
	Kind       string    `json:"kind"`
	Digest     string    `json:"digest"`
	RollbackOf int64     `json:"rollback_of,omitempty"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
	Active     bool      `json:"active"`
	Shadow     bool      `json:"shadow"`
	// Source is set when one version is asked for.
	Source *policy.Source `json:"source,omitempty"`
}

func viewVersion(v store.PolicyVersion, d store.PolicyDomain) versionView {
	return versionView{Domain: v.Domain, Version: v.Version, Kind: v.Kind, Digest: v.Digest, RollbackOf: v.RollbackOf,
		CreatedBy: v.CreatedBy, CreatedAt: v.CreatedAt.UTC(), Active: d.Active == v.Version, Shadow: d.Shadow == v.Version}
}

// rejected answers a version that fails its checks: 422 with every error
// and failed case in "errors" (an RFC 9457 extension member).
func rejected(w http.ResponseWriter, r *policy.Report) error {
	errs := append([]string{}, r.Errors...)
	for _, c := range r.Cases {
		if !c.Passed {
			errs = append(errs, fmt.Sprintf("tests/%s: %s: %s", c.File, c.Name, c.Problem))
		}
	}
	if len(errs) > 100 {
		errs = append(errs[:100], fmt.Sprintf("… and %d more", len(errs)-100))
	}
	body := struct {
		problem.Problem
		Errors []string `json:"errors"`
	}{Problem: *problem.New(http.StatusUnprocessableEntity, slugPolicyRejected, "Policy version rejected",
		"the version was not published: "+r.Summary()), Errors: errs}
	data, _ := json.Marshal(body)
	h := w.Header()
	h.Set("Content-Type", problem.ContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusUnprocessableEntity)
	_, _ = w.Write(append(data, '\n'))
	return nil
}

// POST /v1/policy/domains/{domain}/versions (admin): validate, test and
// publish a version.
func (a *Authority) handlePushPolicy(w http.ResponseWriter, r *http.Request, p *principal) error {
	domain := r.PathValue("domain")
	if err := a.authorizeDomain(r.Context(), p, domain, actReview); err != nil {
		return err
	}
	var req pushRequest
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	kind := store.PolicyKindPush
	if req.Shadow {
		kind = store.PolicyKindShadow
	}
	return a.publish(w, r, p, domain, req.Source, kind, 0)
}

// publish checks src and stores it as the domain's next version.
func (a *Authority) publish(w http.ResponseWriter, r *http.Request, p *principal, domain string, src policy.Source, kind string, rollbackOf int64) error {
	report, err := policy.Check(src)
	if err != nil {
		return errBadRequest(strings.TrimPrefix(err.Error(), "policy: "))
	}
	if !report.OK() {
		a.log.InfoContext(r.Context(), "policy version rejected", "domain", domain, "by", p.name, "summary", report.Summary())
		return rejected(w, report)
	}
	content, err := json.Marshal(src)
	if err != nil {
		return fmt.Errorf("authority: encode policy source: %w", err)
	}
	v, d, err := a.st.AddPolicyVersion(r.Context(), store.PolicyVersion{Domain: domain, Content: content, Digest: report.Digest,
		Kind: kind, RollbackOf: rollbackOf, CreatedBy: p.name, CreatedAt: a.now()})
	if err != nil {
		return err
	}
	if err := a.policyChanged(r.Context(), d); err != nil {
		return err
	}
	a.log.InfoContext(r.Context(), "policy version published", "domain", domain, "version", v.Version, "kind", kind, "by", p.name, "digest", report.Digest[:16])
	a.record(audit.Event{Kind: audit.KindPolicyPushed, User: p.name, Action: kind, Resource: "policy/" + domain, Decision: audit.Allow,
		PolicyVersion: strconv.FormatInt(v.Version, 10), Extra: map[string]any{"digest": report.Digest, "rollback_of": rollbackOf, "policies": report.Policies, "cases": len(report.Cases)}})
	return writeJSON(w, http.StatusCreated, struct {
		versionView
		Report *policy.Report `json:"report"`
	}{viewVersion(v, d), report})
}

// policyChanged announces the domain's new revision to its workloads.
func (a *Authority) policyChanged(ctx context.Context, d store.PolicyDomain) error {
	sub, err := a.domainSubject(d.Domain)
	if err != nil {
		return err
	}
	ev := policyPayload{Domain: d.Domain, Revision: d.Head, Subject: sub.String()}
	if d.Active != 0 {
		jws, err := a.policyBundle(ctx, d)
		if err != nil {
			return err
		}
		if len(jws) <= maxInlineBundle {
			ev.Bundle = string(jws)
		}
	}
	_, err = a.appendEvent(ctx, kindPolicy, ev)
	return err
}

// POST /v1/policy/domains/{domain}/rollback (admin): {"to": N}
// republishes version N's content as a new version.
func (a *Authority) handleRollbackPolicy(w http.ResponseWriter, r *http.Request, p *principal) error {
	domain := r.PathValue("domain")
	if err := a.authorizeDomain(r.Context(), p, domain, actReview); err != nil {
		return err
	}
	var req struct {
		To int64 `json:"to"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	old, err := a.st.GetPolicyVersion(r.Context(), domain, req.To)
	if isNotFound(err) {
		return errNotFound(fmt.Sprintf("domain %s has no version %d", quote(domain), req.To))
	}
	if err != nil {
		return err
	}
	src, err := decodeSource(old.Content)
	if err != nil {
		return err
	}
	return a.publish(w, r, p, domain, src, store.PolicyKindRollback, old.Version)
}

// DELETE /v1/policy/domains/{domain}/shadow (admin): stop evaluating the
// shadow candidate.
func (a *Authority) handleClearShadow(w http.ResponseWriter, r *http.Request, p *principal) error {
	domain := r.PathValue("domain")
	if err := a.authorizeDomain(r.Context(), p, domain, actReview); err != nil {
		return err
	}
	d, err := a.st.ClearPolicyShadow(r.Context(), domain)
	if isNotFound(err) {
		return errNotFound(fmt.Sprintf("domain %s has no shadow version", quote(domain)))
	}
	if err != nil {
		return err
	}
	if err := a.policyChanged(r.Context(), d); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"domain": d.Domain, "active": d.Active, "revision": d.Head})
}

func decodeSource(content []byte) (policy.Source, error) {
	var src policy.Source
	if err := json.Unmarshal(content, &src); err != nil {
		return src, fmt.Errorf("authority: stored policy source: %w", err)
	}
	return src, nil
}

// readDomain checks that p may read domain and returns its pointers
// (zero when it has no version).
func (a *Authority) readDomain(ctx context.Context, p *principal, domain string) (store.PolicyDomain, error) {
	if err := a.authorizeDomain(ctx, p, domain, actRead); err != nil {
		return store.PolicyDomain{}, err
	}
	d, err := a.st.GetPolicyDomain(ctx, domain)
	if isNotFound(err) {
		return store.PolicyDomain{Domain: domain}, nil
	}
	return d, err
}

// GET /v1/policy/domains/{domain}/versions (admin): history, newest first.
func (a *Authority) handlePolicyHistory(w http.ResponseWriter, r *http.Request, p *principal) error {
	domain := r.PathValue("domain")
	d, err := a.readDomain(r.Context(), p, domain)
	if err != nil {
		return err
	}
	vs, err := a.st.ListPolicyVersions(r.Context(), domain, maxHistory)
	if err != nil {
		return err
	}
	out := make([]versionView, 0, len(vs))
	for _, v := range vs {
		out = append(out, viewVersion(v, d))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"domain": domain, "active": d.Active, "shadow": d.Shadow, "revision": d.Head, "versions": out})
}

// GET /v1/policy/domains/{domain}/versions/{version} (admin): one version
// with its source.
func (a *Authority) handleGetPolicyVersion(w http.ResponseWriter, r *http.Request, p *principal) error {
	domain := r.PathValue("domain")
	d, err := a.readDomain(r.Context(), p, domain)
	if err != nil {
		return err
	}
	n, err := strconv.ParseInt(r.PathValue("version"), 10, 64)
	if err != nil || n < 1 {
		return errBadRequest("version must be a positive integer")
	}
	v, err := a.st.GetPolicyVersion(r.Context(), domain, n)
	if isNotFound(err) {
		return errNotFound(fmt.Sprintf("domain %s has no version %d", quote(domain), n))
	}
	if err != nil {
		return err
	}
	src, err := decodeSource(v.Content)
	if err != nil {
		return err
	}
	view := viewVersion(v, d)
	view.Source = &src
	return writeJSON(w, http.StatusOK, view)
}

// POST /v1/policy/domains/{domain}/check (admin): evaluate a request
// against the active version (or "version") and explain which policies
// decided.
func (a *Authority) handleCheckPolicy(w http.ResponseWriter, r *http.Request, p *principal) error {
	domain := r.PathValue("domain")
	d, err := a.readDomain(r.Context(), p, domain)
	if err != nil {
		return err
	}
	var req struct {
		policy.Case
		Version int64 `json:"version"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	n := d.Active
	if req.Version != 0 {
		n = req.Version
	}
	if n == 0 {
		return problem.New(http.StatusNotFound, slugNoPolicy, "No policy", fmt.Sprintf("domain %s has no active policy version: access lists alone decide", quote(domain)))
	}
	v, err := a.st.GetPolicyVersion(r.Context(), domain, n)
	if isNotFound(err) {
		return errNotFound(fmt.Sprintf("domain %s has no version %d", quote(domain), n))
	}
	if err != nil {
		return err
	}
	src, err := decodeSource(v.Content)
	if err != nil {
		return err
	}
	set, err := pdp.NewSet(pdp.Content{Version: v.Version, Policies: src.Policies, Digest: v.Digest})
	if err != nil {
		return fmt.Errorf("authority: stored policy version %d of %s: %w", v.Version, domain, err)
	}
	ex, err := policy.Explain(set, req.Case)
	if err != nil {
		return errBadRequest(err.Error())
	}
	return writeJSON(w, http.StatusOK, ex)
}

// instanceView is one PDP instance in `ward policy status`.
type instanceView struct {
	Instance   string    `json:"instance"`
	SPIFFEID   string    `json:"spiffe_id"`
	Version    int64     `json:"version"`
	Revision   int64     `json:"revision"`
	Shadow     int64     `json:"shadow_version,omitempty"`
	ReportedAt time.Time `json:"reported_at"`
	Current    bool      `json:"current"` // runs the domain's latest revision
}

// GET /v1/policy/domains/{domain}/status (admin): the instances that
// reported within statusWindow and the version each runs.
func (a *Authority) handlePolicyStatus(w http.ResponseWriter, r *http.Request, p *principal) error {
	domain := r.PathValue("domain")
	d, err := a.readDomain(r.Context(), p, domain)
	if err != nil {
		return err
	}
	if err := a.flushReports(r.Context()); err != nil {
		return err
	}
	sts, err := a.st.ListPolicyStatus(r.Context(), domain, a.now().Add(-statusWindow))
	if err != nil {
		return err
	}
	out := make([]instanceView, 0, len(sts))
	byVersion := map[string]int{}
	current := 0
	for _, s := range sts {
		iv := instanceView{Instance: s.Instance, SPIFFEID: s.SPIFFEID, Version: s.Version, Revision: s.Revision, Shadow: s.Shadow,
			ReportedAt: s.ReportedAt.UTC(), Current: s.Revision == d.Head}
		if iv.Current {
			current++
		}
		byVersion[strconv.FormatInt(s.Version, 10)]++
		out = append(out, iv)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"domain": domain, "active": d.Active, "shadow": d.Shadow, "revision": d.Head,
		"instances": out, "by_version": byVersion, "current": current, "total": len(out)})
}

// GET /v1/policy/domains (admin): every domain with a version.
func (a *Authority) handleListPolicyDomains(w http.ResponseWriter, r *http.Request, _ *principal) error {
	ds, err := a.st.ListPolicyDomains(r.Context())
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(ds))
	for _, d := range ds {
		out = append(out, map[string]any{"domain": d.Domain, "active": d.Active, "shadow": d.Shadow, "revision": d.Head})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"domains": out})
}

// workloadDomain authenticates a workload by SVID and returns the policy
// domain it enforces: its service name, or "edge" for gateways.
func (a *Authority) workloadDomain(r *http.Request) (string, peer, error) {
	p, err := a.requirePeer(r)
	if err != nil {
		return "", peer{}, err
	}
	if p.id == a.componentID("gateway") {
		return pdp.EdgeDomain, p, nil
	}
	svc, p, err := a.servicePeer(r)
	if err != nil {
		return "", peer{}, err
	}
	return svc.Name, p, nil
}

// GET /v1/policy/bundle (mTLS): the caller's domain's signed bundle, with
// ETag; 404 no-policy when the domain has no version.
func (a *Authority) handlePolicyBundle(w http.ResponseWriter, r *http.Request) error {
	domain, _, err := a.workloadDomain(r)
	if err != nil {
		return err
	}
	d, err := a.st.GetPolicyDomain(r.Context(), domain)
	if isNotFound(err) || (err == nil && d.Active == 0) {
		return problem.New(http.StatusNotFound, slugNoPolicy, "No policy", fmt.Sprintf("domain %s has no policy version: access lists alone decide", quote(domain)))
	}
	if err != nil {
		return err
	}
	etag := fmt.Sprintf(`"%s.%d"`, domain, d.Head)
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == etag {
		w.Header().Set("ETag", etag)
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	jws, err := a.policyBundle(r.Context(), d)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", pdp.MediaType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", etag)
	h.Set("Content-Length", strconv.Itoa(len(jws)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(jws)
	return nil
}

// policyBundle builds and signs (once per revision) a domain's bundle.
func (a *Authority) policyBundle(ctx context.Context, d store.PolicyDomain) ([]byte, error) {
	if jws, ok := a.bundles.get(d.Domain, d.Head); ok {
		return jws, nil
	}
	content := func(n int64) (*pdp.Content, error) {
		v, err := a.st.GetPolicyVersion(ctx, d.Domain, n)
		if err != nil {
			return nil, fmt.Errorf("authority: policy bundle of %s: %w", d.Domain, err)
		}
		src, err := decodeSource(v.Content)
		if err != nil {
			return nil, err
		}
		return &pdp.Content{Version: v.Version, Policies: src.Policies, Schema: src.Schema, Digest: v.Digest}, nil
	}
	active, err := content(d.Active)
	if err != nil {
		return nil, err
	}
	b := pdp.Bundle{Issuer: guard.AuthorityID(a.td).String(), Domain: d.Domain, Revision: d.Head, IssuedAt: a.now().Unix(), Active: *active}
	if d.Shadow != 0 {
		if b.Shadow, err = content(d.Shadow); err != nil {
			return nil, err
		}
	}
	payload, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("authority: encode policy bundle: %w", err)
	}
	jws, err := a.signJWS(payload, pdp.JWSType)
	if err != nil {
		return nil, err
	}
	a.bundles.put(d.Domain, d.Head, jws)
	return jws, nil
}

// signJWS signs payload as a compact JWS (EdDSA, typ, kid) with the
// control-plane key.
func (a *Authority) signJWS(payload []byte, typ string) ([]byte, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: a.signingKey, KeyID: a.keyID(), Algorithm: string(jose.EdDSA)}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)),
	)
	if err != nil {
		return nil, fmt.Errorf("authority: %s signer: %w", typ, err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return nil, fmt.Errorf("authority: sign %s: %w", typ, err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		return nil, fmt.Errorf("authority: sign %s: %w", typ, err)
	}
	return []byte(s), nil
}

// POST /v1/policy/status (mTLS): a PDP reports what it applied.
func (a *Authority) handleReportPolicyStatus(w http.ResponseWriter, r *http.Request) error {
	domain, p, err := a.workloadDomain(r)
	if err != nil {
		return err
	}
	var s pdp.Status
	if err := decodeJSON(r, &s, false); err != nil {
		return err
	}
	if s.Domain != domain {
		return errForbidden(fmt.Sprintf("%s enforces domain %s, not %s", p.id, quote(domain), quote(s.Domain)))
	}
	if s.Instance == "" || len(s.Instance) > 128 || strings.ContainsFunc(s.Instance, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		return errBadRequest("instance must be 1 to 128 printable ASCII characters")
	}
	if s.Version < 0 || s.Revision < 0 || s.ShadowVersion < 0 {
		return errBadRequest("versions must not be negative")
	}
	if !a.reports.add(store.PolicyStatus{Domain: domain, Instance: s.Instance, SPIFFEID: p.id.String(),
		Version: s.Version, Revision: s.Revision, Shadow: s.ShadowVersion, ReportedAt: a.now()}) {
		return problem.New(http.StatusServiceUnavailable, slugUnavailable, "Unavailable", "too many status reports pending; retry later")
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// maxPendingReports bounds the status reports held between flushes.
const maxPendingReports = 100000

// statusReports buffers PDP status reports (soft state): a fleet that
// applies a version at once reports at once, and one transaction a second
// stores them all instead of one each.
type statusReports struct {
	mu      sync.Mutex
	pending map[[2]string]store.PolicyStatus
}

// add queues a report (the latest per instance wins); false when full.
func (r *statusReports) add(s store.PolicyStatus) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = map[[2]string]store.PolicyStatus{}
	}
	k := [2]string{s.Domain, s.Instance}
	if _, ok := r.pending[k]; !ok && len(r.pending) >= maxPendingReports {
		return false
	}
	r.pending[k] = s
	return true
}

// take removes and returns the pending reports.
func (r *statusReports) take() []store.PolicyStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]store.PolicyStatus, 0, len(r.pending))
	for _, s := range r.pending {
		out = append(out, s)
	}
	clear(r.pending)
	return out
}

// flushReports stores the pending status reports; on failure they are
// dropped (instances report again every 30 s).
func (a *Authority) flushReports(ctx context.Context) error {
	sts := a.reports.take()
	if len(sts) == 0 {
		return nil
	}
	err := a.st.PutPolicyStatus(ctx, sts, a.now().Add(-24*time.Hour))
	if err != nil && ctx.Err() == nil {
		a.log.WarnContext(ctx, "storing policy status reports failed", "reports", len(sts), "error", err)
	}
	return err
}
