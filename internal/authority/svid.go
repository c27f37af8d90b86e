package authority

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/internal/store"
)

// IssuedSVID is an X.509-SVID the authority has signed and persisted.
type IssuedSVID struct {
	ID         spiffeid.ID
	Serial     string // lower-case hex
	InstanceID string // 16 hex digits, also the subject serialNumber
	IssuerID   string // CA ID of the issuing intermediate
	ExpiresAt  time.Time
	// Certificates is the chain to present: the leaf, then the issuing
	// intermediate.
	Certificates []*x509.Certificate
}

// IssueSVID signs an X.509-SVID spiffe://<td>/svc/<service> for a CSR (DER
// or PEM) with the service team's active intermediate, for the service's
// lifetime, and persists its serial. It is the hot path behind POST /v1/svid
// and /v1/svid/renew, which authenticate the caller first. Errors:
// ErrUnknownService, ErrServiceRevoked, ErrNoActiveCA and internal/ca's
// ErrCSR* sentinels.
func (a *Authority) IssueSVID(ctx context.Context, service string, csrDER []byte) (IssuedSVID, error) {
	svc, err := a.service(ctx, service)
	if err != nil {
		return IssuedSVID{}, err
	}
	return a.issue(ctx, svc, csrDER, "api")
}

// service returns a registered service: from the cache (team, level and
// lifetime never change) or the store. Its RevokedAt may be stale; issue
// checks the store again after persisting a certificate.
func (a *Authority) service(ctx context.Context, name string) (store.Service, error) {
	if v, ok := a.services.Load(name); ok {
		return *v.(*store.Service), nil
	}
	svc, err := a.st.GetService(ctx, name)
	if err != nil {
		if isNotFound(err) {
			return store.Service{}, fmt.Errorf("%w: %q", ErrUnknownService, name)
		}
		return store.Service{}, fmt.Errorf("authority: %w", err)
	}
	a.services.Store(name, &svc)
	return svc, nil
}

// serviceRevoked records in the cache that a service was revoked.
func (a *Authority) serviceRevoked(name string, at time.Time) {
	if v, ok := a.services.Load(name); ok {
		svc := *v.(*store.Service)
		if svc.RevokedAt == nil {
			svc.RevokedAt = &at
			a.services.Store(name, &svc)
		}
	}
}

func (a *Authority) issue(ctx context.Context, svc store.Service, csrData []byte, kind string) (IssuedSVID, error) {
	if svc.RevokedAt != nil {
		return IssuedSVID{}, ErrServiceRevoked
	}
	csr, err := ca.ParseCSR(csrData)
	if err != nil {
		return IssuedSVID{}, err
	}
	id, err := spiffeid.FromSegments(a.td, "svc", svc.Name)
	if err != nil {
		return IssuedSVID{}, fmt.Errorf("authority: service ID: %w", err)
	}
	iss, err := a.issuer(ctx, svc.Team)
	if err != nil {
		return IssuedSVID{}, err
	}
	instance, err := randomHex(8)
	if err != nil {
		return IssuedSVID{}, err
	}
	leaf, err := iss.signer.IssueSVID(ca.IssueRequest{
		CSR:        csr,
		ID:         id,
		InstanceID: instance,
		TTL:        a.svidTTLFor(svc),
		Now:        a.now(),
		OCSPURL:    a.ocspURL(),
		CRLURL:     a.crlURL(iss.ID),
	})
	if err != nil {
		return IssuedSVID{}, err
	}
	serial := ca.SerialHex(leaf.SerialNumber)
	if err := a.st.InsertCertificate(ctx, store.Certificate{
		Serial:     serial,
		Service:    svc.Name,
		SPIFFEID:   id.String(),
		InstanceID: instance,
		IssuerID:   iss.ID,
		NotBefore:  leaf.NotBefore,
		NotAfter:   leaf.NotAfter,
		DER:        leaf.Raw,
	}); err != nil {
		return IssuedSVID{}, fmt.Errorf("authority: persist certificate: %w", err)
	}
	// The service may have been revoked while we signed: its revocation
	// marks the service first and sweeps certificates second, so checking
	// after our insert closes the race.
	cur, err := a.st.GetService(ctx, svc.Name)
	if err != nil {
		return IssuedSVID{}, fmt.Errorf("authority: %w", err)
	}
	if cur.RevokedAt != nil {
		a.serviceRevoked(cur.Name, *cur.RevokedAt)
		if err := a.st.RevokeCertificate(ctx, serial, *cur.RevokedAt, reasonUnspecified); err != nil {
			return IssuedSVID{}, fmt.Errorf("authority: %w", err)
		}
		return IssuedSVID{}, ErrServiceRevoked
	}
	a.metrics.issued.WithLabelValues(kind).Inc()
	a.record(audit.Event{Kind: audit.KindSVIDIssued, Caller: id.String(), Action: kind, Decision: audit.Allow,
		Extra: map[string]any{"serial": serial, "instance": instance, "not_after": leaf.NotAfter.UTC()}})
	return IssuedSVID{
		ID:           id,
		Serial:       serial,
		InstanceID:   instance,
		IssuerID:     iss.ID,
		ExpiresAt:    leaf.NotAfter,
		Certificates: iss.chain(leaf),
	}, nil
}

// svidRequest is the body of POST /v1/svid and /v1/svid/renew.
type svidRequest struct {
	CSR string `json:"csr"`
}

type svidResponse struct {
	SPIFFEID      string    `json:"spiffe_id"`
	Serial        string    `json:"serial"`
	ExpiresAt     time.Time `json:"expires_at"`
	InstanceID    string    `json:"instance_id"`
	SVIDPEM       string    `json:"svid_pem"`
	BundlePEM     string    `json:"bundle_pem"`
	BundleVersion int64     `json:"bundle_version"`
}

func (a *Authority) writeSVID(w http.ResponseWriter, s IssuedSVID) error {
	st := a.cas.Load()
	return writeJSON(w, http.StatusCreated, svidResponse{
		SPIFFEID:      s.ID.String(),
		Serial:        s.Serial,
		ExpiresAt:     s.ExpiresAt.UTC(),
		InstanceID:    s.InstanceID,
		SVIDPEM:       string(ca.EncodeCertsPEM(s.Certificates...)),
		BundlePEM:     string(st.bundlePEM),
		BundleVersion: st.bundleVersion,
	})
}

func readCSR(r *http.Request) ([]byte, error) {
	var req svidRequest
	if err := decodeJSON(r, &req, false); err != nil {
		return nil, err
	}
	if strings.TrimSpace(req.CSR) == "" {
		return nil, fmt.Errorf("%w: csr is required", ca.ErrCSRMalformed)
	}
	return []byte(req.CSR), nil
}

// POST /v1/svid: a workload exchanges its bootstrap token and a CSR for an
// SVID.
func (a *Authority) handleSVID(w http.ResponseWriter, r *http.Request) error {
	if ct, ok, err := a.componentBootstrap(r); ok || err != nil {
		if err != nil {
			return err
		}
		csr, err := readCSR(r)
		if err != nil {
			return err
		}
		s, err := a.issueComponentSVID(r.Context(), ct.Component, csr, "bootstrap")
		if err != nil {
			return err
		}
		a.log.InfoContext(r.Context(), "component svid issued", "spiffe_id", s.ID.String(), "serial", s.Serial, "token_id", ct.ID)
		return a.writeSVID(w, s)
	}
	bt, err := a.authBootstrap(r)
	if err != nil {
		return err
	}
	csr, err := readCSR(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	svc, err := a.service(ctx, bt.Service)
	if err != nil {
		return err
	}
	s, err := a.issue(ctx, svc, csr, "bootstrap")
	if err != nil {
		a.log.InfoContext(ctx, "svid refused", "service", svc.Name, "token_id", bt.ID, "error", err)
		return err
	}
	a.log.InfoContext(ctx, "svid issued", "service", svc.Name, "serial", s.Serial, "instance_id", s.InstanceID, "token_id", bt.ID)
	return a.writeSVID(w, s)
}

// POST /v1/svid/renew: a workload presents its current SVID (mTLS) and a
// CSR for the same identity.
func (a *Authority) handleRenew(w http.ResponseWriter, r *http.Request) error {
	p, err := a.requirePeer(r)
	if err != nil {
		return err
	}
	if done, err := a.renewComponent(w, r, p); done {
		return err
	}
	name, ok := a.serviceOf(p.id)
	if !ok {
		return errForbiddenIdentity(fmt.Sprintf("%s is not a service SVID (spiffe://%s/svc/NAME); only services renew here", p.id, a.td.Name()))
	}
	csr, err := readCSR(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	svc, err := a.service(ctx, name)
	if err != nil {
		if errors.Is(err, ErrUnknownService) {
			return errForbiddenIdentity(fmt.Sprintf("service %s is not registered", name))
		}
		return err
	}
	s, err := a.issue(ctx, svc, csr, "renew")
	if err != nil {
		if !errors.Is(err, ErrServiceRevoked) {
			a.log.InfoContext(ctx, "svid renewal refused", "peer", p.id.String(), "error", err)
		}
		return err
	}
	a.log.InfoContext(ctx, "svid renewed", "service", name, "serial", s.Serial, "previous", serialOf(p.leaf))
	return a.writeSVID(w, s)
}

func errForbiddenIdentity(detail string) error {
	return problem.New(http.StatusForbidden, slugForbiddenIdentity, "Forbidden identity", detail)
}

// GET /v1/svids/{serial}
func (a *Authority) handleGetSVID(w http.ResponseWriter, r *http.Request, p *principal) error {
	serial, err := pathSerial(r)
	if err != nil {
		return err
	}
	c, err := a.st.GetCertificate(r.Context(), serial)
	if err != nil {
		if isNotFound(err) {
			return errNotFound(fmt.Sprintf("no certificate with serial %s", serial))
		}
		return err
	}
	if p.scoped() {
		team := ""
		if c.Service != "" {
			if svc, err := a.st.GetService(r.Context(), c.Service); err == nil {
				team = svc.Team
			}
		}
		if team == "" || !p.canTeam(actRead, team) {
			return errNotFound(fmt.Sprintf("no certificate with serial %s", serial))
		}
	}
	v := map[string]any{
		"serial":      c.Serial,
		"service":     c.Service,
		"spiffe_id":   c.SPIFFEID,
		"instance_id": c.InstanceID,
		"issuer_id":   c.IssuerID,
		"not_before":  c.NotBefore.UTC(),
		"not_after":   c.NotAfter.UTC(),
		"cert_pem":    string(pemCert(c.DER)),
	}
	if c.RevokedAt != nil {
		v["revoked_at"] = c.RevokedAt.UTC()
		v["revocation_reason"] = reasonName(c.RevocationReason)
	}
	return writeJSON(w, http.StatusOK, v)
}

// GET /v1/bundle: the trust bundle and the signing certificate, public.
func (a *Authority) handleBundle(w http.ResponseWriter, r *http.Request) error {
	st := a.cas.Load()
	return writeJSON(w, http.StatusOK, map[string]any{
		"trust_domain":     a.td.Name(),
		"bundle_pem":       string(st.bundlePEM),
		"version":          st.bundleVersion,
		"signing_cert_pem": string(a.signing.Load().chainPEM),
	})
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
