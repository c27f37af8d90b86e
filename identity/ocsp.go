package identity

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/crypto/ocsp"
)

const never = 24 * time.Hour // "no refresh scheduled": a renewal resets the timer first

// refreshStaple fetches the OCSP response for the current leaf and
// attaches it to the TLS certificate as OCSPStaple. It returns the delay
// until the next refresh: half the response's validity on success. A
// failure is logged and retried; it never affects the SVID.
func (s *Source) refreshStaple(ctx context.Context) time.Duration {
	st := s.svid.Load()
	certs := st.svid.Certificates
	leaf := certs[0]
	if len(leaf.OCSPServer) == 0 || len(certs) < 2 || !s.now().Before(leaf.NotAfter) {
		return never
	}
	raw, resp, err := s.fetchOCSP(ctx, leaf, certs[1])
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("identity: OCSP staple refresh failed", "serial", leaf.SerialNumber.Text(16), "error", err.Error())
		}
		return s.tune.stapleRetry
	}
	if resp.Status != ocsp.Good {
		s.log.Error("identity: authority OCSP responder does not report our certificate as good",
			"serial", leaf.SerialNumber.Text(16), "status", ocspStatus(resp.Status))
		if resp.Status == ocsp.Revoked {
			s.triggerRenew()
		}
		return s.tune.stapleRetry
	}
	s.mu.Lock()
	if s.svid.Load() == st { // not renewed meanwhile
		cert := *st.cert
		cert.OCSPStaple = raw
		s.svid.Store(&svidState{svid: st.svid, cert: &cert, start: st.start})
	}
	s.mu.Unlock()
	s.log.Debug("identity: OCSP staple attached", "serial", leaf.SerialNumber.Text(16))
	if resp.NextUpdate.IsZero() {
		return s.tune.stapleDefault
	}
	d := resp.ThisUpdate.Add(resp.NextUpdate.Sub(resp.ThisUpdate) / 2).Sub(s.now())
	return max(d, s.tune.minRenewDelay)
}

// fetchOCSP POSTs an RFC 6960 request for leaf to its AIA OCSP URL and
// returns the raw response after checking it is signed by issuer for
// leaf's serial.
func (s *Source) fetchOCSP(ctx context.Context, leaf, issuer *x509.Certificate) ([]byte, *ocsp.Response, error) {
	u, err := url.Parse(leaf.OCSPServer[0])
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, nil, fmt.Errorf("identity: unusable OCSP URL %q", leaf.OCSPServer[0])
	}
	reqDER, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: OCSP request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(reqDER))
	if err != nil {
		return nil, nil, fmt.Errorf("identity: OCSP request: %w", err)
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	req.Header.Set("Accept", "application/ocsp-response")
	// The anonymous authority client: when the responder is served over
	// https it must be the authority (VerifyConnection).
	resp, err := s.client.anon.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: OCSP: %w", err)
	}
	defer resp.Body.Close()
	body, err := readBounded(resp.Body, maxResponseBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: OCSP: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, decodeProblem(resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	parsed, err := ocsp.ParseResponseForCert(body, leaf, issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: OCSP response: %w", err)
	}
	return body, parsed, nil
}

func ocspStatus(s int) string {
	switch s {
	case ocsp.Good:
		return "good"
	case ocsp.Revoked:
		return "revoked"
	default:
		return "unknown"
	}
}
