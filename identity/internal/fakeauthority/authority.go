package fakeauthority

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/crypto/ocsp"
)

// Options configures a fake authority. Zero values select the defaults.
type Options struct {
	TrustDomain  spiffeid.TrustDomain // default ward.test
	SVIDTTL      time.Duration        // default 1h
	Heartbeat    time.Duration        // default 15s
	OCSPValidity time.Duration        // default 1h
	// EmbedSigningCert adds signing_cert_pem to snapshot and bundle
	// payloads (as the real authority does); without it watchers must
	// fetch the signing certificate from GET /v1/bundle.
	EmbedSigningCert bool
}

// Authority is a running fake authority.
type Authority struct {
	opts     Options
	td       spiffeid.TrustDomain
	srv      *http.Server
	url      string
	serving  atomic.Pointer[tls.Certificate]
	signKey  ed25519.PrivateKey
	closing  chan struct{}
	closeOne sync.Once

	mu            sync.Mutex
	roots         []*x509.Certificate
	bundleVersion int64
	issuer        *CA
	root          *CA
	signChain     []*x509.Certificate
	tokens        map[string]spiffeid.ID
	issued        map[string]issuedCert // serial hex → cert
	revoked       map[string]bool
	seq           int64
	log           [][]byte // lines sent to watchers after their snapshot, in order
	snapExtra     map[string]any
	changed       chan struct{}
	watchers      int
	watchConnects int
	silent        bool
	failIssue     int
	failRenew     int
	failWatch     int
	failBundle    int
	issueCount    int
	renewCount    int
	renewAttempts int
	ocspCount     int
}

type issuedCert struct {
	id     spiffeid.ID
	cert   *x509.Certificate
	issuer *CA
}

// Start creates a root and an intermediate and serves on 127.0.0.1:0.
func Start(opts Options) (*Authority, error) {
	if opts.TrustDomain.IsZero() {
		opts.TrustDomain = spiffeid.RequireTrustDomainFromString("ward.test")
	}
	if opts.SVIDTTL == 0 {
		opts.SVIDTTL = time.Hour
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.OCSPValidity == 0 {
		opts.OCSPValidity = time.Hour
	}
	root, err := NewRoot(opts.TrustDomain)
	if err != nil {
		return nil, err
	}
	inter, err := root.NewIntermediate("default")
	if err != nil {
		return nil, err
	}
	_, signKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	a := &Authority{
		opts:          opts,
		td:            opts.TrustDomain,
		signKey:       signKey,
		closing:       make(chan struct{}),
		roots:         []*x509.Certificate{root.Cert},
		bundleVersion: 1,
		root:          root,
		tokens:        map[string]spiffeid.ID{},
		issued:        map[string]issuedCert{},
		revoked:       map[string]bool{},
		changed:       make(chan struct{}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a.url = "https://" + ln.Addr().String()
	if err := a.SetIssuer(inter); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/bundle", a.handleBundle)
	mux.HandleFunc("POST /v1/svid", a.handleIssue)
	mux.HandleFunc("POST /v1/svid/renew", a.handleRenew)
	mux.HandleFunc("GET /v1/watch", a.handleWatch)
	mux.HandleFunc("POST /ocsp", a.handleOCSP)
	a.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return a.serving.Load(), nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			_, _, err := x509svid.Verify(cs.PeerCertificates, x509bundle.FromX509Authorities(a.td, a.Roots()))
			return err
		},
	}
	go func() { _ = a.srv.Serve(tls.NewListener(ln, tlsCfg)) }()
	return a, nil
}

// Close stops the server and ends all watch streams.
func (a *Authority) Close() {
	a.closeOne.Do(func() {
		close(a.closing)
		_ = a.srv.Close()
	})
}

// URL is the base URL, https://127.0.0.1:PORT.
func (a *Authority) URL() string { return a.url }

// TrustDomain is the fake's trust domain.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }

// Root is the first root CA.
func (a *Authority) Root() *CA { return a.root }

// Issuer is the CA currently issuing SVIDs.
func (a *Authority) Issuer() *CA {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.issuer
}

// Roots is the current trust bundle.
func (a *Authority) Roots() []*x509.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*x509.Certificate(nil), a.roots...)
}

// BundlePEM is the current trust bundle as PEM.
func (a *Authority) BundlePEM() []byte { return EncodePEM(a.Roots()...) }

// RootFingerprint is the hex SHA-256 of the first root.
func (a *Authority) RootFingerprint() string { return Fingerprint(a.root.Cert) }

// SigningKey is the control-plane Ed25519 key (tests sign rollbacks with it).
func (a *Authority) SigningKey() ed25519.PrivateKey {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.signKey
}

// Version is the latest event sequence number.
func (a *Authority) Version() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seq
}

// AddToken makes token a bootstrap token for id.
func (a *Authority) AddToken(token string, id spiffeid.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens[token] = id
}

// SetIssuer makes ca the issuing CA and reissues the serving and signing
// certificates under it.
func (a *Authority) SetIssuer(ca *CA) error {
	authID, err := spiffeid.FromSegments(a.td, "ward", "authority")
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(a.url, "https://"))
	key, err := newKey()
	if err != nil {
		return err
	}
	leaf, err := ca.IssueLeaf(LeafOptions{ID: authID, PublicKey: &key.PublicKey, TTL: 24 * time.Hour,
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP(host)}})
	if err != nil {
		return err
	}
	serving := &tls.Certificate{PrivateKey: key, Leaf: leaf, Certificate: [][]byte{leaf.Raw}}
	for _, c := range ca.Chain {
		serving.Certificate = append(serving.Certificate, c.Raw)
	}
	sign, err := ca.IssueLeaf(LeafOptions{ID: authID, PublicKey: a.SigningKey().Public(), TTL: 24 * time.Hour, NoExtUse: true})
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.issuer = ca
	a.signChain = append([]*x509.Certificate{sign}, ca.Chain...)
	a.serving.Store(serving)
	return nil
}

// RotateSigningKey replaces the control-plane signing key (and its
// certificate) without telling watchers; they must fetch the new
// certificate from GET /v1/bundle when a signature fails.
func (a *Authority) RotateSigningKey() error {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.signKey = key
	issuer := a.issuer
	a.mu.Unlock()
	return a.SetIssuer(issuer)
}

// SetSigningCert replaces the signing certificate chain served by
// GET /v1/bundle (to test a bad one).
func (a *Authority) SetSigningCert(chain []*x509.Certificate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.signChain = chain
}

// Fail makes an endpoint answer status (0: work normally). endpoint is
// "issue", "renew", "watch" or "bundle".
func (a *Authority) Fail(endpoint string, status int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch endpoint {
	case "issue":
		a.failIssue = status
	case "renew":
		a.failRenew = status
	case "watch":
		a.failWatch = status
	case "bundle":
		a.failBundle = status
	default:
		panic("fakeauthority: unknown endpoint " + endpoint)
	}
}

// SetSilent stops (true) or resumes all output on open watch streams,
// heartbeats included.
func (a *Authority) SetSilent(silent bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.silent = silent
}

// Stats are request counters.
type Stats struct {
	Issued, Renewed, RenewAttempts, OCSP int
	Watchers                             int // open watch streams
	WatchConnects                        int // watch streams ever opened
}

// Stats returns the counters.
func (a *Authority) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Stats{Issued: a.issueCount, Renewed: a.renewCount, RenewAttempts: a.renewAttempts, OCSP: a.ocspCount, Watchers: a.watchers, WatchConnects: a.watchConnects}
}

// Revoke revokes serials and pushes a signed revocation event; it returns
// the event's sequence number.
func (a *Authority) Revoke(serials ...*big.Int) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.revokeLocked(serials)
}

// RevokeID revokes every certificate issued to id and its bootstrap
// tokens, like revoking a service.
func (a *Authority) RevokeID(id spiffeid.ID) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	for tok, tid := range a.tokens {
		if tid == id {
			delete(a.tokens, tok)
		}
	}
	var serials []*big.Int
	for _, ic := range a.issued {
		if ic.id == id {
			serials = append(serials, ic.cert.SerialNumber)
		}
	}
	return a.revokeLocked(serials)
}

func (a *Authority) revokeLocked(serials []*big.Int) int64 {
	a.seq++
	hexes := make([]string, 0, len(serials))
	for _, s := range serials {
		a.revoked[s.Text(16)] = true
		hexes = append(hexes, s.Text(16))
	}
	payload, _ := json.Marshal(map[string]any{
		"serials": hexes, "reason": "keyCompromise", "at": time.Now().UTC().Format(time.RFC3339), "version": a.seq,
	})
	a.appendLocked(SignLine(a.signKey, a.seq, "revocation", payload))
	return a.seq
}

// PublishBundle replaces the trust bundle, bumps its version and pushes a
// signed bundle event; it returns the event's sequence number.
func (a *Authority) PublishBundle(roots ...*x509.Certificate) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.roots = append([]*x509.Certificate(nil), roots...)
	a.bundleVersion++
	a.seq++
	p := map[string]any{
		"bundle_pem": string(EncodePEM(roots...)), "bundle_version": a.bundleVersion, "version": a.seq,
	}
	if a.opts.EmbedSigningCert {
		p["signing_cert_pem"] = string(EncodePEM(a.signChain...))
	}
	payload, _ := json.Marshal(p)
	a.appendLocked(SignLine(a.signKey, a.seq, "bundle", payload))
	return a.seq
}

// Emit signs an event of any kind with the control-plane key and sends it
// to every open watch stream, in order with the other events; it returns
// the event's sequence number. fields are the payload's JSON members;
// "version" is set to the sequence number unless fields has one.
func (a *Authority) Emit(kind string, fields map[string]any) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seq++
	p := make(map[string]any, len(fields)+1)
	p["version"] = a.seq
	for k, v := range fields {
		p[k] = v
	}
	payload, _ := json.Marshal(p)
	a.appendLocked(SignLine(a.signKey, a.seq, kind, payload))
	return a.seq
}

// SetSnapshotField adds a member to the payload of the snapshots sent to
// watch streams opened from now on (nil value: removes it), like the
// authority's "access_list_version".
func (a *Authority) SetSnapshotField(key string, value any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.snapExtra == nil {
		a.snapExtra = map[string]any{}
	}
	if value == nil {
		delete(a.snapExtra, key)
		return
	}
	a.snapExtra[key] = value
}

// Inject sends a raw line to every open watch stream, in order with the
// events.
func (a *Authority) Inject(line []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.appendLocked(line)
}

func (a *Authority) appendLocked(line []byte) {
	a.log = append(a.log, line)
	close(a.changed)
	a.changed = make(chan struct{})
}

// SignLine builds a watch stream line signed with key.
func SignLine(key ed25519.PrivateKey, seq int64, kind string, payload []byte) []byte {
	line, _ := json.Marshal(map[string]any{
		"seq": seq, "kind": kind, "payload": payload, "sig": ed25519.Sign(key, payload),
	})
	return append(line, '\n')
}

func (a *Authority) handleBundle(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	fail := a.failBundle
	resp := map[string]any{
		"trust_domain":     a.td.Name(),
		"bundle_pem":       string(EncodePEM(a.roots...)),
		"version":          a.bundleVersion,
		"signing_cert_pem": string(EncodePEM(a.signChain...)),
	}
	a.mu.Unlock()
	if fail != 0 {
		problem(w, fail, "unavailable", "failing on purpose")
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

type svidRequest struct {
	CSR string `json:"csr"`
}

func (a *Authority) handleIssue(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	fail := a.failIssue
	id, ok := a.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	a.mu.Unlock()
	if fail != 0 {
		problem(w, fail, "unavailable", "failing on purpose")
		return
	}
	if !ok || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		problem(w, http.StatusUnauthorized, "unauthorized", "bad or revoked bootstrap token")
		return
	}
	a.issue(w, r, id, true)
}

func (a *Authority) handleRenew(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.renewAttempts++
	fail := a.failRenew
	a.mu.Unlock()
	if fail != 0 {
		problem(w, fail, "unavailable", "failing on purpose")
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		problem(w, http.StatusUnauthorized, "unauthorized", "client certificate required")
		return
	}
	leaf := r.TLS.PeerCertificates[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		problem(w, http.StatusUnauthorized, "unauthorized", "not an SVID")
		return
	}
	if time.Now().After(leaf.NotAfter) {
		problem(w, http.StatusUnauthorized, "unauthorized", "certificate expired")
		return
	}
	if a.anyRevoked(r.TLS.PeerCertificates) {
		problem(w, http.StatusForbidden, "revoked", "certificate revoked")
		return
	}
	a.issue(w, r, id, false)
}

func (a *Authority) anyRevoked(certs []*x509.Certificate) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range certs {
		if a.revoked[c.SerialNumber.Text(16)] {
			return true
		}
	}
	return false
}

func (a *Authority) issue(w http.ResponseWriter, r *http.Request, id spiffeid.ID, token bool) {
	var req svidRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		problem(w, http.StatusBadRequest, "bad-request", "bad JSON")
		return
	}
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		problem(w, http.StatusBadRequest, "bad-csr", "not a PEM CSR")
		return
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		problem(w, http.StatusBadRequest, "bad-csr", "bad CSR")
		return
	}
	if len(csr.URIs) > 1 || (len(csr.URIs) == 1 && csr.URIs[0].String() != id.String()) {
		problem(w, http.StatusForbidden, "forbidden-identity", "CSR for another identity")
		return
	}
	a.mu.Lock()
	issuer := a.issuer
	roots := a.roots
	bv := a.bundleVersion
	a.mu.Unlock()
	leaf, err := issuer.IssueLeaf(LeafOptions{ID: id, PublicKey: csr.PublicKey, TTL: a.opts.SVIDTTL, OCSPURL: a.url + "/ocsp"})
	if err != nil {
		problem(w, http.StatusInternalServerError, "internal", "issue failed")
		return
	}
	a.mu.Lock()
	a.issued[leaf.SerialNumber.Text(16)] = issuedCert{id: id, cert: leaf, issuer: issuer}
	if token {
		a.issueCount++
	} else {
		a.renewCount++
	}
	a.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"spiffe_id":      id.String(),
		"serial":         leaf.SerialNumber.Text(16),
		"expires_at":     leaf.NotAfter.UTC().Format(time.RFC3339),
		"instance_id":    "fake-instance",
		"svid_pem":       string(EncodePEM(append([]*x509.Certificate{leaf}, issuer.Chain...)...)),
		"bundle_pem":     string(EncodePEM(roots...)),
		"bundle_version": bv,
	})
}

// Issued returns the certificates issued to id, oldest first is not
// guaranteed.
func (a *Authority) Issued(id spiffeid.ID) []*x509.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*x509.Certificate
	for _, ic := range a.issued {
		if ic.id == id {
			out = append(out, ic.cert)
		}
	}
	return out
}

func (a *Authority) snapshotLocked() []byte {
	serials := make([]string, 0, len(a.revoked))
	for s := range a.revoked {
		serials = append(serials, s)
	}
	p := map[string]any{
		"version": a.seq, "bundle_pem": string(EncodePEM(a.roots...)), "bundle_version": a.bundleVersion,
		"revoked_serials": serials,
	}
	for k, v := range a.snapExtra {
		p[k] = v
	}
	if a.opts.EmbedSigningCert {
		p["signing_cert_pem"] = string(EncodePEM(a.signChain...))
	}
	payload, _ := json.Marshal(p)
	return SignLine(a.signKey, a.seq, "snapshot", payload)
}

func (a *Authority) handleWatch(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	fail := a.failWatch
	a.mu.Unlock()
	if fail != 0 {
		problem(w, fail, "unavailable", "failing on purpose")
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		problem(w, http.StatusUnauthorized, "unauthorized", "client certificate required")
		return
	}
	if a.anyRevoked(r.TLS.PeerCertificates) {
		problem(w, http.StatusForbidden, "revoked", "certificate revoked")
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		problem(w, http.StatusInternalServerError, "internal", "no flusher")
		return
	}
	a.mu.Lock()
	a.watchers++
	a.watchConnects++
	snap := a.snapshotLocked()
	next := len(a.log)
	changed := a.changed
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.watchers--
		a.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(snap); err != nil {
		return
	}
	fl.Flush()
	hb := time.NewTicker(a.opts.Heartbeat)
	defer hb.Stop()
	// Like the real authority: a stream lasts no longer than the
	// certificate that opened it.
	expiry := time.NewTimer(time.Until(r.TLS.PeerCertificates[0].NotAfter))
	defer expiry.Stop()
	for {
		var out [][]byte
		select {
		case <-expiry.C:
			return
		case <-r.Context().Done():
			return
		case <-a.closing:
			return
		case <-hb.C:
			out = append(out, []byte(`{"seq":0,"kind":"heartbeat"}`+"\n"))
		case <-changed:
		}
		a.mu.Lock()
		changed = a.changed
		silent := a.silent
		if !silent {
			out = append(out, a.log[next:]...)
			next = len(a.log)
		}
		a.mu.Unlock()
		if silent {
			continue
		}
		for _, line := range out {
			if _, err := w.Write(line); err != nil {
				return
			}
		}
		fl.Flush()
	}
}

func (a *Authority) handleOCSP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<10))
	if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	req, err := ocsp.ParseRequest(body)
	if err != nil {
		w.Header().Set("Content-Type", "application/ocsp-response")
		_, _ = w.Write(ocsp.MalformedRequestErrorResponse)
		return
	}
	a.mu.Lock()
	a.ocspCount++
	ic, known := a.issued[req.SerialNumber.Text(16)]
	revoked := a.revoked[req.SerialNumber.Text(16)]
	a.mu.Unlock()
	if !known {
		w.Header().Set("Content-Type", "application/ocsp-response")
		_, _ = w.Write(ocsp.UnauthorizedErrorResponse)
		return
	}
	now := time.Now()
	tmpl := ocsp.Response{Status: ocsp.Good, SerialNumber: req.SerialNumber, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(a.opts.OCSPValidity)}
	if revoked {
		tmpl.Status = ocsp.Revoked
		tmpl.RevokedAt = now
		tmpl.RevocationReason = ocsp.KeyCompromise
	}
	resp, err := ocsp.CreateResponse(ic.issuer.Cert, ic.issuer.Cert, tmpl, ic.issuer.Key)
	if err != nil {
		http.Error(w, "internal", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	_, _ = w.Write(resp)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func problem(w http.ResponseWriter, status int, slug, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": "https://ward.dev/problems/" + slug, "title": http.StatusText(status), "status": status, "detail": detail,
	})
}

func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }
