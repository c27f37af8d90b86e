package gateway

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/wardsec/ward/passport"
)

// errNoPassportKey: no registered passport key can sign right now.
var errNoPassportKey = errors.New("gateway: no registered passport key")

// passportKey is a signing key registered with the authority.
type passportKey struct {
	signer   *passport.Signer
	notAfter time.Time // as registered: verifiers drop the key after it
}

// keyManager owns the gateway's passport signing keys: a fresh Ed25519 key
// per period, registered with the authority (which publishes it at
// /v1/passport/keys and on the watch stream) before it signs anything,
// and kept published until after the last passport it signed expired.
// Keys never leave the process.
type keyManager struct {
	hc           *http.Client
	authorityURL string
	lifetime     time.Duration // registered validity of a key
	rotateEvery  time.Duration // a new key after this long
	propagation  time.Duration // wait between registering a key and signing with it
	log          *slog.Logger
	now          func() time.Time

	cur atomic.Pointer[passportKey]
}

// current returns the key to sign with, or errNoPassportKey when none is
// registered and valid for a full passport lifetime.
func (m *keyManager) current(ttl time.Duration) (*passportKey, error) {
	k := m.cur.Load()
	if k == nil || !m.now().Add(ttl).Before(k.notAfter) {
		return nil, errNoPassportKey
	}
	return k, nil
}

// rotate makes and registers a new key and, after the propagation delay,
// signs with it.
func (m *keyManager) rotate(ctx context.Context) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("gateway: passport key: %w", err)
	}
	s, err := passport.NewSigner(priv)
	if err != nil {
		return fmt.Errorf("gateway: passport key: %w", err)
	}
	k := &passportKey{signer: s, notAfter: m.now().Add(m.lifetime).Truncate(time.Second)}
	if err := m.register(ctx, k); err != nil {
		return err
	}
	if m.cur.Load() != nil && m.propagation > 0 {
		// Verifiers learn the key from the watch stream within a second;
		// the previous key stays valid meanwhile.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(m.propagation):
		}
	}
	m.cur.Store(k)
	m.log.Info("passport signing key in use", "kid", s.KeyID(), "not_after", k.notAfter)
	return nil
}

// register publishes k with the authority (POST /v1/passport/keys, mTLS
// as spiffe://<td>/ward/gateway).
func (m *keyManager) register(ctx context.Context, k *passportKey) error {
	body, err := json.Marshal(struct {
		JWK      jose.JSONWebKey `json:"jwk"`
		NotAfter time.Time       `json:"not_after"`
	}{k.signer.PublicJWK(), k.notAfter.UTC()})
	if err != nil {
		return fmt.Errorf("gateway: passport key: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.authorityURL+"/v1/passport/keys", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.hc.Do(req)
	if err != nil {
		return fmt.Errorf("gateway: register passport key: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("gateway: register passport key: authority answered %d: %s", resp.StatusCode, clip(string(msg)))
	}
	return nil
}

// run rotates keys every rotateEvery until ctx ends (the first key is
// made by the caller); a failed rotation is retried with backoff while the
// current key stays in use.
func (m *keyManager) run(ctx context.Context) {
	backoff := time.Second
	wait := m.rotateEvery
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := m.rotate(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Warn("passport key rotation failed; retrying", "error", err, "retry_in", backoff)
			wait, backoff = backoff, min(backoff*2, time.Minute)
			continue
		}
		wait, backoff = m.rotateEvery, time.Second
	}
}
