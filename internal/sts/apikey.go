package sts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"regexp"
	"strings"
	"time"

	"github.com/wardsec/ward/internal/store"
)

// API keys look like ward_<16 hex id>_<43 base64url secret>_<8 hex CRC32>:
// the prefix and checksum let secret scanners recognise (and validate)
// them, the ID finds the record, and only a SHA-256 of the whole key is
// stored.
const (
	apiKeyPrefix = "ward_"
	apiKeyIDLen  = 16
	apiKeyLen    = len(apiKeyPrefix) + apiKeyIDLen + 1 + 43 + 1 + 8
)

var apiKeyRE = regexp.MustCompile(`^ward_([0-9a-f]{16})_([A-Za-z0-9_-]{43})_([0-9a-f]{8})$`)

// ParseAPIKey checks the shape and checksum of an API key and returns its
// ID (as stored: "wk_" + the 16 hex characters), without any lookup.
func ParseAPIKey(key string) (string, error) {
	if len(key) != apiKeyLen {
		return "", fmt.Errorf("%w: not a ward API key", ErrInvalidCredential)
	}
	m := apiKeyRE.FindStringSubmatch(key)
	if m == nil {
		return "", fmt.Errorf("%w: not a ward API key", ErrInvalidCredential)
	}
	body := key[:len(key)-9]
	if fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(body))) != m[3] {
		return "", fmt.Errorf("%w: API key checksum mismatch", ErrInvalidCredential)
	}
	return "wk_" + m[1], nil
}

// APIKeySpec describes a new API key.
type APIKeySpec struct {
	Subject  string
	Tenant   string
	Scopes   []string
	TTL      time.Duration // 0: until revoked
	Metadata map[string]string
}

var labelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$`)

// CreateAPIKey stores a new key and returns it; the key is never stored.
func (s *Service) CreateAPIKey(ctx context.Context, spec APIKeySpec) (store.APIKey, string, error) {
	if !labelRE.MatchString(spec.Subject) {
		return store.APIKey{}, "", fmt.Errorf("%w: subject %q: want 1–128 letters, digits and . _ : @ / -", ErrInvalidSpec, clip(spec.Subject))
	}
	if spec.Tenant != "" && !labelRE.MatchString(spec.Tenant) {
		return store.APIKey{}, "", fmt.Errorf("%w: tenant %q: want 1–128 letters, digits and . _ : @ / -", ErrInvalidSpec, clip(spec.Tenant))
	}
	scopes, err := checkScopes(spec.Scopes)
	if err != nil {
		return store.APIKey{}, "", err
	}
	if spec.TTL < 0 || spec.TTL > 5*366*24*time.Hour {
		return store.APIKey{}, "", fmt.Errorf("%w: ttl must be positive and at most five years", ErrInvalidSpec)
	}
	if len(spec.Metadata) > 32 {
		return store.APIKey{}, "", fmt.Errorf("%w: at most 32 metadata entries", ErrInvalidSpec)
	}
	for k, v := range spec.Metadata {
		if !labelRE.MatchString(k) || len(v) > 256 {
			return store.APIKey{}, "", fmt.Errorf("%w: metadata %q: keys are labels, values at most 256 bytes", ErrInvalidSpec, clip(k))
		}
	}
	var idb [8]byte
	var secret [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return store.APIKey{}, "", err
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return store.APIKey{}, "", err
	}
	id := hex.EncodeToString(idb[:])
	body := apiKeyPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(secret[:])
	key := body + "_" + fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(body)))
	sum := sha256.Sum256([]byte(key))
	now := s.now().UTC()
	k := store.APIKey{ID: "wk_" + id, Hash: sum[:], Subject: spec.Subject, Tenant: spec.Tenant, Scopes: scopes, Metadata: spec.Metadata, CreatedAt: now}
	if spec.TTL > 0 {
		exp := now.Add(spec.TTL)
		k.ExpiresAt = &exp
	}
	if err := s.st.CreateAPIKey(ctx, k); err != nil {
		return store.APIKey{}, "", fmt.Errorf("sts: create API key: %w", err)
	}
	return k, key, nil
}

// VerifyAPIKey returns the record of a valid, unexpired, unrevoked key.
func (s *Service) VerifyAPIKey(ctx context.Context, key string) (store.APIKey, error) {
	id, err := ParseAPIKey(key)
	if err != nil {
		return store.APIKey{}, err
	}
	k, err := s.st.GetAPIKey(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.APIKey{}, fmt.Errorf("%w: unknown API key", ErrInvalidCredential)
	}
	if err != nil {
		return store.APIKey{}, fmt.Errorf("sts: API key lookup: %w", err)
	}
	sum := sha256.Sum256([]byte(key))
	switch {
	case !sameHash(k.Hash, sum[:]):
		return store.APIKey{}, fmt.Errorf("%w: unknown API key", ErrInvalidCredential)
	case k.RevokedAt != nil:
		return store.APIKey{}, fmt.Errorf("%w: API key revoked", ErrInvalidCredential)
	case k.ExpiresAt != nil && !k.ExpiresAt.After(s.now()):
		return store.APIKey{}, fmt.Errorf("%w: API key expired", ErrInvalidCredential)
	}
	return k, nil
}

// RevokeAPIKey revokes a key; ErrNotFound (wrapped) if it does not exist.
func (s *Service) RevokeAPIKey(ctx context.Context, id string) error {
	if !strings.HasPrefix(id, "wk_") || len(id) != 3+apiKeyIDLen {
		return fmt.Errorf("sts: API key %q: %w", clip(id), store.ErrNotFound)
	}
	now := s.now().UTC()
	if err := s.st.RevokeAPIKey(ctx, id, now); err != nil {
		return err
	}
	return s.notify(ctx, "apikey", id, now.Add(5*366*24*time.Hour))
}

// clip shortens untrusted text for messages.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
