package authority

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/internal/store"
)

// snapshotPayload is the first, signed line of every watch stream.
type snapshotPayload struct {
	Version        int64    `json:"version"`
	BundlePEM      string   `json:"bundle_pem"`
	BundleVersion  int64    `json:"bundle_version"`
	RevokedSerials []string `json:"revoked_serials"`
	SigningCertPEM string   `json:"signing_cert_pem"`
	// AccessListVersion is the watcher's own access-list version (0 when
	// it is not a service or has none): a provider that holds an older
	// list fetches the current one.
	AccessListVersion int64 `json:"access_list_version"`
}

var heartbeatLine = []byte(`{"seq":0,"kind":"heartbeat"}` + "\n")

// handleWatch streams the change log to an SDK: GET /v1/watch?since=SEQ over
// mTLS (any valid SVID of the trust domain). The stream is NDJSON: a signed
// snapshot (the state at seq = its version), then every revocation and
// bundle event after it, and an unsigned heartbeat every 15 s. since is
// accepted for resumption; the snapshot always carries the full state, so
// a client that missed events loses nothing.
func (a *Authority) handleWatch(w http.ResponseWriter, r *http.Request) error {
	p, err := a.requirePeer(r)
	if err != nil {
		return err
	}
	if s := r.URL.Query().Get("since"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err != nil || n < 0 {
			return errBadRequest("since must be a non-negative integer (a version from a previous snapshot or event)")
		}
	}
	wt, err := a.hub.add(serialOf(p.leaf), p.id.String())
	switch {
	case errors.Is(err, errTooManyWatchers):
		return problem.New(http.StatusServiceUnavailable, slugTooManyWatchers, "Too many watchers", "this replica serves its maximum number of watch streams; retry with backoff")
	case err != nil:
		return err
	}
	defer a.hub.remove(wt)

	// Registered first, snapshot second: every event after the snapshot's
	// version is queued for this watcher.
	snap, version, err := a.snapshot(r.Context(), p.id)
	if err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{}) // the server's ReadTimeout would end the stream
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(line []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(a.tun.writeTimeout))
		if _, err := w.Write(line); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(snap) {
		return nil
	}
	a.log.DebugContext(r.Context(), "watch stream opened", "peer", p.id.String(), "version", version)

	heartbeat := time.NewTicker(a.tun.heartbeat)
	defer heartbeat.Stop()
	// A stream lasts no longer than the certificate that opened it.
	expiry := time.NewTimer(time.Until(p.leaf.NotAfter))
	defer expiry.Stop()
	var shutdown <-chan struct{}
	if ch, ok := r.Context().Value(shutdownKey{}).(<-chan struct{}); ok {
		shutdown = ch
	}
	for {
		select {
		case it := <-wt.ch:
			if it.seq > version && !write(it.line) {
				return nil
			}
		case <-wt.done:
			if wt.reason != "slow" { // deliver what was queued (e.g. its own revocation)
			drain:
				for {
					select {
					case it := <-wt.ch:
						if it.seq > version && !write(it.line) {
							return nil
						}
					default:
						break drain
					}
				}
			}
			a.log.InfoContext(r.Context(), "watch stream ended by the authority", "peer", p.id.String(), "reason", wt.reason)
			return nil
		case <-heartbeat.C:
			if !write(heartbeatLine) {
				return nil
			}
		case <-expiry.C:
			return nil
		case <-shutdown:
			return nil
		case <-r.Context().Done():
			return nil
		}
	}
}

// snapshot builds the signed snapshot line and returns it with its version
// (the latest event seq it covers). The version is read first, the state
// second, so the state is at least as new as the version.
func (a *Authority) snapshot(ctx context.Context, watcher spiffeid.ID) ([]byte, int64, error) {
	version, err := a.st.LatestEventSeq(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("authority: snapshot: %w", err)
	}
	now := a.now()
	revoked, err := a.st.ListRevokedSerials(ctx, now)
	if err != nil {
		return nil, 0, fmt.Errorf("authority: snapshot: %w", err)
	}
	// The CA view is current up to the hub's seq; reload when it lags.
	if a.hub.seq.Load() < version {
		if err := a.reloadCAs(ctx); err != nil {
			return nil, 0, err
		}
	}
	st := a.cas.Load()
	for _, e := range st.list {
		if e.State == store.CAStateRevoked && e.NotAfter.After(now) {
			revoked = append(revoked, e.serial)
		}
	}
	var listVersion int64
	if name, ok := a.serviceOf(watcher); ok {
		if listVersion, err = a.st.AccessListVersion(ctx, name); err != nil {
			return nil, 0, fmt.Errorf("authority: snapshot: %w", err)
		}
	}
	slices.Sort(revoked)
	if revoked == nil {
		revoked = []string{}
	}
	payload, err := json.Marshal(snapshotPayload{
		Version:        version,
		BundlePEM:      string(st.bundlePEM),
		BundleVersion:  st.bundleVersion,
		RevokedSerials: revoked,
		SigningCertPEM: string(a.signing.Load().chainPEM),

		AccessListVersion: listVersion,
	})
	if err != nil {
		return nil, 0, err
	}
	return a.signEvent(version, kindSnapshot, payload), version, nil
}

// serialOf is a certificate's serial as stored: lower-case hex.
func serialOf(c *x509.Certificate) string { return ca.SerialHex(c.SerialNumber) }
