package authority

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/store"
)

// RFC 5280 CRLReason codes used by the authority.
const (
	reasonUnspecified  = 0
	reasonCACompromise = 2
	reasonSuperseded   = 4
)

// reasonCodes are the CRLReason names accepted by the revocation endpoints.
var reasonCodes = map[string]int{
	"unspecified":          0,
	"keyCompromise":        1,
	"cACompromise":         2,
	"affiliationChanged":   3,
	"superseded":           4,
	"cessationOfOperation": 5,
	"privilegeWithdrawn":   9,
}

func reasonName(code int) string {
	for n, c := range reasonCodes {
		if c == code {
			return n
		}
	}
	return "unspecified"
}

// revokeRequest is the optional body of the revocation endpoints.
type revokeRequest struct {
	Reason string `json:"reason"`
}

func parseReason(r *http.Request, def int) (int, error) {
	var req revokeRequest
	if err := decodeJSON(r, &req, true); err != nil {
		return 0, err
	}
	if req.Reason == "" {
		return def, nil
	}
	code, ok := reasonCodes[req.Reason]
	if !ok {
		return 0, errBadRequest(fmt.Sprintf("reason %s is invalid: want one of unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn", quote(req.Reason)))
	}
	return code, nil
}

// revokeSerials revokes certificates by serial and records one revocation
// event for those it newly revoked. With sync, this replica applies the
// event before returning (not from inside event processing).
func (a *Authority) revokeSerials(ctx context.Context, serials []string, reason int, sync bool) ([]string, error) {
	at := a.now().UTC()
	var revoked []string
	for _, s := range serials {
		c, err := a.st.GetCertificate(ctx, s)
		if err != nil {
			return revoked, err
		}
		if c.RevokedAt != nil {
			continue
		}
		if err := a.st.RevokeCertificate(ctx, s, at, reason); err != nil {
			return revoked, err
		}
		revoked = append(revoked, s)
	}
	if len(revoked) == 0 {
		return nil, nil
	}
	if _, err := a.appendEvent(ctx, kindRevocation, revocationPayload{Serials: revoked, Reason: reasonName(reason), At: at}); err != nil {
		return revoked, err
	}
	a.metrics.revocations.WithLabelValues("serial").Add(float64(len(revoked)))
	a.record(audit.Event{Kind: audit.KindSVIDRevoked, Reason: reasonName(reason), Extra: map[string]any{"serials": revoked}})
	if sync {
		a.syncEvents(ctx)
	}
	return revoked, nil
}

// POST /v1/svids/{serial}/revoke {"reason":"keyCompromise"}
func (a *Authority) handleRevokeSVID(w http.ResponseWriter, r *http.Request, p *principal) error {
	serial, err := pathSerial(r)
	if err != nil {
		return err
	}
	reason, err := parseReason(r, reasonUnspecified)
	if err != nil {
		return err
	}
	if _, err := a.st.GetCertificate(r.Context(), serial); err != nil {
		if isNotFound(err) {
			return errNotFound(fmt.Sprintf("no certificate with serial %s", serial))
		}
		return err
	}
	if _, err := a.revokeSerials(r.Context(), []string{serial}, reason, true); err != nil {
		return err
	}
	c, err := a.st.GetCertificate(r.Context(), serial)
	if err != nil {
		return err
	}
	a.log.InfoContext(r.Context(), "certificate revoked", "serial", serial, "spiffe_id", c.SPIFFEID, "reason", reasonName(c.RevocationReason), "by", p.id)
	return writeJSON(w, http.StatusOK, map[string]any{
		"serial":     serial,
		"revoked_at": utcPtr(c.RevokedAt),
		"reason":     reasonName(c.RevocationReason),
	})
}

// pathSerial normalizes the {serial} path value to the stored form.
func pathSerial(r *http.Request) (string, error) {
	raw := r.PathValue("serial")
	n, err := ca.ParseSerialHex(raw)
	if err != nil || len(raw) > 64 {
		return "", errBadRequest(fmt.Sprintf("serial %s is invalid: want a positive hexadecimal number", quote(raw)))
	}
	return ca.SerialHex(n), nil
}

// POST /v1/services/{name}/revoke: the service is marked revoked (no more
// SVIDs), then its bootstrap tokens and unexpired certificates are revoked.
// IssueSVID re-checks the service after persisting a certificate, so an
// issuance racing with this revocation is caught by one side or the other.
func (a *Authority) handleRevokeService(w http.ResponseWriter, r *http.Request, p *principal) error {
	name := r.PathValue("name")
	if !nameRE.MatchString(name) {
		return errNotFound(fmt.Sprintf("service %s does not exist", quote(name)))
	}
	reason, err := parseReason(r, reasonUnspecified)
	if err != nil {
		return err
	}
	ctx := r.Context()
	at := a.now().UTC()
	if err := a.st.RevokeService(ctx, name, at); err != nil {
		if isNotFound(err) {
			return errNotFound(fmt.Sprintf("service %s does not exist", quote(name)))
		}
		return err
	}
	tokens, err := a.st.RevokeBootstrapTokens(ctx, name, at)
	if err != nil {
		return err
	}
	serials, err := a.st.RevokeCertificatesByService(ctx, name, at, reason)
	if err != nil {
		return err
	}
	if serials == nil {
		serials = []string{}
	}
	if _, err := a.appendEvent(ctx, kindRevocation, revocationPayload{Serials: serials, Reason: reasonName(reason), At: at, Service: name}); err != nil {
		return err
	}
	a.metrics.revocations.WithLabelValues("service").Inc()
	if err := a.dropConsumer(ctx, name); err != nil {
		return err
	}
	a.syncEvents(ctx)
	a.log.InfoContext(ctx, "service revoked", "service", name, "certificates", len(serials), "bootstrap_tokens", tokens, "by", p.id)
	svc, err := a.st.GetService(ctx, name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"service":         name,
		"revoked_at":      utcPtr(svc.RevokedAt),
		"revoked_serials": serials,
		"revoked_tokens":  tokens,
	})
}

// POST /v1/cas/{id}/revoke: a team intermediate is revoked with every
// certificate it issued; if it was the team's active intermediate, the
// team first gets a fresh one under the active root. The revoked
// intermediate then appears in the root's CRL and OCSP answers.
func (a *Authority) handleRevokeCA(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	reason, err := parseReason(r, reasonCACompromise)
	if err != nil {
		return err
	}
	ctx := r.Context()
	st, e, unlock, err := a.lockCA(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	if e.Kind != store.CAKindIntermediate || e.Team == "" {
		return errConflict("only team intermediates can be revoked; roots and the authority's own intermediate are replaced by rotation")
	}
	if e.State == store.CAStateRevoked {
		return errConflict(fmt.Sprintf("CA %s is already revoked", id))
	}
	var replacement string
	if e.State == store.CAStateActive {
		if st.activeRoot == nil {
			return fmt.Errorf("%w: no active root", ErrNoActiveCA)
		}
		rec, err := a.newIntermediate(ctx, st.activeRoot, e.Team, store.CAStateActive)
		if err != nil {
			return err
		}
		replacement = rec.ID
	}
	at := a.now().UTC()
	if err := a.st.SetCAState(ctx, id, store.CAStateRevoked, &at); err != nil {
		return err
	}
	// Stop issuing from it here before sweeping its certificates.
	if err := a.reloadCAs(ctx); err != nil {
		return err
	}
	leaves, err := a.st.RevokeCertificatesByIssuer(ctx, id, at, reason)
	if err != nil {
		return err
	}
	serials := append([]string{e.serial}, leaves...)
	if _, err := a.appendEvent(ctx, kindRevocation, revocationPayload{Serials: serials, Reason: reasonName(reason), At: at, CAID: id}); err != nil {
		return err
	}
	a.metrics.revocations.WithLabelValues("ca").Inc()
	a.syncEvents(ctx)
	a.log.InfoContext(ctx, "intermediate revoked", "ca_id", id, "team", e.Team, "certificates", len(leaves), "replacement", replacement, "by", p.id)
	if leaves == nil {
		leaves = []string{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"id":              id,
		"state":           store.CAStateRevoked,
		"revoked_at":      at,
		"revoked_serials": leaves,
		"replacement_id":  replacement,
	})
}

// applyCARevocation runs in every replica when it learns that an
// intermediate was revoked: stop issuing from it (reload), then revoke any
// certificate this or another replica issued from it after the sweep.
func (a *Authority) applyCARevocation(ctx context.Context, p revocationPayload) {
	if err := a.reloadCAs(ctx); err != nil {
		a.log.ErrorContext(ctx, "reloading CAs failed", "error", err)
		return
	}
	late, err := a.st.RevokeCertificatesByIssuer(ctx, p.CAID, p.At, reasonCACompromise)
	if err != nil {
		a.log.ErrorContext(ctx, "sweeping certificates of a revoked intermediate failed", "ca_id", p.CAID, "error", err)
		return
	}
	if len(late) == 0 {
		return
	}
	if _, err := a.appendEvent(ctx, kindRevocation, revocationPayload{Serials: late, Reason: reasonName(reasonCACompromise), At: a.now().UTC()}); err != nil {
		a.log.ErrorContext(ctx, "recording late revocations failed", "ca_id", p.CAID, "error", err)
	}
}

// revokedAtOr returns *t, or def.
func revokedAtOr(t *time.Time, def time.Time) time.Time {
	if t == nil {
		return def
	}
	return *t
}

// dropConsumer gives every provider that granted the revoked service a new
// access-list version, compiled without it.
func (a *Authority) dropConsumer(ctx context.Context, name string) error {
	grants, err := a.st.ListAccessRequests(ctx, store.AccessRequestFilter{Consumer: name, States: []string{store.RequestApproved}})
	if err != nil {
		return err
	}
	done := map[string]bool{}
	for _, g := range grants {
		if done[g.Provider] {
			continue
		}
		done[g.Provider] = true
		version, err := a.st.BumpAccessListVersion(ctx, g.Provider)
		if err != nil {
			return err
		}
		if err := a.listChanged(ctx, g.Provider, version); err != nil {
			return err
		}
	}
	return nil
}
