package authority

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/store"
)

// Trust bundle rotation, without a failed handshake:
//
//  1. POST /v1/cas/rotate {"kind":"root"}: a new root (prepared) joins the
//     bundle, with prepared intermediates for the authority and every team.
//     SDKs receive the bundle over their watch streams.
//  2. POST /v1/cas/{root}/activate: the new root and its intermediates
//     issue; the previous ones become retiring (still in the bundle, so
//     every certificate they issued keeps verifying).
//  3. POST /v1/cas/{old root}/retire: once no unexpired certificate
//     chains to the old root (409 otherwise, unless {"force":true}), it
//     leaves the bundle.
//
// Every change of the bundle bumps its version and emits a bundle event.

type caView struct {
	ID          string     `json:"id"`
	Kind        string     `json:"kind"`
	Team        string     `json:"team"`
	ParentID    string     `json:"parent_id"`
	State       string     `json:"state"`
	NotAfter    time.Time  `json:"not_after"`
	Fingerprint string     `json:"fingerprint"`
	Serial      string     `json:"serial"`
	CreatedAt   time.Time  `json:"created_at"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	CertPEM     string     `json:"cert_pem"`
	// Intermediates created with a root by rotate.
	Intermediates []caView `json:"intermediates,omitempty"`
}

func viewCA(e *caEntry) caView {
	return caView{
		ID:          e.ID,
		Kind:        e.Kind,
		Team:        e.Team,
		ParentID:    e.ParentID,
		State:       e.State,
		NotAfter:    e.NotAfter.UTC(),
		Fingerprint: ca.Fingerprint(e.cert),
		Serial:      e.serial,
		CreatedAt:   e.CreatedAt.UTC(),
		RevokedAt:   utcPtr(e.RevokedAt),
		CertPEM:     string(ca.EncodeCertsPEM(e.cert)),
	}
}

// GET /v1/cas; team tokens see their team's intermediates and the roots.
func (a *Authority) handleListCAs(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := a.reloadCAs(r.Context()); err != nil {
		return err
	}
	st := a.cas.Load()
	out := make([]caView, 0, len(st.list))
	for _, e := range st.list {
		if p.scoped() && e.Kind == store.CAKindIntermediate && !p.canTeam(actRead, e.Team) {
			continue
		}
		if p.scoped() && e.Kind == store.CAKindIntermediate && e.Team == "" {
			continue
		}
		out = append(out, viewCA(e))
	}
	return writeJSON(w, http.StatusOK, out)
}

// POST /v1/cas/rotate {"kind":"root"} | {"kind":"intermediate","team":"payments"|""}
func (a *Authority) handleRotate(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Kind string  `json:"kind"`
		Team *string `json:"team"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	ctx := r.Context()
	a.adminMu.Lock()
	defer a.adminMu.Unlock()
	if err := a.reloadCAs(ctx); err != nil {
		return err
	}
	now := a.now()
	switch req.Kind {
	case store.CAKindRoot:
		if req.Team != nil && *req.Team != "" {
			return errBadRequest("team applies to intermediates only")
		}
		teams, err := a.st.ListTeams(ctx)
		if err != nil {
			return err
		}
		root, err := ca.NewRoot(a.td, a.rootTTL, now)
		if err != nil {
			return fmt.Errorf("authority: new root: %w", err)
		}
		rootRec, err := saveCA(ctx, a.st, a.kms, root, store.CAKindRoot, "", "", store.CAStatePrepared, now)
		if err != nil {
			return err
		}
		parent := &caEntry{CA: rootRec, cert: root.Cert, signer: root}
		slots := []string{""}
		for _, t := range teams {
			slots = append(slots, t.Name)
		}
		for _, team := range slots {
			if _, err := a.newIntermediate(ctx, parent, team, store.CAStatePrepared); err != nil {
				return err
			}
		}
		if err := a.bumpBundle(ctx); err != nil {
			return err
		}
		a.syncEvents(ctx)
		st := a.cas.Load()
		v := viewCA(st.byID[rootRec.ID])
		for _, c := range st.children[rootRec.ID] {
			v.Intermediates = append(v.Intermediates, viewCA(c))
		}
		a.log.InfoContext(ctx, "root prepared", "ca_id", rootRec.ID, "fingerprint", v.Fingerprint, "by", p.id)
		return writeJSON(w, http.StatusCreated, v)

	case store.CAKindIntermediate:
		team := ""
		if req.Team != nil {
			team = *req.Team
		}
		if team != "" {
			if err := checkName("team", team); err != nil {
				return err
			}
			if _, err := a.st.GetTeam(ctx, team); err != nil {
				if isNotFound(err) {
					return errNotFound(fmt.Sprintf("team %s does not exist", quote(team)))
				}
				return err
			}
		}
		root := a.cas.Load().activeRoot
		if root == nil {
			return fmt.Errorf("%w: no active root", ErrNoActiveCA)
		}
		rec, err := a.newIntermediate(ctx, root, team, store.CAStatePrepared)
		if err != nil {
			return err
		}
		if _, err := a.appendEvent(ctx, kindCA, caPayload{CAID: rec.ID, Team: team, Change: "prepared"}); err != nil {
			return err
		}
		a.syncEvents(ctx)
		a.log.InfoContext(ctx, "intermediate prepared", "ca_id", rec.ID, "team", team, "by", p.id)
		return writeJSON(w, http.StatusCreated, viewCA(a.cas.Load().byID[rec.ID]))
	default:
		return errBadRequest(fmt.Sprintf("kind %s is invalid: want root or intermediate", quote(req.Kind)))
	}
}

// POST /v1/cas/{id}/activate
func (a *Authority) handleActivate(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := decodeJSON(r, &struct{}{}, true); err != nil {
		return err
	}
	id := r.PathValue("id")
	ctx := r.Context()
	st, e, unlock, err := a.lockCA(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	switch e.State {
	case store.CAStateActive:
		return writeJSON(w, http.StatusOK, viewCA(e))
	case store.CAStatePrepared, store.CAStateRetiring:
	default:
		return errConflict(fmt.Sprintf("CA %s is %s and cannot be activated", id, e.State))
	}
	if e.NotAfter.Before(a.now()) {
		return errConflict(fmt.Sprintf("CA %s has expired", id))
	}
	defaultChanged := false
	if e.Kind == store.CAKindRoot {
		teams, err := a.st.ListTeams(ctx)
		if err != nil {
			return err
		}
		slots := []string{""}
		for _, t := range teams {
			slots = append(slots, t.Name)
		}
		// New intermediates first, so that every slot always has an
		// active one; then the old ones retire.
		for _, team := range slots {
			var cand *caEntry
			for _, c := range st.children[e.ID] {
				if c.Team == team && (c.State == store.CAStatePrepared || c.State == store.CAStateRetiring) {
					cand = c // the newest wins
				}
			}
			if cand == nil {
				if _, err := a.newIntermediate(ctx, e, team, store.CAStateActive); err != nil {
					return err
				}
			} else if err := a.st.SetCAState(ctx, cand.ID, store.CAStateActive, nil); err != nil {
				return err
			}
		}
		if err := a.st.SetCAState(ctx, e.ID, store.CAStateActive, nil); err != nil {
			return err
		}
		for _, o := range st.list {
			if o.State == store.CAStateActive && o.ID != e.ID && o.ParentID != e.ID {
				if err := a.st.SetCAState(ctx, o.ID, store.CAStateRetiring, nil); err != nil {
					return err
				}
			}
		}
		defaultChanged = true
	} else {
		parent := st.byID[e.ParentID]
		if parent == nil || parent.State != store.CAStateActive {
			return errConflict(fmt.Sprintf("the root of %s is not active; activate the root instead", id))
		}
		if err := a.st.SetCAState(ctx, e.ID, store.CAStateActive, nil); err != nil {
			return err
		}
		for _, o := range st.list {
			if o.Kind == store.CAKindIntermediate && o.Team == e.Team && o.State == store.CAStateActive && o.ID != e.ID {
				if err := a.st.SetCAState(ctx, o.ID, store.CAStateRetiring, nil); err != nil {
					return err
				}
			}
		}
		defaultChanged = e.Team == ""
	}
	if err := a.reloadCAs(ctx); err != nil {
		return err
	}
	bumped := false
	if defaultChanged {
		// The signing certificate follows the default intermediate and is
		// published with a bundle event (renewSigningCert).
		var err error
		if bumped, err = a.renewSigningCert(ctx); err != nil {
			return err
		}
	}
	switch {
	case bumped:
	case e.Kind == store.CAKindRoot:
		if err := a.bumpBundle(ctx); err != nil {
			return err
		}
	default:
		if _, err := a.appendEvent(ctx, kindCA, caPayload{CAID: e.ID, Team: e.Team, Change: "activated"}); err != nil {
			return err
		}
	}
	a.syncEvents(ctx)
	a.log.InfoContext(ctx, "CA activated", "ca_id", id, "kind", e.Kind, "team", e.Team, "by", p.id)
	return writeJSON(w, http.StatusOK, viewCA(a.cas.Load().byID[id]))
}

// POST /v1/cas/{id}/retire {"force":false}
func (a *Authority) handleRetire(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Force bool `json:"force"`
	}
	if err := decodeJSON(r, &req, true); err != nil {
		return err
	}
	id := r.PathValue("id")
	ctx := r.Context()
	st, e, unlock, err := a.lockCA(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	switch e.State {
	case store.CAStateRetired:
		return writeJSON(w, http.StatusOK, viewCA(e))
	case store.CAStateActive:
		return errConflict(fmt.Sprintf("CA %s is active; activate its replacement first", id))
	case store.CAStateRevoked:
		return errConflict(fmt.Sprintf("CA %s is revoked", id))
	}
	issuers := []*caEntry{e}
	if e.Kind == store.CAKindRoot {
		issuers = st.children[e.ID]
		for _, c := range issuers {
			if c.State == store.CAStateActive {
				return errConflict(fmt.Sprintf("intermediate %s of root %s is active; activate another root first", c.ID, id))
			}
		}
	}
	now := a.now()
	count := 0
	for _, c := range issuers {
		n, err := a.st.CountActiveCertificates(ctx, c.ID, now)
		if err != nil {
			return err
		}
		count += n
	}
	if count > 0 && !req.Force {
		return errConflict(fmt.Sprintf("%d unexpired certificates chain to %s; retire it after they expire, or with {\"force\":true} to make them fail verification", count, id))
	}
	for _, c := range issuers {
		if c.ID != e.ID && c.State != store.CAStateRevoked && c.State != store.CAStateRetired {
			if err := a.st.SetCAState(ctx, c.ID, store.CAStateRetired, nil); err != nil {
				return err
			}
		}
	}
	if err := a.st.SetCAState(ctx, e.ID, store.CAStateRetired, nil); err != nil {
		return err
	}
	if e.Kind == store.CAKindRoot {
		if err := a.bumpBundle(ctx); err != nil {
			return err
		}
	} else {
		if err := a.reloadCAs(ctx); err != nil {
			return err
		}
		if _, err := a.appendEvent(ctx, kindCA, caPayload{CAID: e.ID, Team: e.Team, Change: "retired"}); err != nil {
			return err
		}
	}
	a.syncEvents(ctx)
	a.log.InfoContext(ctx, "CA retired", "ca_id", id, "kind", e.Kind, "forced_over", count, "by", p.id)
	return writeJSON(w, http.StatusOK, viewCA(a.cas.Load().byID[id]))
}

// bumpBundle increments the bundle version, reloads the CA view and emits
// a bundle event with the new bundle and signing certificate. Callers hold
// adminMu (the version is read-modify-write).
func (a *Authority) bumpBundle(ctx context.Context) error {
	raw, err := a.st.GetMeta(ctx, metaBundleVersion)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("authority: bundle version: %w", err)
	}
	var v int64
	if len(raw) > 0 {
		if v, err = strconv.ParseInt(string(raw), 10, 64); err != nil {
			return fmt.Errorf("authority: bundle version %q: %w", raw, err)
		}
	}
	v++
	if err := a.st.PutMeta(ctx, metaBundleVersion, []byte(strconv.FormatInt(v, 10))); err != nil {
		return fmt.Errorf("authority: bundle version: %w", err)
	}
	if err := a.reloadCAs(ctx); err != nil {
		return err
	}
	st := a.cas.Load()
	_, err = a.appendEvent(ctx, kindBundle, bundlePayload{
		BundlePEM:      string(st.bundlePEM),
		BundleVersion:  st.bundleVersion,
		SigningCertPEM: string(a.signing.Load().chainPEM),
	})
	return err
}

// lockCA takes the admin lock, reloads the CA state from the store and
// returns it with the CA named id; the caller must call unlock.
func (a *Authority) lockCA(ctx context.Context, id string) (st *caState, e *caEntry, unlock func(), err error) {
	a.adminMu.Lock()
	if err := a.reloadCAs(ctx); err != nil {
		a.adminMu.Unlock()
		return nil, nil, nil, err
	}
	st = a.cas.Load()
	if e = st.byID[id]; e == nil {
		a.adminMu.Unlock()
		return nil, nil, nil, errNotFound(fmt.Sprintf("CA %s does not exist", quote(id)))
	}
	return st, e, a.adminMu.Unlock, nil
}
