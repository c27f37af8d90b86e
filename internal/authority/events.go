package authority

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"

	"github.com/wardsec/ward/internal/store"
)

// Kinds of the change log (store events). Watchers see revocation and
// bundle; ca events only tell other replicas to reload their CA view.
const (
	kindRevocation = "revocation"
	kindBundle     = "bundle"
	kindCA         = "ca"
	kindSnapshot   = "snapshot"
	kindHeartbeat  = "heartbeat"
)

// revocationPayload is the stored payload of a revocation event.
type revocationPayload struct {
	Serials []string  `json:"serials"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
	Service string    `json:"service,omitempty"`
	CAID    string    `json:"ca_id,omitempty"`
}

// bundlePayload is the stored payload of a bundle event.
type bundlePayload struct {
	BundlePEM      string `json:"bundle_pem"`
	BundleVersion  int64  `json:"bundle_version"`
	SigningCertPEM string `json:"signing_cert_pem,omitempty"`
}

// caPayload is the stored payload of a ca event.
type caPayload struct {
	CAID   string `json:"ca_id"`
	Team   string `json:"team,omitempty"`
	Change string `json:"change"`
}

// appendEvent records a change in the store's event log and notifies every
// replica: other ones through the bus (subject ward.v1.events, payload
// {"seq":N,"kind":"..."}), this one directly. A bus failure is logged, not
// returned: the event is stored, and replicas also poll the log.
func (a *Authority) appendEvent(ctx context.Context, kind string, payload any) (store.Event, error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return store.Event{}, fmt.Errorf("authority: encode %s event: %w", kind, err)
	}
	ev, err := a.st.AppendEvent(ctx, kind, data)
	if err != nil {
		return store.Event{}, fmt.Errorf("authority: append %s event: %w", kind, err)
	}
	if a.bus != nil {
		note, _ := json.Marshal(struct {
			Seq  int64  `json:"seq"`
			Kind string `json:"kind"`
		}{ev.Seq, kind})
		if err := a.bus.Publish(ctx, eventsSubject, note); err != nil {
			a.log.WarnContext(ctx, "bus publish failed; other replicas will see the event on their next poll", "seq", ev.Seq, "kind", kind, "error", err)
		}
	}
	a.hub.wake()
	return ev, nil
}

// syncEvents applies every pending event in this replica before returning,
// so that an admin request reads its own writes (CRL, CA view, watchers).
func (a *Authority) syncEvents(ctx context.Context) {
	a.hub.process(ctx)
}

// loop is the replica's background task: apply events when woken (own
// appends, bus notifications) or on a poll tick, and renew the signing
// certificate when due.
func (a *Authority) loop(ctx context.Context) {
	defer close(a.loopDone)
	poll := time.NewTicker(a.tun.pollInterval)
	defer poll.Stop()
	maint := time.NewTicker(time.Minute)
	defer maint.Stop()
	reports := time.NewTicker(time.Second)
	defer reports.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.hub.wakeCh:
		case <-poll.C:
		case <-maint.C:
			a.maintain(ctx)
		case <-reports.C:
			_ = a.flushReports(ctx)
			continue
		}
		a.hub.process(ctx)
	}
}

// maintain renews the signing certificate at half its life and advances
// the token service's key schedule.
func (a *Authority) maintain(ctx context.Context) {
	a.adminMu.Lock()
	defer a.adminMu.Unlock()
	if _, err := a.renewSigningCert(ctx); err != nil {
		a.log.ErrorContext(ctx, "signing certificate renewal failed", "error", err)
	}
	if _, err := a.rotateTokenKeys(ctx, false); err != nil {
		a.log.ErrorContext(ctx, "token signing key rotation failed", "error", err)
	}
}

// renewSigningCert replaces the signing certificate if it is due (half
// life, or issued by an intermediate that is no longer the default) and then
// publishes it in a bundle event; a certificate replaced because of a
// rotation is revoked as superseded. It reports whether it emitted a
// bundle event. Callers hold adminMu.
func (a *Authority) renewSigningCert(ctx context.Context) (bool, error) {
	before := a.signing.Load()
	replaced, err := a.loadSigningCert(ctx, true)
	if err != nil {
		return false, err
	}
	if a.signing.Load() == before {
		return false, nil
	}
	if err := a.bumpBundle(ctx); err != nil {
		return false, err
	}
	active := a.cas.Load().active[""]
	if replaced != nil && before != nil && active != nil && before.issuerID != active.ID {
		if _, err := a.revokeSerials(ctx, []string{serialOf(replaced)}, reasonSuperseded, false); err != nil {
			return true, err
		}
	}
	return true, nil
}

// signEvent encodes one signed watch line.
func (a *Authority) signEvent(seq int64, kind string, payload []byte) []byte {
	line, _ := json.Marshal(wireEvent{Seq: seq, Kind: kind, Payload: payload, Sig: ed25519.Sign(a.signingKey, payload)})
	return append(line, '\n')
}

// wireEvent is one line of the watch stream.
type wireEvent struct {
	Seq     int64  `json:"seq"`
	Kind    string `json:"kind"`
	Payload []byte `json:"payload,omitempty"` // base64 of the JSON payload
	Sig     []byte `json:"sig,omitempty"`     // base64 Ed25519 signature over Payload
}

// withVersion adds "version": seq to a stored JSON object payload: what a
// watcher receives and the signature covers.
func withVersion(stored []byte, seq int64) ([]byte, error) {
	m := map[string]json.RawMessage{}
	if err := json.Unmarshal(stored, &m); err != nil {
		return nil, err
	}
	v, _ := json.Marshal(seq)
	m["version"] = v
	return json.Marshal(m)
}
