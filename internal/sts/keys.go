package sts

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"

	"github.com/wardsec/ward/internal/store"
)

// Token signature algorithms.
const (
	AlgEdDSA = string(jose.EdDSA)
	AlgES256 = string(jose.ES256)
)

// signingKey is an unsealed key of the ring.
type signingKey struct {
	id    string
	alg   string
	state string
	priv  crypto.Signer
	pub   crypto.PublicKey
}

// keyRing is the current set of keys: the active one per algorithm signs,
// every published one (next, active, retiring) verifies.
type keyRing struct {
	active    map[string]*signingKey // by alg
	published map[string]*signingKey // by kid
	jwks      []byte
}

func aad(kid string) []byte { return []byte("sts-key:" + kid) }

// loadKeys unseals the published keys, creating and activating one key per
// algorithm that has none.
func (s *Service) loadKeys(ctx context.Context) error {
	stored, err := s.st.ListSigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("sts: load signing keys: %w", err)
	}
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		has := false
		for _, k := range stored {
			has = has || (k.Alg == alg && k.State == store.KeyStateActive)
		}
		if has {
			continue
		}
		k, err := s.newKey(ctx, alg)
		if err != nil {
			return err
		}
		if err := s.st.SetSigningKeyState(ctx, k.ID, store.KeyStateActive, s.now()); err != nil {
			return fmt.Errorf("sts: activate signing key: %w", err)
		}
		k.State = store.KeyStateActive
		stored = append(stored, k)
	}
	ring := &keyRing{active: map[string]*signingKey{}, published: map[string]*signingKey{}}
	set := jose.JSONWebKeySet{}
	for _, k := range stored {
		if k.State == store.KeyStateRetired {
			continue
		}
		der, err := s.cfg.KMS.Decrypt(ctx, k.KeyCiphertext, aad(k.ID))
		if err != nil {
			return fmt.Errorf("sts: unseal signing key %s: %w", k.ID, err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return fmt.Errorf("sts: signing key %s: %w", k.ID, err)
		}
		signer, ok := priv.(crypto.Signer)
		if !ok {
			return fmt.Errorf("sts: signing key %s is %T", k.ID, priv)
		}
		sk := &signingKey{id: k.ID, alg: k.Alg, state: k.State, priv: signer, pub: signer.Public()}
		ring.published[k.ID] = sk
		if k.State == store.KeyStateActive {
			if cur := ring.active[k.Alg]; cur == nil {
				ring.active[k.Alg] = sk
			}
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: sk.pub, KeyID: k.ID, Algorithm: k.Alg, Use: "sig"})
	}
	if ring.jwks, err = json.Marshal(set); err != nil {
		return fmt.Errorf("sts: encode JWKS: %w", err)
	}
	s.keys.Store(ring)
	return nil
}

// newKey generates, seals and stores a key in state next.
func (s *Service) newKey(ctx context.Context, alg string) (store.SigningKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case AlgEdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case AlgES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return store.SigningKey{}, fmt.Errorf("sts: unsupported algorithm %q", alg)
	}
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("sts: generate %s key: %w", alg, err)
	}
	jwk := jose.JSONWebKey{Key: priv.Public(), Algorithm: alg, Use: "sig"}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("sts: thumbprint: %w", err)
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	pubJWK, err := jwk.MarshalJSON()
	if err != nil {
		return store.SigningKey{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return store.SigningKey{}, err
	}
	sealed, err := s.cfg.KMS.Encrypt(ctx, der, aad(jwk.KeyID))
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("sts: seal signing key: %w", err)
	}
	k := store.SigningKey{ID: jwk.KeyID, Alg: alg, KeyCiphertext: sealed, PublicJWK: pubJWK, State: store.KeyStateNext, CreatedAt: s.now().UTC()}
	if err := s.st.PutSigningKey(ctx, k); err != nil {
		return store.SigningKey{}, fmt.Errorf("sts: store signing key: %w", err)
	}
	return k, nil
}

// JWKS is the published key set (RFC 7517).
func (s *Service) JWKS() []byte { return s.keys.Load().jwks }

var errNoKey = errors.New("sts: no active signing key")
