package authority

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/store"
)

// Admin roles.
const (
	roleAdmin      = "admin"    // everything
	roleSecurity   = "security" // revocations and read
	roleOperator   = "operator" // read, create teams and services
	roleTeamPrefix = "team:"    // team:<name>: services of that team
)

// action is what an admin request wants to do.
type action int

const (
	actRead       action = iota // list and show anything
	actCreate                   // create teams, services, bootstrap tokens
	actRevoke                   // revoke SVIDs, services, intermediates
	actManageCAs                // rotate, activate, retire
	actManageAuth               // create and revoke admin tokens
	actReview                   // decide on access requests, revoke grants (the handler checks the provider's rule)
)

// principal is an authenticated admin token.
type principal struct {
	id    string // token ID (never the token)
	name  string
	roles map[string]bool
	teams map[string]bool
}

// can reports whether p may do act on any team.
func (p *principal) can(act action) bool {
	if p.roles[roleAdmin] {
		return true
	}
	switch act {
	case actRead:
		return p.roles[roleSecurity] || p.roles[roleOperator]
	case actCreate:
		return p.roles[roleOperator]
	case actRevoke, actReview:
		return p.roles[roleSecurity]
	}
	return false
}

// canTeam reports whether p may do act on team's objects: a global grant, or
// a team:<team> role for reading and creating.
func (p *principal) canTeam(act action, team string) bool {
	if p.can(act) {
		return true
	}
	return (act == actRead || act == actCreate || act == actReview) && p.teams[team]
}

// scoped reports whether p sees only its teams' objects when listing.
func (p *principal) scoped() bool { return !p.can(actRead) }

func checkRole(role string) error {
	switch role {
	case roleAdmin, roleSecurity, roleOperator:
		return nil
	}
	if team, ok := strings.CutPrefix(role, roleTeamPrefix); ok && nameRE.MatchString(team) {
		return nil
	}
	return errBadRequest(fmt.Sprintf("role %s is invalid: want admin, security, operator or team:<name>", quote(role)))
}

// adminHandler is an admin API handler, called with the authenticated token.
type adminHandler func(w http.ResponseWriter, r *http.Request, p *principal) error

// admin authenticates the bearer admin token (401 when missing, unknown or
// revoked) and checks that it may do act (403).
func (a *Authority) admin(act action, h adminHandler) http.Handler {
	return a.adminGate(act, false, h)
}

// adminTeam is admin for team-scoped endpoints: team:<name> tokens pass the
// gate for reading and creating, and the handler checks canTeam on the
// object's team.
func (a *Authority) adminTeam(act action, h adminHandler) http.Handler {
	return a.adminGate(act, true, h)
}

func (a *Authority) adminGate(act action, teamScoped bool, h adminHandler) http.Handler {
	return a.api(func(w http.ResponseWriter, r *http.Request) error {
		p, err := a.authAdmin(r)
		if err != nil {
			return err
		}
		allowed := p.can(act) || (teamScoped && len(p.teams) > 0 && (act == actRead || act == actCreate || act == actReview))
		if !allowed {
			a.log.InfoContext(r.Context(), "admin request forbidden", "token_id", p.id, "method", r.Method, "path", r.URL.Path)
			return errForbidden("this admin token's roles do not allow this operation")
		}
		if err := h(w, r, p); err != nil {
			return err
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			// Every successful change through the admin API, by whom.
			a.record(audit.Event{Kind: audit.KindAdminPrefix + strings.ToLower(r.Method), User: p.name, Action: r.Method,
				Resource: r.Pattern, Decision: audit.Allow, Extra: map[string]any{"token_id": p.id, "path": r.URL.Path}})
		}
		return nil
	})
}

func (a *Authority) authAdmin(r *http.Request) (*principal, error) {
	tok, ok := bearer(r)
	if !ok {
		return nil, errUnauthorized("an admin token (Authorization: Bearer wardadm_...) is required")
	}
	fp := tokenFingerprint(tok)
	if !wellFormedToken(tok, adminTokenPrefix) {
		a.log.InfoContext(r.Context(), "admin token refused", "token_fp", fp, "why", "malformed", "remote", r.RemoteAddr)
		return nil, errUnauthorized("invalid or revoked admin token")
	}
	h := hashToken(tok)
	t, err := a.st.GetAdminTokenByHash(r.Context(), h)
	if err != nil || !sameHash(t.Hash, h) || t.RevokedAt != nil {
		if err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("authority: admin token lookup: %w", err)
		}
		a.log.InfoContext(r.Context(), "admin token refused", "token_fp", fp, "why", "unknown or revoked", "remote", r.RemoteAddr)
		return nil, errUnauthorized("invalid or revoked admin token")
	}
	p := &principal{id: t.ID, name: t.Name, roles: map[string]bool{}, teams: map[string]bool{}}
	for _, role := range t.Roles {
		if team, ok := strings.CutPrefix(role, roleTeamPrefix); ok {
			p.teams[team] = true
			continue
		}
		p.roles[role] = true
	}
	return p, nil
}

// peer is a client authenticated by its X.509-SVID.
type peer struct {
	id   spiffeid.ID
	leaf *x509.Certificate
}

// verifyChain verifies a presented chain against the current bundle and the
// revocation state: every certificate of the chain, leaf (in the store)
// and intermediates (CA state). It fails closed: a store error is a
// refusal.
func (a *Authority) verifyChain(ctx context.Context, certs []*x509.Certificate) (spiffeid.ID, error) {
	st := a.cas.Load()
	id, chains, err := x509svid.Verify(certs, st.bundle, x509svid.WithTime(a.now()))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %v", errPeerInvalid, err)
	}
	leaf := certs[0]
	serial := ca.SerialHex(leaf.SerialNumber)
	rec, err := a.st.GetCertificate(ctx, serial)
	switch {
	case isNotFound(err):
		return spiffeid.ID{}, fmt.Errorf("%w: certificate %s was not issued by this authority", errPeerInvalid, serial)
	case err != nil:
		return spiffeid.ID{}, fmt.Errorf("authority: peer revocation check: %w", err)
	case rec.RevokedAt != nil:
		return spiffeid.ID{}, fmt.Errorf("%w: certificate %s", errPeerRevoked, serial)
	}
	for _, chain := range chains {
		for _, c := range chain[1 : len(chain)-1] { // intermediates; the root is in the bundle
			e := st.byRaw[string(c.Raw)]
			if e == nil || e.State == store.CAStateRevoked {
				return spiffeid.ID{}, fmt.Errorf("%w: intermediate %s", errPeerRevoked, ca.SerialHex(c.SerialNumber))
			}
		}
	}
	return id, nil
}

var (
	errPeerInvalid = errors.New("authority: peer certificate invalid")
	errPeerRevoked = errors.New("authority: peer certificate revoked")
)

// verifyConnection is the server's tls.Config.VerifyConnection. Client
// certificates are optional (public endpoints take none), but a presented
// chain must lead to a root of the current bundle, or the handshake fails.
// Whether the certificate is still valid in time and unrevoked is judged
// on every request by requirePeer, which every endpoint that authenticates
// by certificate calls: so an expired or revoked SVID gets a clear 401/403
// problem document rather than a bare TLS alert, and gains nothing.
func (a *Authority) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	leaf := cs.PeerCertificates[0]
	// Verify the chain at an instant inside the leaf's validity, so that
	// only the structure and the signatures are checked here.
	at := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	if _, _, err := x509svid.Verify(cs.PeerCertificates, a.cas.Load().bundle, x509svid.WithTime(at)); err != nil {
		a.log.Debug("client certificate refused", "serial", serialOf(leaf), "error", err)
		return fmt.Errorf("%w: %v", errPeerInvalid, err)
	}
	return nil
}

// requirePeer returns the request's verified SVID peer. The chain and its
// revocation are checked again on every request, so a kept-alive connection
// whose certificate was revoked after the handshake is refused too.
func (a *Authority) requirePeer(r *http.Request) (peer, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return peer{}, errUnauthorized("a client certificate (X.509-SVID of this trust domain) is required")
	}
	if leaf := r.TLS.PeerCertificates[0]; a.now().After(leaf.NotAfter) {
		return peer{}, errUnauthorized("the client certificate has expired; obtain a new one with the bootstrap token")
	}
	id, err := a.verifyChain(r.Context(), r.TLS.PeerCertificates)
	switch {
	case errors.Is(err, errPeerRevoked):
		return peer{}, errRevoked("the client certificate has been revoked")
	case errors.Is(err, errPeerInvalid):
		return peer{}, errUnauthorized("the client certificate does not verify against the current trust bundle")
	case err != nil:
		return peer{}, err
	}
	return peer{id: id, leaf: r.TLS.PeerCertificates[0]}, nil
}
