package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Wire types of the authority HTTP API (see the Authority HTTP API section
// of the ward spec). Field names are snake_case.

type bundleResponse struct {
	TrustDomain    string `json:"trust_domain"`
	BundlePEM      string `json:"bundle_pem"`
	Version        int64  `json:"version"`
	SigningCertPEM string `json:"signing_cert_pem"`
}

type svidRequest struct {
	CSR string `json:"csr"`
}

type svidResponse struct {
	SPIFFEID      string `json:"spiffe_id"`
	Serial        string `json:"serial"`
	ExpiresAt     string `json:"expires_at"`
	InstanceID    string `json:"instance_id"`
	SVIDPEM       string `json:"svid_pem"`
	BundlePEM     string `json:"bundle_pem"`
	BundleVersion int64  `json:"bundle_version"`
}

type problemDoc struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// authorityBundle is a parsed GET /v1/bundle answer.
type authorityBundle struct {
	td      spiffeid.TrustDomain
	bundle  *x509bundle.Bundle
	version int64
	signing []*x509.Certificate // signing cert first, then its chain; may be empty
}

// issued is a parsed POST /v1/svid or /v1/svid/renew answer.
type issued struct {
	svid          *x509svid.SVID
	bundle        *x509bundle.Bundle // nil when the answer carried none
	bundleVersion int64
}

// authorityClient speaks the authority HTTP API. Every TLS connection is
// checked by verify in VerifyConnection; hostname verification is off
// because the authority is identified by its SPIFFE ID, not a DNS name.
type authorityClient struct {
	base   string
	anon   *http.Client // no client certificate: bundle, bootstrap, OCSP
	mtls   *http.Client // presents cert(): renew
	stream *http.Client // presents cert(), no overall timeout: watch
}

func newAuthorityClient(base string, verify func(tls.ConnectionState) error, cert func() *tls.Certificate) *authorityClient {
	anonTLS := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// InsecureSkipVerify only disables the default web PKI checks;
		// VerifyConnection below performs the full SPIFFE verification
		// on every handshake, including resumed ones.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection:   verify,
	}
	mtlsTLS := anonTLS.Clone()
	mtlsTLS.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if c := cert(); c != nil {
			return c, nil
		}
		return &tls.Certificate{}, nil
	}
	mtlsTransport := newTransport(mtlsTLS)
	return &authorityClient{
		base:   base,
		anon:   &http.Client{Transport: newTransport(anonTLS), Timeout: requestTimeout, CheckRedirect: noRedirects},
		mtls:   &http.Client{Transport: mtlsTransport, Timeout: requestTimeout, CheckRedirect: noRedirects},
		stream: &http.Client{Transport: mtlsTransport, CheckRedirect: noRedirects},
	}
}

// newTransport builds a transport without connection reuse: every request
// handshakes with the certificate current at that moment, so a rotated
// SVID is used at once and a stale one never lingers in a pool.
func newTransport(cfg *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:        cfg,
		TLSHandshakeTimeout:    dialTimeout,
		ResponseHeaderTimeout:  requestTimeout,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	}
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func (c *authorityClient) close() {
	c.anon.CloseIdleConnections()
	c.mtls.CloseIdleConnections()
}

// verifyAuthorityChain checks that certs is an X509-SVID chain to bundle
// for spiffe://<td>/ward/authority.
func verifyAuthorityChain(certs []*x509.Certificate, bundle *x509bundle.Bundle, now time.Time) ([][]*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no certificate presented", ErrUntrustedAuthority)
	}
	id, chains, err := x509svid.Verify(certs, bundle, x509svid.WithTime(now))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUntrustedAuthority, err)
	}
	if want := authorityID(bundle.TrustDomain()); id != want {
		return nil, fmt.Errorf("%w: certificate is for %s, want %s", ErrUntrustedAuthority, id, want)
	}
	return chains, nil
}

func authorityID(td spiffeid.TrustDomain) spiffeid.ID {
	id, err := spiffeid.FromSegments(td, "ward", "authority")
	if err != nil { // unreachable: constant, valid segments
		return spiffeid.ID{}
	}
	return id
}

// fetchBundle is GET /v1/bundle. The response (with resp.TLS) is returned
// so the pinned bootstrap can verify the connection after the fact.
func (c *authorityClient) fetchBundle(ctx context.Context) (*authorityBundle, *tls.ConnectionState, error) {
	body, cs, err := c.do(ctx, c.anon, http.MethodGet, "/v1/bundle", nil, nil)
	if err != nil {
		return nil, nil, err
	}
	ab, err := parseBundleResponse(body)
	if err != nil {
		return nil, nil, err
	}
	return ab, cs, nil
}

// issue is POST /v1/svid with a bootstrap token.
func (c *authorityClient) issue(ctx context.Context, token string) (*issued, error) {
	return c.requestSVID(ctx, c.anon, "/v1/svid", token, spiffeid.ID{})
}

// renew is POST /v1/svid/renew over mTLS; the CSR carries want.
func (c *authorityClient) renew(ctx context.Context, want spiffeid.ID) (*issued, error) {
	return c.requestSVID(ctx, c.mtls, "/v1/svid/renew", "", want)
}

func (c *authorityClient) requestSVID(ctx context.Context, hc *http.Client, path, token string, want spiffeid.ID) (*issued, error) {
	key, csr, err := newKeyAndCSR(want)
	if err != nil {
		return nil, err
	}
	reqBody, err := json.Marshal(svidRequest{CSR: string(csr)})
	if err != nil {
		return nil, fmt.Errorf("identity: encode request: %w", err)
	}
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	body, _, err := c.do(ctx, hc, http.MethodPost, path, hdr, reqBody)
	if err != nil {
		return nil, err
	}
	return parseSVIDResponse(body, key)
}

// newKeyAndCSR generates a P-256 key and a PEM CSR. The CSR carries id as
// its only URI SAN when id is set (renewal), and no SAN otherwise (the
// authority assigns the ID from the bootstrap token).
func newKeyAndCSR(id spiffeid.ID) (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: generate key: %w", err)
	}
	tmpl := &x509.CertificateRequest{}
	if !id.IsZero() {
		tmpl.URIs = append(tmpl.URIs, id.URL())
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: create CSR: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// do sends one request and returns the bounded body of a 2xx answer, or an
// *AuthorityError.
func (c *authorityClient) do(ctx context.Context, hc *http.Client, method, path string, hdr http.Header, body []byte) ([]byte, *tls.ConnectionState, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: build request: %w", err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := readBounded(resp.Body, maxResponseBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, nil, decodeProblem(resp.StatusCode, resp.Header.Get("Content-Type"), data)
	}
	return data, resp.TLS, nil
}

// readBounded reads at most limit bytes and fails if there are more.
func readBounded(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, ErrResponseTooLarge
	}
	return data, nil
}

// decodeProblem turns an error answer into an *AuthorityError.
func decodeProblem(status int, contentType string, body []byte) *AuthorityError {
	e := &AuthorityError{Status: status, Title: http.StatusText(status)}
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt != "application/problem+json" && mt != "application/json" {
		return e
	}
	var p problemDoc
	if json.Unmarshal(body, &p) != nil {
		return e
	}
	e.Type = clip(p.Type)
	if p.Title != "" {
		e.Title = clip(p.Title)
	}
	e.Detail = clip(p.Detail)
	return e
}

// clip bounds strings the authority sends so they cannot flood logs.
func clip(s string) string {
	const max = 512
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// parseBundleResponse parses GET /v1/bundle. It checks form only; the
// caller decides whether to trust the result.
func parseBundleResponse(body []byte) (*authorityBundle, error) {
	var r bundleResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("identity: decode bundle response: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(r.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("identity: bundle response trust_domain: %w", err)
	}
	if r.Version < 0 {
		return nil, fmt.Errorf("identity: bundle response version %d is negative", r.Version)
	}
	b, err := parseBundlePEM(td, []byte(r.BundlePEM))
	if err != nil {
		return nil, err
	}
	ab := &authorityBundle{td: td, bundle: b, version: r.Version}
	if r.SigningCertPEM != "" {
		ab.signing, err = parseCertsPEM([]byte(r.SigningCertPEM), maxChainCerts)
		if err != nil {
			return nil, fmt.Errorf("identity: bundle response signing_cert_pem: %w", err)
		}
	}
	return ab, nil
}

// parseBundlePEM parses a non-empty PEM bundle of CA certificates.
func parseBundlePEM(td spiffeid.TrustDomain, data []byte) (*x509bundle.Bundle, error) {
	roots, err := parseCertsPEM(data, maxRoots)
	if err != nil {
		return nil, fmt.Errorf("identity: bundle: %w", err)
	}
	for _, r := range roots {
		if !r.IsCA {
			return nil, fmt.Errorf("identity: bundle: certificate %s is not a CA", r.SerialNumber.Text(16))
		}
	}
	return x509bundle.FromX509Authorities(td, roots), nil
}

// parseCertsPEM parses one to max PEM CERTIFICATE blocks and nothing else.
func parseCertsPEM(data []byte, max int) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("trailing data is not PEM")
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		if len(certs) == max {
			return nil, fmt.Errorf("more than %d certificates", max)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, cert)
		rest = bytes.TrimSpace(rest)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return certs, nil
}

// parseSVIDResponse parses an issuance answer and checks that the leaf is
// a well-formed X509-SVID for key. Chain verification is the caller's.
func parseSVIDResponse(body []byte, key crypto.Signer) (*issued, error) {
	var r svidResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("identity: decode svid response: %w", err)
	}
	certs, err := parseCertsPEM([]byte(r.SVIDPEM), maxChainCerts)
	if err != nil {
		return nil, fmt.Errorf("identity: svid response svid_pem: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity: encode key: %w", err)
	}
	var raw []byte
	for _, c := range certs {
		raw = append(raw, c.Raw...)
	}
	svid, err := x509svid.ParseRaw(raw, keyDER)
	if err != nil {
		return nil, fmt.Errorf("identity: svid response: %w", err)
	}
	if r.SPIFFEID != "" && r.SPIFFEID != svid.ID.String() {
		return nil, fmt.Errorf("identity: svid response spiffe_id %q does not match certificate %s", r.SPIFFEID, svid.ID)
	}
	out := &issued{svid: svid, bundleVersion: r.BundleVersion}
	if r.BundlePEM != "" {
		out.bundle, err = parseBundlePEM(svid.ID.TrustDomain(), []byte(r.BundlePEM))
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// signingKey extracts the Ed25519 control-plane key from a verified
// signing certificate.
func signingKey(cert *x509.Certificate) (ed25519.PublicKey, error) {
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: signing certificate key is %T, want Ed25519", ErrUntrustedAuthority, cert.PublicKey)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("%w: signing certificate lacks digitalSignature key usage", ErrUntrustedAuthority)
	}
	return pub, nil
}
