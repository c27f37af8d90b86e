package sts

import (
	"context"
	"fmt"
	"time"

	"github.com/wardsec/ward/internal/store"
)

// Key rotation defaults.
const (
	defaultRotateEvery = 30 * 24 * time.Hour
	defaultPublishLead = time.Hour
)

// KeyView describes a signing key for operators.
type KeyView struct {
	ID          string     `json:"kid"`
	Alg         string     `json:"alg"`
	State       string     `json:"state"`
	CreatedAt   time.Time  `json:"created_at"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	RetiredAt   *time.Time `json:"retired_at,omitempty"`
}

// Keys lists the signing keys.
func (s *Service) Keys(ctx context.Context) ([]KeyView, error) {
	keys, err := s.st.ListSigningKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("sts: list signing keys: %w", err)
	}
	out := make([]KeyView, 0, len(keys))
	for _, k := range keys {
		out = append(out, KeyView{ID: k.ID, Alg: k.Alg, State: k.State, CreatedAt: k.CreatedAt.UTC(), ActivatedAt: k.ActivatedAt, RetiredAt: k.RetiredAt})
	}
	return out, nil
}

// RotateKeys advances the key schedule, per algorithm:
//   - with no key in state next, one is created: it is published in the
//     JWKS before it signs anything;
//   - a next key published for at least PublishLead replaces an active key
//     older than RotateEvery (the old one becomes retiring: still
//     published, no longer signing); force replaces it at once, creating
//     the next key first if there is none;
//   - a retiring key is retired (unpublished) once every token it signed
//     has expired (24 h, the longest token lifetime, after it stopped
//     signing).
//
// It reports whether anything changed (then other replicas must Reload).
func (s *Service) RotateKeys(ctx context.Context, force bool) (bool, error) {
	keys, err := s.st.ListSigningKeys(ctx)
	if err != nil {
		return false, fmt.Errorf("sts: list signing keys: %w", err)
	}
	now := s.now().UTC()
	changed := false
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		var active, next *store.SigningKey
		for i := range keys {
			k := &keys[i]
			if k.Alg != alg {
				continue
			}
			switch k.State {
			case store.KeyStateActive:
				if active == nil || (k.ActivatedAt != nil && active.ActivatedAt != nil && k.ActivatedAt.After(*active.ActivatedAt)) {
					active = k
				}
			case store.KeyStateNext:
				next = k
			case store.KeyStateRetiring:
				if k.RetiredAt != nil && now.Sub(*k.RetiredAt) > maxTTL {
					if err := s.st.SetSigningKeyState(ctx, k.ID, store.KeyStateRetired, now); err != nil {
						return changed, fmt.Errorf("sts: retire key %s: %w", k.ID, err)
					}
					s.log.Info("token signing key retired", "kid", k.ID, "alg", alg)
					changed = true
				}
			}
		}
		if next == nil {
			k, err := s.newKey(ctx, alg)
			if err != nil {
				return changed, err
			}
			next, changed = &k, true
			s.log.Info("token signing key published", "kid", k.ID, "alg", alg)
		}
		due := active == nil || active.ActivatedAt == nil || now.Sub(*active.ActivatedAt) >= s.rotateEvery()
		published := now.Sub(next.CreatedAt) >= s.publishLead()
		if !force && !(due && published) {
			continue
		}
		if err := s.st.SetSigningKeyState(ctx, next.ID, store.KeyStateActive, now); err != nil {
			return changed, fmt.Errorf("sts: activate key %s: %w", next.ID, err)
		}
		if active != nil {
			if err := s.st.SetSigningKeyState(ctx, active.ID, store.KeyStateRetiring, now); err != nil {
				return true, fmt.Errorf("sts: retire key %s: %w", active.ID, err)
			}
		}
		s.log.Info("token signing key rotated", "alg", alg, "kid", next.ID, "forced", force)
		changed = true
	}
	if changed {
		if err := s.loadKeys(ctx); err != nil {
			return true, err
		}
	}
	return changed, nil
}

// Reload reloads the keys after another replica changed them.
func (s *Service) Reload(ctx context.Context) error { return s.loadKeys(ctx) }

func (s *Service) rotateEvery() time.Duration {
	if s.cfg.RotateEvery > 0 {
		return s.cfg.RotateEvery
	}
	return defaultRotateEvery
}

func (s *Service) publishLead() time.Duration {
	if s.cfg.PublishLead > 0 {
		return s.cfg.PublishLead
	}
	return defaultPublishLead
}
