// Package kms seals secrets at rest: CA private keys and the control-plane
// signing key are stored only as ciphertext produced by a KMS.
//
// The Local implementation encrypts with AES-256-GCM under a 32-byte key
// encryption key (KEK) kept in a file readable by its owner only:
//
//	kek, err := kms.LoadKEKFile("/etc/ward/kek")
//	if err != nil { ... }
//	k, err := kms.NewLocal(kek)
//	if err != nil { ... }
//	sealed, err := k.Encrypt(ctx, keyDER, []byte("ca:"+caID))
//	...
//	keyDER, err = k.Decrypt(ctx, sealed, []byte("ca:"+caID))
//
// The additional authenticated data (aad) binds a ciphertext to its context,
// so a sealed key cannot be moved to another row and still decrypt.
// A cloud KMS or an HSM can implement the KMS interface later; the shared
// contract tests live in package kmstest.
package kms

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// KMS seals secrets at rest (CA keys, signing keys). A cloud KMS or HSM can
// implement it later.
type KMS interface {
	// Encrypt seals plaintext and binds it to aad.
	Encrypt(ctx context.Context, plaintext, aad []byte) ([]byte, error)
	// Decrypt opens a ciphertext produced by Encrypt with the same aad.
	// Any failure to authenticate returns an error wrapping ErrDecrypt.
	Decrypt(ctx context.Context, ciphertext, aad []byte) ([]byte, error)
}

// ErrDecrypt reports a ciphertext that does not authenticate: wrong key,
// wrong aad, tampered or truncated bytes, or an unknown format version.
var ErrDecrypt = errors.New("kms: decryption failed")

// ErrKEKSize reports a key encryption key that is not 32 bytes.
var ErrKEKSize = errors.New("kms: key encryption key must be 32 bytes")

const (
	// KEKSize is the size of a key encryption key (AES-256).
	KEKSize = 32

	// versionAESGCM is the first byte of every ciphertext sealed by Local:
	// version || nonce (12) || AES-256-GCM ciphertext and tag (16).
	versionAESGCM byte = 1
	nonceSize          = 12
	tagSize            = 16
	overhead           = 1 + nonceSize + tagSize
)

// Local is a KMS backed by a key encryption key held in memory.
// It is safe for concurrent use.
type Local struct {
	aead cipher.AEAD
}

var _ KMS = (*Local)(nil)

// NewLocal returns a KMS that seals with AES-256-GCM under kek, which must be
// 32 bytes. Each ciphertext has a fresh random 12-byte nonce and a version
// prefix. kek is not retained after the cipher is set up.
func NewLocal(kek []byte) (*Local, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("%w, got %d", ErrKEKSize, len(kek))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	return &Local{aead: aead}, nil
}

// Encrypt seals plaintext bound to aad. The result is
// version || nonce || ciphertext || tag.
func (l *Local) Encrypt(ctx context.Context, plaintext, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kms: encrypt: %w", err)
	}
	out := make([]byte, 1+nonceSize, overhead+len(plaintext))
	out[0] = versionAESGCM
	if _, err := rand.Read(out[1 : 1+nonceSize]); err != nil {
		return nil, fmt.Errorf("kms: nonce: %w", err)
	}
	return l.aead.Seal(out, out[1:1+nonceSize], plaintext, additionalData(out[0], aad)), nil
}

// Decrypt opens a ciphertext sealed by Encrypt with the same key and aad.
func (l *Local) Decrypt(ctx context.Context, ciphertext, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kms: decrypt: %w", err)
	}
	if len(ciphertext) < overhead {
		return nil, fmt.Errorf("%w: ciphertext too short", ErrDecrypt)
	}
	if ciphertext[0] != versionAESGCM {
		return nil, fmt.Errorf("%w: unknown version %d", ErrDecrypt, ciphertext[0])
	}
	nonce := ciphertext[1 : 1+nonceSize]
	plaintext, err := l.aead.Open(nil, nonce, ciphertext[1+nonceSize:], additionalData(ciphertext[0], aad))
	if err != nil {
		// Deliberately no detail: which of key, aad or bytes is wrong is unknowable.
		return nil, ErrDecrypt
	}
	return plaintext, nil
}

// additionalData authenticates the version byte along with the caller's aad,
// so a ciphertext cannot be reinterpreted under another format version.
func additionalData(version byte, aad []byte) []byte {
	ad := make([]byte, 0, 1+len(aad))
	ad = append(ad, version)
	return append(ad, aad...)
}
