package authority

import (
	"context"
	"encoding/base64"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/store"
)

// ocspValidity is an OCSP response's nextUpdate - thisUpdate.
const ocspValidity = time.Hour

// POST /ocsp (RFC 6960 appendix A.1), body application/ocsp-request.
func (a *Authority) handleOCSPPost(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, ca.MaxOCSPRequestSize+1))
	if err != nil {
		writeOCSP(w, ocsp.MalformedRequestErrorResponse, 0)
		return
	}
	a.answerOCSP(w, r, body, false)
}

// GET /ocsp/{base64 DER request}, URL-encoded.
func (a *Authority) handleOCSPGet(w http.ResponseWriter, r *http.Request) {
	raw := strings.TrimPrefix(r.URL.EscapedPath(), "/ocsp/")
	if len(raw) > 3*ca.MaxOCSPRequestSize {
		writeOCSP(w, ocsp.MalformedRequestErrorResponse, 0)
		return
	}
	s, err := url.PathUnescape(raw)
	if err != nil {
		writeOCSP(w, ocsp.MalformedRequestErrorResponse, 0)
		return
	}
	der, err := decodeBase64Any(s)
	if err != nil {
		writeOCSP(w, ocsp.MalformedRequestErrorResponse, 0)
		return
	}
	a.answerOCSP(w, r, der, true)
}

// decodeBase64Any accepts standard base64 (what RFC 6960 specifies) and,
// leniently, its URL-safe and unpadded variants.
func decodeBase64Any(s string) ([]byte, error) {
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		var b []byte
		if b, err = enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, err
}

// answerOCSP answers one request. Malformed requests get the OCSP
// malformedRequest response, requests about CAs we do not hold get
// unauthorized, store failures tryLater: never an HTTP error.
func (a *Authority) answerOCSP(w http.ResponseWriter, r *http.Request, der []byte, cacheable bool) {
	req, err := ca.ParseOCSPRequest(der)
	if err != nil {
		writeOCSP(w, ocsp.MalformedRequestErrorResponse, 0)
		return
	}
	st := a.cas.Load()
	var iss *caEntry
	for _, e := range st.list {
		if e.signer.OCSPRequestMatches(req) {
			iss = e
			break
		}
	}
	if iss == nil {
		writeOCSP(w, ocsp.UnauthorizedErrorResponse, 0)
		return
	}
	now := a.now()
	status, err := a.ocspStatus(r.Context(), st, iss, req.SerialNumber)
	if err != nil {
		a.log.ErrorContext(r.Context(), "ocsp status lookup failed", "error", err)
		writeOCSP(w, ocsp.TryLaterErrorResponse, 0)
		return
	}
	status.Now = now
	status.NextUpdate = now.Add(ocspValidity)
	status.IssuerHash = req.HashAlgorithm
	resp, err := iss.signer.OCSPResponse(status)
	if err != nil {
		a.log.ErrorContext(r.Context(), "ocsp signing failed", "ca_id", iss.ID, "error", err)
		writeOCSP(w, ocsp.InternalErrorErrorResponse, 0)
		return
	}
	maxAge := time.Duration(0)
	if cacheable {
		maxAge = time.Minute
	}
	writeOCSP(w, resp, maxAge)
}

// ocspStatus looks up a serial issued by iss: for an intermediate, in the
// certificate store; for a root, among its intermediates.
func (a *Authority) ocspStatus(ctx context.Context, st *caState, iss *caEntry, serial *big.Int) (ca.OCSPStatus, error) {
	s := ca.OCSPStatus{Serial: serial, Status: ocsp.Unknown}
	hex := ca.SerialHex(serial)
	if iss.Kind == store.CAKindRoot {
		for _, c := range st.children[iss.ID] {
			if c.serial != hex {
				continue
			}
			s.Status = ocsp.Good
			if c.State == store.CAStateRevoked {
				s.Status = ocsp.Revoked
				s.RevokedAt = revokedAtOr(c.RevokedAt, a.now())
				s.Reason = reasonCACompromise
			}
		}
		return s, nil
	}
	c, err := a.st.GetCertificate(ctx, hex)
	switch {
	case isNotFound(err):
		return s, nil
	case err != nil:
		return s, err
	case c.IssuerID != iss.ID:
		return s, nil
	case c.RevokedAt != nil:
		s.Status = ocsp.Revoked
		s.RevokedAt = *c.RevokedAt
		s.Reason = c.RevocationReason
	default:
		s.Status = ocsp.Good
	}
	return s, nil
}

func writeOCSP(w http.ResponseWriter, body []byte, maxAge time.Duration) {
	h := w.Header()
	h.Set("Content-Type", "application/ocsp-response")
	if maxAge > 0 {
		h.Set("Cache-Control", "public, max-age="+itoa(int(maxAge/time.Second)))
	} else {
		h.Set("Cache-Control", "no-store")
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
