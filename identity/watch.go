package identity

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Kinds of watch stream lines.
const (
	kindSnapshot   = "snapshot"
	kindHello      = "hello" // accepted as a synonym of snapshot
	kindRevocation = "revocation"
	kindBundle     = "bundle"
	kindHeartbeat  = "heartbeat"
)

// watchLine is one parsed line of GET /v1/watch. Only payload is signed;
// seq and kind are transport hints.
type watchLine struct {
	seq     int64
	kind    string
	payload []byte
	sig     []byte
}

type wireWatchLine struct {
	Seq     int64  `json:"seq"`
	Kind    string `json:"kind"`
	Payload string `json:"payload"`
	Sig     string `json:"sig"`
}

type snapshotPayload struct {
	Version        int64    `json:"version"`
	BundlePEM      string   `json:"bundle_pem"`
	BundleVersion  int64    `json:"bundle_version"`
	RevokedSerials []string `json:"revoked_serials"`
	SigningCertPEM string   `json:"signing_cert_pem"` // optional
}

type revocationPayload struct {
	Version int64    `json:"version"`
	Serials []string `json:"serials"`
	Reason  string   `json:"reason"`
	At      string   `json:"at"`
}

type bundlePayload struct {
	Version        int64  `json:"version"`
	BundlePEM      string `json:"bundle_pem"`
	BundleVersion  int64  `json:"bundle_version"`
	SigningCertPEM string `json:"signing_cert_pem"` // optional
}

// parseWatchLine parses one NDJSON line. It checks form only; signatures
// are checked by the caller.
func parseWatchLine(line []byte) (watchLine, error) {
	var w wireWatchLine
	if err := json.Unmarshal(line, &w); err != nil {
		return watchLine{}, fmt.Errorf("%w: %v", errBadEvent, err)
	}
	if w.Kind == "" || len(w.Kind) > 64 {
		return watchLine{}, fmt.Errorf("%w: missing kind", errBadEvent)
	}
	if w.Seq < 0 {
		return watchLine{}, fmt.Errorf("%w: negative seq", errBadEvent)
	}
	l := watchLine{seq: w.Seq, kind: w.Kind}
	if w.Kind == kindHeartbeat {
		return l, nil
	}
	var err error
	if l.payload, err = decodeBase64(w.Payload); err != nil || len(l.payload) == 0 {
		return watchLine{}, fmt.Errorf("%w: payload is not base64", errBadEvent)
	}
	if l.sig, err = decodeBase64(w.Sig); err != nil || len(l.sig) != ed25519.SignatureSize {
		return watchLine{}, fmt.Errorf("%w: sig is not a base64 Ed25519 signature", errBadEvent)
	}
	return l, nil
}

// decodeBase64 accepts standard and URL alphabets, padded or not. The
// signature covers the decoded bytes, so the encoding is not security
// relevant.
func decodeBase64(s string) ([]byte, error) {
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		var b []byte
		if b, err = enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, err
}

func parseSnapshot(p []byte) (snapshotPayload, error) {
	var sp snapshotPayload
	if err := json.Unmarshal(p, &sp); err != nil {
		return sp, fmt.Errorf("%w: snapshot: %v", errBadEvent, err)
	}
	if sp.Version < 0 || sp.BundleVersion < 0 {
		return sp, fmt.Errorf("%w: snapshot: negative version", errBadEvent)
	}
	return sp, nil
}

func parseRevocation(p []byte) (revocationPayload, error) {
	var rp revocationPayload
	if err := json.Unmarshal(p, &rp); err != nil {
		return rp, fmt.Errorf("%w: revocation: %v", errBadEvent, err)
	}
	if rp.Version < 0 {
		return rp, fmt.Errorf("%w: revocation: negative version", errBadEvent)
	}
	return rp, nil
}

func parseBundleEvent(p []byte) (bundlePayload, error) {
	var bp bundlePayload
	if err := json.Unmarshal(p, &bp); err != nil {
		return bp, fmt.Errorf("%w: bundle: %v", errBadEvent, err)
	}
	if bp.Version < 0 || bp.BundleVersion < 0 {
		return bp, fmt.Errorf("%w: bundle: negative version", errBadEvent)
	}
	if bp.BundlePEM == "" {
		return bp, fmt.Errorf("%w: bundle: empty bundle_pem", errBadEvent)
	}
	return bp, nil
}

// normalizeSerial turns a hex serial into the canonical serial.Text(16)
// form (lower case, no leading zeros).
func normalizeSerial(s string) (string, bool) {
	if len(s) == 0 || len(s) > 64 {
		return "", false
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return "", false
	}
	return n.Text(16), true
}

// watchLoop follows the watch stream until ctx is done, reconnecting with
// backoff and resuming from the last applied version.
func (s *Source) watchLoop(ctx context.Context) {
	var backoff time.Duration
	for {
		started := time.Now()
		healthy, err := s.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		var d time.Duration
		if healthy {
			// A working stream ended: the authority closes a stream when
			// the certificate that opened it expires, or when it shuts
			// down. Reconnect at once (with the current certificate) so
			// no event waits; the snapshot covers anything missed. Streams
			// start at most once per watchMinInterval, so a server that
			// hangs up after every snapshot does not get a hot loop.
			backoff = 0
			d = rand.N(s.tune.reconnectJitter + 1)
			if lived := time.Since(started); lived < s.tune.watchMinInterval {
				d = max(d, s.tune.watchMinInterval-lived)
			}
			s.log.Debug("identity: watch stream ended, reconnecting", "retry_in", d.String(), "error", errString(err))
		} else {
			backoff = s.nextBackoff(backoff)
			d = jitter(backoff)
			s.log.Warn("identity: watch stream failed, reconnecting", "retry_in", d.String(), "error", errString(err))
		}
		if !sleep(ctx, d) {
			return
		}
	}
}

// watchOnce runs one watch connection. healthy reports that a snapshot
// was applied.
func (s *Source) watchOnce(ctx context.Context) (healthy bool, err error) {
	if err := s.ensureSigner(ctx); err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var idleFired atomic.Bool
	idle := time.AfterFunc(s.tune.watchIdle, func() {
		idleFired.Store(true)
		cancel()
	})
	defer idle.Stop()

	s.mu.Lock()
	since := s.watchVersion
	s.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.client.base+"/v1/watch?since="+strconv.FormatInt(since, 10), nil)
	if err != nil {
		return false, fmt.Errorf("identity: watch: %w", err)
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := s.client.stream.Do(req)
	if err != nil {
		return false, fmt.Errorf("identity: watch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := readBounded(resp.Body, 64<<10)
		return false, decodeProblem(resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes)
	for sc.Scan() {
		idle.Reset(s.tune.watchIdle)
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		snap, err := s.handleLine(ctx, line)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.log.Warn("identity: watch event ignored", "error", err.Error())
			continue
		}
		healthy = healthy || snap
	}
	if idleFired.Load() {
		return healthy, fmt.Errorf("identity: watch: no data for %s", s.tune.watchIdle)
	}
	if err := sc.Err(); err != nil {
		return healthy, fmt.Errorf("identity: watch: %w", err)
	}
	return healthy, errors.New("identity: watch: stream closed by authority")
}

// handleLine verifies and applies one line; snapshot reports an applied
// snapshot.
func (s *Source) handleLine(ctx context.Context, line []byte) (snapshot bool, err error) {
	l, err := parseWatchLine(line)
	if err != nil {
		return false, err
	}
	if l.kind == kindHeartbeat {
		return false, nil
	}
	if err := s.verifySignature(ctx, l); err != nil {
		return false, err
	}
	kind := l.kind
	switch l.kind {
	case kindSnapshot, kindHello:
		kind, snapshot, err = kindSnapshot, true, s.applySnapshot(ctx, l)
	case kindRevocation:
		err = s.applyRevocation(l)
	case kindBundle:
		err = s.applyBundle(ctx, l)
	default:
		s.log.Debug("identity: passing on watch event of a kind identity does not apply", "kind", l.kind, "seq", l.seq)
	}
	if err != nil {
		return false, err
	}
	s.publish(kind, l.payload)
	return snapshot, nil
}

// verifySignature checks the payload signature with the current signing
// key. On failure the signing certificate is fetched again (at most once
// per tune.signerRefresh, so forged lines cannot make us hammer the
// authority) and the check repeated once.
func (s *Source) verifySignature(ctx context.Context, l watchLine) error {
	if s.signatureValid(l) {
		return nil
	}
	s.mu.Lock()
	recent := time.Since(s.signerFetched) < s.tune.signerRefresh
	s.mu.Unlock()
	if recent {
		return fmt.Errorf("%w (kind %s, seq %d)", errBadSignature, l.kind, l.seq)
	}
	if err := s.refreshSigner(ctx); err != nil {
		return fmt.Errorf("%w (kind %s, seq %d; refreshing the signing certificate failed: %v)", errBadSignature, l.kind, l.seq, err)
	}
	if s.signatureValid(l) {
		return nil
	}
	return fmt.Errorf("%w (kind %s, seq %d)", errBadSignature, l.kind, l.seq)
}

func (s *Source) signatureValid(l watchLine) bool {
	s.mu.Lock()
	sg := s.signer
	s.mu.Unlock()
	return sg != nil && s.now().Before(sg.leaf.NotAfter) && s.checkRevoked(sg.chain) == nil &&
		ed25519.Verify(sg.pub, l.payload, l.sig)
}

// ensureSigner makes sure a signing certificate that verifies against the
// current bundle is known.
func (s *Source) ensureSigner(ctx context.Context) error {
	s.mu.Lock()
	sg := s.signer
	s.mu.Unlock()
	if sg != nil && s.signerStillValid(sg) {
		return nil
	}
	return s.refreshSigner(ctx)
}

func (s *Source) signerStillValid(sg *signerState) bool {
	_, _, err := x509svid.Verify(sg.chain, s.trust.Load().bundle, x509svid.WithTime(s.now()))
	return err == nil
}

// refreshSigner fetches GET /v1/bundle (over TLS authenticated with the
// current bundle), adopts its bundle when newer, and installs its signing
// certificate.
func (s *Source) refreshSigner(ctx context.Context) error {
	s.mu.Lock()
	s.signerFetched = time.Now()
	s.mu.Unlock()
	ab, _, err := s.client.fetchBundle(ctx)
	if err != nil {
		return err
	}
	if td := s.trust.Load().bundle.TrustDomain(); ab.td != td {
		return fmt.Errorf("%w: authority answered for trust domain %s, want %s", ErrUntrustedAuthority, ab.td, td)
	}
	s.mu.Lock()
	changed := s.setBundleLocked(ab.bundle, ab.version, "bundle endpoint")
	s.mu.Unlock()
	if changed {
		s.afterBundleChange()
	}
	return s.setSigner(ab.signing)
}

// setBundleLocked replaces the bundle if version is newer. Callers hold
// s.mu.
func (s *Source) setBundleLocked(b *x509bundle.Bundle, version int64, from string) bool {
	tr := s.trust.Load()
	if version <= tr.version || b.TrustDomain() != tr.bundle.TrustDomain() || b.Empty() {
		return false
	}
	s.trust.Store(&trustState{bundle: b, version: version})
	s.log.Info("identity: trust bundle updated", "version", version, "roots", len(b.X509Authorities()), "from", from)
	if s.cfg.Dir != "" {
		if err := writeBundleFile(s.cfg.Dir, b); err != nil {
			s.log.Error("identity: cannot persist bundle", "dir", s.cfg.Dir, "error", err.Error())
		}
	}
	return true
}

// afterBundleChange renews at once if our own SVID no longer chains to
// the bundle, and drops a signing certificate that no longer does.
func (s *Source) afterBundleChange() {
	bundle := s.trust.Load().bundle
	if _, _, err := x509svid.Verify(s.SVID().Certificates, bundle, x509svid.WithTime(s.now())); err != nil {
		s.log.Warn("identity: own SVID does not chain to the new bundle, renewing", "error", err.Error())
		s.triggerRenew()
	}
	s.mu.Lock()
	if s.signer != nil && !s.signerStillValid(s.signer) {
		s.signer = nil
	}
	s.mu.Unlock()
}

// applySnapshot replaces the revoked set and adopts the bundle when newer.
// A snapshot older than what we applied is a rollback.
func (s *Source) applySnapshot(ctx context.Context, l watchLine) error {
	sp, err := parseSnapshot(l.payload)
	if err != nil {
		return err
	}
	td := s.trust.Load().bundle.TrustDomain()
	var bundle *x509bundle.Bundle
	if sp.BundlePEM != "" {
		if bundle, err = parseBundlePEM(td, []byte(sp.BundlePEM)); err != nil {
			return fmt.Errorf("%w: snapshot: %v", errBadEvent, err)
		}
	}
	set := make(revokedSet, len(sp.RevokedSerials))
	for _, str := range sp.RevokedSerials {
		if n, ok := normalizeSerial(str); ok {
			set[n] = struct{}{}
		}
	}
	s.mu.Lock()
	if sp.Version < s.watchVersion {
		v := s.watchVersion
		s.mu.Unlock()
		return fmt.Errorf("%w: snapshot version %d < applied version %d", errRollback, sp.Version, v)
	}
	changed := bundle != nil && s.setBundleLocked(bundle, sp.BundleVersion, "watch snapshot")
	s.revoked.Store(&set)
	s.watchVersion = sp.Version
	s.mu.Unlock()
	s.log.Debug("identity: watch snapshot applied", "version", sp.Version, "revoked", len(set))
	s.afterRevocations()
	if changed {
		s.afterBundleChange()
	}
	s.adoptSigner(ctx, sp.SigningCertPEM, changed)
	return nil
}

// adoptSigner installs the signing certificate carried by a verified
// event (it must still chain to the, possibly new, bundle). Without one,
// or if it is unusable, the certificate is fetched from GET /v1/bundle
// when the bundle changed.
func (s *Source) adoptSigner(ctx context.Context, chainPEM string, bundleChanged bool) {
	if chainPEM != "" {
		chain, err := parseCertsPEM([]byte(chainPEM), maxChainCerts)
		if err == nil {
			s.mu.Lock()
			cur := s.signer
			s.mu.Unlock()
			if cur != nil && cur.leaf.Equal(chain[0]) {
				return
			}
			if err = s.setSigner(chain); err == nil {
				return
			}
		}
		s.log.Warn("identity: signing certificate in watch event not usable, fetching it", "error", err.Error())
	} else if !bundleChanged {
		return
	}
	if err := s.refreshSigner(ctx); err != nil {
		s.log.Warn("identity: signing certificate refresh failed", "error", err.Error())
	}
}

// applyRevocation adds serials to the revoked set.
func (s *Source) applyRevocation(l watchLine) error {
	rp, err := parseRevocation(l.payload)
	if err != nil {
		return err
	}
	v := rp.Version
	if v == 0 {
		v = l.seq
	}
	s.mu.Lock()
	if v <= s.watchVersion {
		cur := s.watchVersion
		s.mu.Unlock()
		return fmt.Errorf("%w: revocation version %d <= applied version %d", errRollback, v, cur)
	}
	old := *s.revoked.Load()
	set := make(revokedSet, len(old)+len(rp.Serials))
	for k := range old {
		set[k] = struct{}{}
	}
	for _, str := range rp.Serials {
		if n, ok := normalizeSerial(str); ok {
			set[n] = struct{}{}
		}
	}
	s.revoked.Store(&set)
	s.watchVersion = v
	s.mu.Unlock()
	s.log.Info("identity: revocation applied", "version", v, "serials", len(rp.Serials), "reason", clip(rp.Reason))
	s.afterRevocations()
	return nil
}

// afterRevocations renews at once if our own chain was revoked.
func (s *Source) afterRevocations() {
	if err := s.checkRevoked(s.SVID().Certificates); err != nil {
		s.log.Error("identity: own SVID revoked, renewing", "error", err.Error())
		s.triggerRenew()
	}
}

// applyBundle replaces the trust bundle. The event was signed by a
// certificate chaining to the current bundle; its bundle version must be
// newer than ours.
func (s *Source) applyBundle(ctx context.Context, l watchLine) error {
	bp, err := parseBundleEvent(l.payload)
	if err != nil {
		return err
	}
	v := bp.Version
	if v == 0 {
		v = l.seq
	}
	bundle, err := parseBundlePEM(s.trust.Load().bundle.TrustDomain(), []byte(bp.BundlePEM))
	if err != nil {
		return fmt.Errorf("%w: bundle: %v", errBadEvent, err)
	}
	s.mu.Lock()
	if v <= s.watchVersion {
		cur := s.watchVersion
		s.mu.Unlock()
		return fmt.Errorf("%w: bundle event version %d <= applied version %d", errRollback, v, cur)
	}
	if cur := s.trust.Load().version; bp.BundleVersion <= cur {
		s.watchVersion = v
		s.mu.Unlock()
		return fmt.Errorf("%w: bundle version %d <= current %d", errRollback, bp.BundleVersion, cur)
	}
	changed := s.setBundleLocked(bundle, bp.BundleVersion, "watch event")
	s.watchVersion = v
	s.mu.Unlock()
	if changed {
		s.afterBundleChange()
	}
	// The signing certificate may have moved to a new root.
	s.adoptSigner(ctx, bp.SigningCertPEM, true)
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
