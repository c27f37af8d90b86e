package authority

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/wardsec/ward/internal/store"
)

// kindAgentEntries events tell node agents that registration entries
// changed ({"version": seq}); agents then fetch theirs.
const kindAgentEntries = "agent-entries"

// entryView is a registration entry in the API.
type entryView struct {
	ID        string    `json:"id"`
	Service   string    `json:"service"`
	SPIFFEID  string    `json:"spiffe_id"`
	Host      string    `json:"host,omitempty"`
	UID       *int      `json:"uid,omitempty"`
	GID       *int      `json:"gid,omitempty"`
	Path      string    `json:"path,omitempty"`
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

func (a *Authority) viewEntry(e store.AgentEntry) entryView {
	return entryView{ID: e.ID, Service: e.Service, SPIFFEID: fmt.Sprintf("spiffe://%s/svc/%s", a.td.Name(), e.Service), Host: e.Host,
		UID: e.UID, GID: e.GID, Path: e.Path, CreatedBy: e.CreatedBy, CreatedAt: e.CreatedAt.UTC()}
}

// POST /v1/agent/entries (admin; team tokens for their services):
// {"service","host"?,"uid"?,"gid"?,"path"?} — at least one selector.
func (a *Authority) handleCreateAgentEntry(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Service string `json:"service"`
		Host    string `json:"host"`
		UID     *int   `json:"uid"`
		GID     *int   `json:"gid"`
		Path    string `json:"path"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	if err := checkName("service", req.Service); err != nil {
		return err
	}
	svc, err := a.service(r.Context(), req.Service)
	if err != nil {
		return err
	}
	if !p.canTeam(actCreate, svc.Team) {
		return errForbidden(fmt.Sprintf("this token may not register workloads of %s (team %s)", quote(req.Service), quote(svc.Team)))
	}
	if req.Host != "" && !hostRE.MatchString(req.Host) {
		return errBadRequest("host must be one lower-case DNS label (the agent's --host)")
	}
	if req.UID == nil && req.GID == nil && req.Path == "" {
		return errBadRequest("an entry needs at least one selector: uid, gid or path")
	}
	for _, v := range []*int{req.UID, req.GID} {
		if v != nil && (*v < 0 || *v > 1<<31-2) {
			return errBadRequest("uid and gid are non-negative integers")
		}
	}
	if req.Path != "" && (!filepath.IsAbs(req.Path) || len(req.Path) > 4096 || strings.ContainsRune(req.Path, 0) || filepath.Clean(req.Path) != req.Path) {
		return errBadRequest("path must be an absolute, clean executable path")
	}
	id, err := randomHex(8)
	if err != nil {
		return err
	}
	e := store.AgentEntry{ID: "ae-" + id, Service: req.Service, Host: req.Host, UID: req.UID, GID: req.GID, Path: req.Path,
		CreatedBy: p.name, CreatedAt: a.now().UTC()}
	if err := a.st.CreateAgentEntry(r.Context(), e); err != nil {
		return err
	}
	if _, err := a.appendEvent(r.Context(), kindAgentEntries, map[string]any{}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, a.viewEntry(e))
}

// GET /v1/agent/entries (admin): every entry.
func (a *Authority) handleListAgentEntries(w http.ResponseWriter, r *http.Request, p *principal) error {
	es, err := a.st.ListAgentEntries(r.Context(), "*")
	if err != nil {
		return err
	}
	out := make([]entryView, 0, len(es))
	for _, e := range es {
		if p.scoped() {
			svc, err := a.service(r.Context(), e.Service)
			if err != nil || !p.canTeam(actRead, svc.Team) {
				continue
			}
		}
		out = append(out, a.viewEntry(e))
	}
	return writeJSON(w, http.StatusOK, out)
}

// DELETE /v1/agent/entries/{id} (admin; team tokens for their services).
func (a *Authority) handleDeleteAgentEntry(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	if !validID(id) {
		return errNotFound("no such entry")
	}
	es, err := a.st.ListAgentEntries(r.Context(), "*")
	if err != nil {
		return err
	}
	for _, e := range es {
		if e.ID != id {
			continue
		}
		svc, err := a.service(r.Context(), e.Service)
		if err == nil && !p.canTeam(actCreate, svc.Team) {
			return errForbidden("this token may not remove workloads of another team")
		}
		if _, err := a.st.DeleteAgentEntry(r.Context(), id); err != nil {
			return err
		}
		if _, err := a.appendEvent(r.Context(), kindAgentEntries, map[string]any{}); err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, map[string]any{"id": id, "deleted_at": a.now().UTC()})
	}
	return errNotFound("no such entry")
}

// agentPeer authenticates a node agent (spiffe://<td>/ward/agent or
// …/ward/agent/<host>) and returns its host ("" for an unbound agent,
// which sees only entries for every host).
func (a *Authority) agentPeer(r *http.Request) (string, error) {
	p, err := a.requirePeer(r)
	if err != nil {
		return "", err
	}
	if p.id == a.componentID("agent") {
		return "", nil
	}
	if host, ok := strings.CutPrefix(p.id.Path(), "/ward/agent/"); ok && p.id.TrustDomain() == a.td && hostRE.MatchString(host) {
		return host, nil
	}
	return "", errForbiddenIdentity(fmt.Sprintf("%s is not a node agent identity", p.id))
}

// GET /v1/agent/workload-entries (mTLS, agents): the entries of the
// agent's host.
func (a *Authority) handleAgentEntries(w http.ResponseWriter, r *http.Request) error {
	host, err := a.agentPeer(r)
	if err != nil {
		return err
	}
	es, err := a.st.ListAgentEntries(r.Context(), host)
	if err != nil {
		return err
	}
	out := make([]entryView, 0, len(es))
	for _, e := range es {
		if e.Host == "" || e.Host == host {
			out = append(out, a.viewEntry(e))
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// POST /v1/agent/svid (mTLS, agents): {"service","csr"} — the SVID of a
// service that has an entry for this agent's host.
func (a *Authority) handleAgentSVID(w http.ResponseWriter, r *http.Request) error {
	host, err := a.agentPeer(r)
	if err != nil {
		return err
	}
	var req struct {
		Service string `json:"service"`
		CSR     string `json:"csr"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	es, err := a.st.ListAgentEntries(r.Context(), host)
	if err != nil {
		return err
	}
	entitled := false
	for _, e := range es {
		entitled = entitled || (e.Service == req.Service && (e.Host == "" || e.Host == host))
	}
	if !entitled {
		return errForbidden(fmt.Sprintf("no registration entry gives this agent the identity of %s", quote(req.Service)))
	}
	s, err := a.IssueSVID(r.Context(), req.Service, []byte(req.CSR))
	if err != nil {
		return err
	}
	return a.writeSVID(w, s)
}
