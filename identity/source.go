package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source holds a service's X509-SVID and trust bundle, keeps them fresh,
// and builds TLS configs from them. All methods are safe for concurrent
// use. Create it with New, start its background work with Run, stop it
// with Close.
type Source struct {
	cfg    Config
	tune   tuning
	log    *slog.Logger
	now    func() time.Time
	client *authorityClient

	// Read on every handshake without locks.
	svid    atomic.Pointer[svidState]
	trust   atomic.Pointer[trustState]
	revoked atomic.Pointer[revokedSet]

	// mu serializes the writers of svid, trust and revoked, and guards
	// the fields below.
	mu            sync.Mutex
	signer        *signerState
	signerFetched time.Time
	watchVersion  int64

	renewNow chan struct{} // poked when our own SVID was revoked or left the bundle

	// Watch stream subscribers (Subscribe): copy on write under subMu,
	// read without a lock by the watch goroutine.
	subMu sync.Mutex
	subs  atomic.Pointer[[]*subscriber]

	lifeMu  sync.Mutex // guards closed and runDone
	closed  bool
	done    chan struct{}
	runDone chan struct{}
}

var (
	_ x509svid.Source   = (*Source)(nil)
	_ x509bundle.Source = (*Source)(nil)
)

// svidState is one SVID with the TLS certificate built from it.
type svidState struct {
	svid  *x509svid.SVID
	cert  *tls.Certificate
	start time.Time // start of the usable lifetime: max(NotBefore, time received)
}

// trustState is one trust bundle and its authority version (0: unknown,
// e.g. loaded from a file).
type trustState struct {
	bundle  *x509bundle.Bundle
	version int64
}

// signerState is the verified control-plane signing certificate.
type signerState struct {
	pub   ed25519.PublicKey
	leaf  *x509.Certificate
	chain []*x509.Certificate // leaf first
}

// New returns a Source holding a valid SVID. It loads one from cfg.Dir
// when that holds an SVID that is unexpired and verifies against the
// bundle beside it; otherwise it authenticates the authority (BundleFile,
// RootFingerprint, or the bundle in Dir) and obtains an SVID with
// cfg.BootstrapToken. Call Run to keep it fresh.
func New(ctx context.Context, cfg Config) (*Source, error) {
	return newSource(ctx, cfg, defaultTuning())
}

func newSource(ctx context.Context, cfg Config, tune tuning) (*Source, error) {
	cfg, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	if err := cfg.checkTrustSource(); err != nil {
		return nil, err
	}
	s := &Source{
		cfg:      cfg,
		tune:     tune,
		log:      cfg.Logger,
		now:      cfg.Now,
		renewNow: make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.revoked.Store(&revokedSet{})
	s.client = newAuthorityClient(cfg.AuthorityURL, s.verifyAuthorityConn, s.currentCert)

	if cfg.WorkloadAPIAddr != "" {
		if err := s.fromWorkloadAPI(ctx); err != nil {
			return nil, err
		}
		return s, nil
	}
	var diskRoots []*x509.Certificate
	if cfg.Dir != "" {
		svid, bundle, err := LoadDir(cfg.Dir)
		switch {
		case err == nil:
			_, _, verr := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(s.now()))
			if verr == nil {
				s.trust.Store(&trustState{bundle: bundle})
				s.install(svid, time.Time{})
				s.log.Info("identity: loaded SVID from disk", svidAttrs(svid)...)
				return s, nil
			}
			s.log.Info("identity: SVID on disk is not usable", "dir", cfg.Dir, "error", verr.Error())
			diskRoots = bundle.X509Authorities()
		case errors.Is(err, fs.ErrNotExist):
		default:
			s.log.Warn("identity: ignoring unreadable identity directory", "dir", cfg.Dir, "error", err.Error())
		}
	}
	if cfg.BootstrapToken == "" {
		return nil, fmt.Errorf("%w: no usable SVID in Config.Dir and no Config.BootstrapToken", ErrNoSVID)
	}
	ab, err := bootstrapTrust(ctx, cfg, diskRoots, s.now)
	if err != nil {
		return nil, err
	}
	s.trust.Store(&trustState{bundle: ab.bundle, version: ab.version})
	if err := s.setSigner(ab.signing); err != nil {
		// Not fatal: the watch stream fetches it again before use.
		s.log.Warn("identity: authority signing certificate not usable", "error", err.Error())
	}
	iss, err := s.client.issue(ctx, cfg.BootstrapToken)
	if err != nil {
		return nil, err
	}
	if err := s.accept(iss, true); err != nil {
		return nil, err
	}
	s.log.Info("identity: obtained SVID with bootstrap token", svidAttrs(iss.svid)...)
	return s, nil
}

// ID returns the SPIFFE ID of the Source's SVID.
func (s *Source) ID() spiffeid.ID { return s.svid.Load().svid.ID }

// SVID returns the current SVID. It must not be modified.
func (s *Source) SVID() *x509svid.SVID { return s.svid.Load().svid }

// Bundle returns a copy of the current trust bundle.
func (s *Source) Bundle() *x509bundle.Bundle { return s.trust.Load().bundle.Clone() }

// GetX509SVID implements go-spiffe's x509svid.Source.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) { return s.SVID(), nil }

// GetX509BundleForTrustDomain implements go-spiffe's x509bundle.Source.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.trust.Load().bundle.GetX509BundleForTrustDomain(td)
}

// Run keeps the Source fresh until ctx is done or Close is called, then
// returns nil: it renews the SVID at about half its lifetime (±10 %
// jitter), retries failed renewals with exponential backoff (1 s to 30 s)
// while keeping the last good SVID until it expires, falls back to the
// bootstrap token when the SVID expired or the authority refuses it,
// follows the watch stream (trust bundle and revocations) with
// reconnection and resumption, and refreshes the OCSP staple.
func (s *Source) Run(ctx context.Context) error {
	s.lifeMu.Lock()
	switch {
	case s.closed:
		s.lifeMu.Unlock()
		return ErrClosed
	case s.runDone != nil:
		s.lifeMu.Unlock()
		return ErrAlreadyRunning
	}
	runDone := make(chan struct{})
	s.runDone = runDone
	s.lifeMu.Unlock()
	defer func() {
		s.lifeMu.Lock()
		s.runDone = nil
		s.lifeMu.Unlock()
		close(runDone)
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var wg sync.WaitGroup
	if s.cfg.watchEnabled() {
		wg.Go(func() { s.watchLoop(ctx) })
	}
	if s.cfg.WorkloadAPIAddr != "" {
		wg.Go(func() { s.workloadLoop(ctx) })
	}
	s.rotateLoop(ctx)
	cancel()
	wg.Wait()
	return nil
}

// Close stops Run (waiting for it to return) and releases connections.
// The current SVID stays readable. Close is idempotent.
func (s *Source) Close() error {
	s.lifeMu.Lock()
	if s.closed {
		s.lifeMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	runDone := s.runDone
	s.lifeMu.Unlock()
	if runDone != nil {
		<-runDone
	}
	s.client.close()
	return nil
}

// verifyAuthorityConn authenticates the authority on every connection:
// its chain must verify against the current bundle for
// spiffe://<td>/ward/authority and contain no revoked certificate.
func (s *Source) verifyAuthorityConn(cs tls.ConnectionState) error {
	tr := s.trust.Load()
	if tr == nil {
		return ErrUntrustedAuthority
	}
	chains, err := verifyAuthorityChain(cs.PeerCertificates, tr.bundle, s.now())
	if err != nil {
		return err
	}
	for _, c := range chains {
		if err := s.checkRevoked(c); err != nil {
			return err
		}
	}
	return nil
}

func (s *Source) currentCert() *tls.Certificate {
	if st := s.svid.Load(); st != nil {
		return st.cert
	}
	return nil
}

// install publishes svid. Callers hold s.mu or run before the Source is
// shared.
func (s *Source) install(svid *x509svid.SVID, received time.Time) {
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	start := svid.Certificates[0].NotBefore
	if received.After(start) {
		start = received
	}
	s.svid.Store(&svidState{svid: svid, cert: cert, start: start})
}

// accept verifies an issuance answer and installs it. The bundle it
// carries replaces ours when its version is newer, or on the first
// issuance (the authority was authenticated with the bootstrap trust).
func (s *Source) accept(iss *issued, first bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tr := s.trust.Load()
	bundle, version := tr.bundle, tr.version
	if iss.bundle != nil && (iss.bundleVersion > version || (first && iss.bundleVersion >= version)) {
		bundle, version = iss.bundle, iss.bundleVersion
	}
	if td := iss.svid.ID.TrustDomain(); td != bundle.TrustDomain() {
		return fmt.Errorf("identity: authority issued an SVID in trust domain %s, want %s", td, bundle.TrustDomain())
	}
	if _, _, err := x509svid.Verify(iss.svid.Certificates, bundle, x509svid.WithTime(s.now())); err != nil {
		return fmt.Errorf("identity: issued SVID does not verify: %w", err)
	}
	if cur := s.svid.Load(); cur != nil && cur.svid.ID != iss.svid.ID {
		return fmt.Errorf("identity: authority issued %s, want %s", iss.svid.ID, cur.svid.ID)
	}
	if bundle != tr.bundle {
		s.trust.Store(&trustState{bundle: bundle, version: version})
	}
	s.install(iss.svid, s.now())
	if s.cfg.Dir != "" {
		if err := WriteDir(s.cfg.Dir, iss.svid, bundle); err != nil {
			s.log.Error("identity: cannot persist SVID", "dir", s.cfg.Dir, "error", err.Error())
		}
	}
	return nil
}

// rotate obtains a new SVID: renewal over mTLS while the current one is
// valid and unrevoked, the bootstrap token otherwise or when the
// authority refuses the renewal.
func (s *Source) rotate(ctx context.Context) error {
	cur := s.svid.Load().svid
	token := s.cfg.BootstrapToken
	var (
		iss *issued
		err error
	)
	switch {
	case s.usable(cur):
		iss, err = s.client.renew(ctx, cur.ID)
		var ae *AuthorityError
		switch {
		case err == nil || token == "":
		case errors.As(err, &ae) && ae.refused():
			s.log.Warn("identity: authority refused renewal, using bootstrap token", "error", err.Error())
			iss, err = s.client.issue(ctx, token)
		case !s.usable(cur):
			s.log.Warn("identity: SVID expired during renewal, using bootstrap token", "error", err.Error())
			iss, err = s.client.issue(ctx, token)
		}
	case token != "":
		s.log.Info("identity: SVID expired, revoked or no longer trusted, using bootstrap token", svidAttrs(cur)...)
		iss, err = s.client.issue(ctx, token)
	default:
		// No token: try anyway; the authority decides (and refuses).
		iss, err = s.client.renew(ctx, cur.ID)
	}
	if err != nil {
		return err
	}
	if err := s.accept(iss, false); err != nil {
		return err
	}
	s.log.Info("identity: SVID renewed", svidAttrs(iss.svid)...)
	return nil
}

// usable reports whether svid is unexpired, chains to the current
// bundle and is not revoked: whether it can authenticate a renewal.
func (s *Source) usable(svid *x509svid.SVID) bool {
	_, _, err := x509svid.Verify(svid.Certificates, s.trust.Load().bundle, x509svid.WithTime(s.now()))
	return err == nil && s.checkRevoked(svid.Certificates) == nil
}

// renewDelay is the time until the next renewal: half the usable
// lifetime with ±10 % jitter.
func (s *Source) renewDelay(st *svidState) time.Duration {
	half := st.svid.Certificates[0].NotAfter.Sub(st.start) / 2
	at := st.start.Add(half)
	if j := half / 10; j > 0 {
		at = at.Add(-j + rand.N(2*j+1))
	}
	d := at.Sub(s.now())
	if d < s.tune.minRenewDelay {
		d = s.tune.minRenewDelay
	}
	s.log.Debug("identity: renewal scheduled", "in", d.String(), "serial", st.svid.Certificates[0].SerialNumber.Text(16))
	return d
}

// rotateLoop runs renewals and OCSP staple refreshes until ctx is done.
func (s *Source) rotateLoop(ctx context.Context) {
	renew := time.NewTimer(s.renewDelay(s.svid.Load()))
	defer renew.Stop()
	external := s.cfg.WorkloadAPIAddr != "" // the node agent renews
	if external {
		renew.Stop()
	}
	staple := time.NewTimer(0)
	defer staple.Stop()
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-staple.C:
			staple.Reset(s.refreshStaple(ctx))
			continue
		case <-s.renewNow:
			if external {
				continue
			}
		case <-renew.C:
		}
		err := s.rotate(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			backoff = 0
			renew.Reset(s.renewDelay(s.svid.Load()))
			staple.Reset(0)
			continue
		}
		backoff = s.nextBackoff(backoff)
		d := jitter(backoff)
		cur := s.svid.Load().svid
		// Wake just after expiry so the token fallback is not delayed.
		if left := cur.Certificates[0].NotAfter.Sub(s.now()); left > 0 && left < d {
			d = left + 10*time.Millisecond
		}
		s.log.Warn("identity: SVID renewal failed, keeping current SVID",
			append(svidAttrs(cur), "retry_in", d.String(), "error", err.Error())...)
		renew.Reset(d)
	}
}

// RenewSoon asks the Source to renew its SVID now, in the background (Run
// must be running), for example when the authority announced that the
// intermediate that issued it is being replaced. Failures are retried
// with backoff like scheduled renewals.
func (s *Source) RenewSoon() { s.triggerRenew() }

// triggerRenew asks rotateLoop for an immediate renewal.
func (s *Source) triggerRenew() {
	select {
	case s.renewNow <- struct{}{}:
	default:
	}
}

func (s *Source) nextBackoff(prev time.Duration) time.Duration {
	if prev <= 0 {
		return s.tune.backoffMin
	}
	return min(2*prev, s.tune.backoffMax)
}

// jitter spreads d by ±20 % so that many instances do not retry in step.
func jitter(d time.Duration) time.Duration {
	j := d / 5
	if j <= 0 {
		return d
	}
	return d - j + rand.N(2*j+1)
}

// sleep waits for d or until ctx is done; it reports whether ctx is alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func svidAttrs(svid *x509svid.SVID) []any {
	leaf := svid.Certificates[0]
	return []any{"spiffe_id", svid.ID.String(), "serial", leaf.SerialNumber.Text(16), "expires_at", leaf.NotAfter.UTC().Format(time.RFC3339)}
}
