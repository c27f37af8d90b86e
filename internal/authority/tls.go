package authority

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/store"
)

const (
	// componentTTL is the lifetime of ward component certificates,
	// including the authority's serving certificate (renewed at half).
	componentTTL = 24 * time.Hour
	// signingCertTTL is the lifetime of the certificate of the control-plane
	// signing key (renewed at half).
	signingCertTTL = 30 * 24 * time.Hour
	// authorityComponent is the authority's own SPIFFE ID path segment.
	authorityComponent = "authority"
)

// servingCert is the authority's current TLS certificate.
type servingCert struct {
	cert     *tls.Certificate
	issuerID string
	renewAt  time.Time
}

// signingState is the certificate of the control-plane signing key.
type signingState struct {
	leaf     *x509.Certificate
	issuerID string
	chainPEM []byte // leaf + issuing intermediate
}

// ComponentCertificate issues an X.509-SVID for the ward component
// spiffe://<td>/ward/<component>, valid 24h, with the given DNS and IP SANs,
// on a P-256 key generated in-process. The returned certificate carries the
// chain (leaf, intermediate) and its parsed Leaf. The serial is persisted
// like every other.
func (a *Authority) ComponentCertificate(component string, dnsNames []string, ips []net.IP) (tls.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := a.issueComponent(ctx, component, dnsNames, ips)
	return c, err
}

func (a *Authority) issueComponent(ctx context.Context, component string, dnsNames []string, ips []net.IP) (tls.Certificate, *caEntry, error) {
	if !nameRE.MatchString(component) {
		return tls.Certificate{}, nil, fmt.Errorf("authority: invalid component name %q", component)
	}
	id, err := spiffeid.FromSegments(a.td, "ward", component)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("authority: component ID: %w", err)
	}
	key, err := ca.GenerateKey()
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, iss, err := a.issueOwn(ctx, id, key.Public(), componentTTL, dnsNames, ips, nil, "component")
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{
		Certificate: [][]byte{leaf.Raw, iss.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, iss, nil
}

// issueOwn issues and persists a certificate the authority makes for itself
// or a ward component, from the default intermediate.
func (a *Authority) issueOwn(ctx context.Context, id spiffeid.ID, pub crypto.PublicKey, ttl time.Duration, dnsNames []string, ips []net.IP, eku []x509.ExtKeyUsage, kind string) (*x509.Certificate, *caEntry, error) {
	iss, err := a.issuer(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	instance, err := randomHex(8)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := iss.signer.IssueSVID(ca.IssueRequest{
		ID:          id,
		InstanceID:  instance,
		TTL:         ttl,
		Now:         a.now(),
		OCSPURL:     a.ocspURL(),
		CRLURL:      a.crlURL(iss.ID),
		PublicKey:   pub,
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: eku,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("authority: issue %s: %w", id, err)
	}
	if err := a.st.InsertCertificate(ctx, store.Certificate{
		Serial:     ca.SerialHex(leaf.SerialNumber),
		SPIFFEID:   id.String(),
		InstanceID: instance,
		IssuerID:   iss.ID,
		NotBefore:  leaf.NotBefore,
		NotAfter:   leaf.NotAfter,
		DER:        leaf.Raw,
	}); err != nil {
		return nil, nil, fmt.Errorf("authority: persist %s certificate: %w", id, err)
	}
	a.metrics.issued.WithLabelValues(kind).Inc()
	if kind != "signing" { // the control-plane key's own certificate is no issuance
		a.record(audit.Event{Kind: audit.KindSVIDIssued, Caller: id.String(), Action: kind, Decision: audit.Allow,
			Extra: map[string]any{"serial": ca.SerialHex(leaf.SerialNumber), "not_after": leaf.NotAfter.UTC()}})
	}
	return leaf, iss, nil
}

func (a *Authority) ocspURL() string           { return a.publicURL + "/ocsp" }
func (a *Authority) crlURL(caID string) string { return a.publicURL + "/crl/" + caID + ".crl" }

// renewServingCert issues a fresh serving certificate and swaps it in; the
// previous one is returned (nil at start).
func (a *Authority) renewServingCert() (*servingCert, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, iss, err := a.issueComponent(ctx, authorityComponent, a.dnsNames, a.ips)
	if err != nil {
		return nil, err
	}
	life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	return a.serving.Swap(&servingCert{cert: &c, issuerID: iss.ID, renewAt: c.Leaf.NotBefore.Add(life / 2)}), nil
}

// getCertificate serves the current certificate; past half its life a
// renewal starts in the background (or inline if it has expired).
func (a *Authority) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s := a.serving.Load()
	now := a.now()
	if now.Before(s.renewAt) || !a.renewing.CompareAndSwap(false, true) {
		return s.cert, nil
	}
	if now.Before(s.cert.Leaf.NotAfter) {
		go func() {
			defer a.renewing.Store(false)
			if _, err := a.renewServingCert(); err != nil {
				a.log.Error("serving certificate renewal failed", "error", err)
			}
		}()
		return s.cert, nil
	}
	defer a.renewing.Store(false)
	if _, err := a.renewServingCert(); err != nil {
		a.log.Error("serving certificate renewal failed", "error", err)
		return nil, errors.New("authority: no valid serving certificate")
	}
	return a.serving.Load().cert, nil
}

// followDefaultIntermediate re-issues the serving certificate when the
// authority's default intermediate changed (rotation) and revokes the
// superseded one, so that the old intermediate has nothing left chaining
// to it.
func (a *Authority) followDefaultIntermediate(ctx context.Context) {
	active := a.cas.Load().active[""]
	s := a.serving.Load()
	if active == nil || s == nil || s.issuerID == active.ID {
		return
	}
	old, err := a.renewServingCert()
	if err != nil {
		a.log.Error("serving certificate re-issue after rotation failed", "error", err)
		return
	}
	if old != nil {
		if _, err := a.revokeSerials(ctx, []string{ca.SerialHex(old.cert.Leaf.SerialNumber)}, reasonSuperseded, false); err != nil {
			a.log.Error("revoking superseded serving certificate", "error", err)
		}
	}
}

// loadSigningCert loads the signing certificate from the store. With
// mayIssue, a missing, invalid, half-expired certificate or one not issued
// by the active default intermediate is replaced by a new one (stored for
// all replicas); the replaced certificate is returned.
func (a *Authority) loadSigningCert(ctx context.Context, mayIssue bool) (*x509.Certificate, error) {
	st := a.cas.Load()
	cur, usable, fresh := a.parseSigningCert(ctx, st)
	if usable && (fresh || !mayIssue) {
		a.signing.Store(cur)
		return nil, nil
	}
	if !mayIssue {
		if a.signing.Load() == nil {
			return nil, errors.New("authority: no valid signing certificate in the store")
		}
		return nil, nil
	}
	id, err := spiffeid.FromSegments(a.td, "ward", authorityComponent)
	if err != nil {
		return nil, err
	}
	leaf, iss, err := a.issueOwn(ctx, id, a.signingKey.Public(), signingCertTTL, nil, nil, []x509.ExtKeyUsage{}, "signing")
	if err != nil {
		return nil, err
	}
	pemChain := ca.EncodeCertsPEM(iss.chain(leaf)...)
	if err := a.st.PutMeta(ctx, metaSigningCert, pemChain); err != nil {
		return nil, fmt.Errorf("authority: store signing certificate: %w", err)
	}
	a.signing.Store(&signingState{leaf: leaf, issuerID: iss.ID, chainPEM: pemChain})
	if usable {
		return cur.leaf, nil
	}
	return nil, nil
}

// parseSigningCert reads the stored signing certificate: usable if it
// certifies our key and verifies against the bundle; fresh if moreover it
// is in the first half of its life and issued by the active default
// intermediate.
func (a *Authority) parseSigningCert(ctx context.Context, st *caState) (s *signingState, usable, fresh bool) {
	raw, err := a.st.GetMeta(ctx, metaSigningCert)
	if err != nil {
		return nil, false, false
	}
	chain, err := ca.ParseCertsPEM(raw)
	if err != nil || len(chain) < 2 {
		return nil, false, false
	}
	leaf := chain[0]
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(a.signingKey.Public()) {
		return nil, false, false
	}
	now := a.now()
	if _, _, err := x509svid.Verify(chain, st.bundle, x509svid.WithTime(now)); err != nil {
		return nil, false, false
	}
	iss := st.byRaw[string(chain[1].Raw)]
	if iss == nil || iss.State == store.CAStateRevoked {
		return nil, false, false
	}
	s = &signingState{leaf: leaf, issuerID: iss.ID, chainPEM: raw}
	half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	active := st.active[""]
	return s, true, now.Before(half) && active != nil && active.ID == iss.ID
}

// ServerTLSConfig is the authority's server TLS configuration: its serving
// SVID (spiffe://<td>/ward/authority, renewed in-process; chain included)
// and optional client certificates, verified in VerifyConnection against
// the current bundle and the revocation state when presented.
func (a *Authority) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		GetCertificate:   a.getCertificate,
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: a.verifyConnection,
		NextProtos:       []string{"h2", "http/1.1"},
	}
}

// shutdownKey carries, in request contexts, a channel closed when the
// server starts shutting down (watch streams end then).
type shutdownKey struct{}

// Serve serves the API over HTTPS on ln until ctx is done, then shuts down
// gracefully (watch streams are ended, other requests get 10 s).
func (a *Authority) Serve(ctx context.Context, ln net.Listener) error {
	shutdown := make(chan struct{})
	srv := &http.Server{
		Handler:           a.Handler(),
		TLSConfig:         a.ServerTLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second, // cleared by watch streams
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context {
			return context.WithValue(context.Background(), shutdownKey{}, (<-chan struct{})(shutdown))
		},
	}
	srv.RegisterOnShutdown(func() { close(shutdown) })
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("authority: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("authority: serve: %w", err)
	}
	return nil
}

// Run listens on addr and serves until ctx is done.
func (a *Authority) Run(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("authority: listen %s: %w", addr, err)
	}
	return a.Serve(ctx, ln)
}

// splitHostnames sorts configured hostnames into DNS and IP SANs, always
// including localhost, 127.0.0.1 and ::1.
func splitHostnames(hosts []string) ([]string, []net.IP, error) {
	dns := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	seen := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}
	for _, h := range hosts {
		h = strings.TrimSpace(strings.ToLower(h))
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if !validDNSName(h) {
			return nil, nil, fmt.Errorf("authority: Config.Hostnames: %q is not a DNS name or IP address", h)
		}
		dns = append(dns, h)
	}
	return dns, ips, nil
}

func validDNSName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimPrefix(h, "*."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// RevokeSuperseded revokes a component certificate that its holder has
// replaced (reason superseded), so that nothing live is left chaining to a
// CA being rotated out. Revoking an already revoked or unknown serial is an
// error only for unknown ones.
func (a *Authority) RevokeSuperseded(ctx context.Context, cert *x509.Certificate) error {
	_, err := a.revokeSerials(ctx, []string{ca.SerialHex(cert.SerialNumber)}, reasonSuperseded, false)
	return err
}
