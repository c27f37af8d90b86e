package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// anyDomainRoots is a bundle source that answers the same roots for any
// trust domain. It is used only on first contact with BundleFile, before
// the trust domain is known; the authority's ID is bound to the trust
// domain of its answer afterwards.
type anyDomainRoots []*x509.Certificate

func (r anyDomainRoots) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return x509bundle.FromX509Authorities(td, r), nil
}

// bootstrapTrust authenticates the authority with the configured
// bootstrap trust and returns its current bundle and signing certificate.
func bootstrapTrust(ctx context.Context, cfg Config, diskRoots []*x509.Certificate, now func() time.Time) (*authorityBundle, error) {
	switch {
	case cfg.BundleFile != "":
		data, err := os.ReadFile(cfg.BundleFile)
		if err != nil {
			return nil, fmt.Errorf("identity: Config.BundleFile: %w", err)
		}
		roots, err := parseCertsPEM(data, maxRoots)
		if err != nil {
			return nil, fmt.Errorf("identity: Config.BundleFile: %w", err)
		}
		return fetchBundleTrusting(ctx, cfg.AuthorityURL, roots, now)
	case cfg.RootFingerprint != "":
		fp, err := parseFingerprint(cfg.RootFingerprint)
		if err != nil {
			return nil, err
		}
		return fetchBundlePinned(ctx, cfg.AuthorityURL, fp, now)
	case len(diskRoots) > 0:
		return fetchBundleTrusting(ctx, cfg.AuthorityURL, diskRoots, now)
	default:
		return nil, fmt.Errorf("%w: no Config.BundleFile, Config.RootFingerprint or bundle in Config.Dir", ErrUntrustedAuthority)
	}
}

// fetchBundleTrusting fetches GET /v1/bundle from an authority whose
// certificate must chain to roots and carry the ID
// spiffe://<td>/ward/authority of the trust domain it answers.
func fetchBundleTrusting(ctx context.Context, base string, roots []*x509.Certificate, now func() time.Time) (*authorityBundle, error) {
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: no certificate presented", ErrUntrustedAuthority)
		}
		id, _, err := x509svid.Verify(cs.PeerCertificates, anyDomainRoots(roots), x509svid.WithTime(now()))
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUntrustedAuthority, err)
		}
		if id != authorityID(id.TrustDomain()) {
			return fmt.Errorf("%w: certificate is for %s, not an authority", ErrUntrustedAuthority, id)
		}
		return nil
	}
	c := newAuthorityClient(base, verify, noCert)
	defer c.close()
	ab, cs, err := c.fetchBundle(ctx)
	if err != nil {
		return nil, err
	}
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return nil, fmt.Errorf("%w: no TLS connection state", ErrUntrustedAuthority)
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil || id != authorityID(ab.td) {
		return nil, fmt.Errorf("%w: authority certificate does not match trust domain %s", ErrUntrustedAuthority, ab.td)
	}
	return ab, nil
}

// fetchBundlePinned fetches GET /v1/bundle and accepts it only if one of
// its roots has the SHA-256 fingerprint fp and the certificate the
// authority presented on that very connection verifies against that root
// (not merely against any root of the answer, which an impostor could
// pad with its own). Until that check passes nothing from the answer is
// used, and the request carries no credential, so the handshake itself
// only requires a certificate to be presented.
func fetchBundlePinned(ctx context.Context, base string, fp []byte, now func() time.Time) (*authorityBundle, error) {
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: no certificate presented", ErrUntrustedAuthority)
		}
		return nil // verified below against the pinned root
	}
	c := newAuthorityClient(base, verify, noCert)
	defer c.close()
	ab, cs, err := c.fetchBundle(ctx)
	if err != nil {
		return nil, err
	}
	var pinned *x509.Certificate
	for _, r := range ab.bundle.X509Authorities() {
		sum := sha256.Sum256(r.Raw)
		if bytes.Equal(sum[:], fp) {
			pinned = r
			break
		}
	}
	if pinned == nil {
		return nil, fmt.Errorf("%w: no root in the authority's bundle matches Config.RootFingerprint", ErrUntrustedAuthority)
	}
	if cs == nil {
		return nil, fmt.Errorf("%w: no TLS connection state", ErrUntrustedAuthority)
	}
	if _, err := verifyAuthorityChain(cs.PeerCertificates, x509bundle.FromX509Authorities(ab.td, []*x509.Certificate{pinned}), now()); err != nil {
		return nil, err
	}
	return ab, nil
}

func noCert() *tls.Certificate { return nil }

// setSigner verifies a signing certificate chain against the current
// bundle and makes it the key that watch events must be signed with.
func (s *Source) setSigner(chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: authority sent no signing certificate", ErrUntrustedAuthority)
	}
	chains, err := verifyAuthorityChain(chain, s.trust.Load().bundle, s.now())
	if err != nil {
		return fmt.Errorf("identity: signing certificate: %w", err)
	}
	for _, c := range chains {
		if err := s.checkRevoked(c); err != nil {
			return fmt.Errorf("identity: signing certificate: %w", err)
		}
	}
	pub, err := signingKey(chain[0])
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.signer = &signerState{pub: pub, leaf: chain[0], chain: chain}
	s.mu.Unlock()
	return nil
}

// Fetch obtains an SVID with cfg.BootstrapToken: it authenticates the
// authority like New (cfg.BundleFile, cfg.RootFingerprint, or bundle.pem
// in cfg.Dir), generates a P-256 key and sends a CSR to POST /v1/svid.
// It returns the SVID and the authority's trust bundle; it writes
// nothing (see WriteDir).
func Fetch(ctx context.Context, cfg Config) (*x509svid.SVID, *x509bundle.Bundle, error) {
	cfg, err := cfg.normalized()
	if err != nil {
		return nil, nil, err
	}
	if err := cfg.checkTrustSource(); err != nil {
		return nil, nil, err
	}
	if cfg.BootstrapToken == "" {
		return nil, nil, fmt.Errorf("identity: Config.BootstrapToken is required")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	var diskRoots []*x509.Certificate
	if cfg.Dir != "" && cfg.BundleFile == "" && cfg.RootFingerprint == "" {
		data, err := os.ReadFile(filepath.Join(cfg.Dir, bundleFileName))
		if err != nil {
			return nil, nil, fmt.Errorf("identity: Config.Dir: %w", err)
		}
		if diskRoots, err = parseCertsPEM(data, maxRoots); err != nil {
			return nil, nil, fmt.Errorf("identity: Config.Dir bundle: %w", err)
		}
	}
	ab, err := bootstrapTrust(ctx, cfg, diskRoots, now)
	if err != nil {
		return nil, nil, err
	}
	c := newAuthorityClient(cfg.AuthorityURL, verifyWithBundle(ab.bundle, now), noCert)
	defer c.close()
	iss, err := c.issue(ctx, cfg.BootstrapToken)
	if err != nil {
		return nil, nil, err
	}
	bundle := ab.bundle
	if iss.bundle != nil && iss.bundleVersion >= ab.version {
		bundle = iss.bundle
	}
	if err := verifyIssued(iss, bundle, now()); err != nil {
		return nil, nil, err
	}
	return iss.svid, bundle, nil
}

// Renew renews current over mTLS (POST /v1/svid/renew), authenticating the
// authority with bundle. It returns the new SVID (same ID, new key) and
// the bundle to use from now on. Only cfg.AuthorityURL and cfg.Now are
// used.
func Renew(ctx context.Context, cfg Config, current *x509svid.SVID, bundle *x509bundle.Bundle) (*x509svid.SVID, *x509bundle.Bundle, error) {
	if current == nil || len(current.Certificates) == 0 || bundle == nil {
		return nil, nil, errors.New("identity: Renew needs the current SVID and bundle")
	}
	cfg, err := cfg.normalized()
	if err != nil {
		return nil, nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	cert := &tls.Certificate{PrivateKey: current.PrivateKey, Leaf: current.Certificates[0]}
	for _, c := range current.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	c := newAuthorityClient(cfg.AuthorityURL, verifyWithBundle(bundle, now), func() *tls.Certificate { return cert })
	defer c.close()
	iss, err := c.renew(ctx, current.ID)
	if err != nil {
		return nil, nil, err
	}
	if iss.svid.ID != current.ID {
		return nil, nil, fmt.Errorf("identity: authority issued %s, want %s", iss.svid.ID, current.ID)
	}
	newBundle := bundle
	if iss.bundle != nil {
		newBundle = iss.bundle
	}
	if err := verifyIssued(iss, newBundle, now()); err != nil {
		return nil, nil, err
	}
	return iss.svid, newBundle, nil
}

func verifyWithBundle(bundle *x509bundle.Bundle, now func() time.Time) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		_, err := verifyAuthorityChain(cs.PeerCertificates, bundle, now())
		return err
	}
}

func verifyIssued(iss *issued, bundle *x509bundle.Bundle, now time.Time) error {
	if td := iss.svid.ID.TrustDomain(); td != bundle.TrustDomain() {
		return fmt.Errorf("identity: authority issued an SVID in trust domain %s, want %s", td, bundle.TrustDomain())
	}
	if _, _, err := x509svid.Verify(iss.svid.Certificates, bundle, x509svid.WithTime(now)); err != nil {
		return fmt.Errorf("identity: issued SVID does not verify: %w", err)
	}
	return nil
}
