// Package vault is ward's PII vault (seed 003): the one component that
// holds real card numbers, national IDs, e-mail addresses and passport
// numbers; every other service holds tokens. Each value is encrypted with
// AES-256-GCM under its own data key; data keys are wrapped by a
// versioned key-encryption key, itself sealed by ward's KMS. Values can
// name a data subject: erasing the subject destroys the data keys of all
// its values at once (crypto-shredding), and export returns them.
//
// The vault is an L3 service protected by the SDK like any other (mTLS,
// access list, passport, policy); see Server.
package vault

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wardsec/ward/internal/kms"
)

// Limits.
const (
	// MaxBatch bounds the values or tokens of one request.
	MaxBatch = 1000
	// MaxSubject bounds a data subject ID.
	MaxSubject = 128
	// MaxTTL bounds a token's lifetime.
	MaxTTL = 366 * 24 * time.Hour
)

// More errors callers branch on.
var (
	ErrNotFound   = errors.New("vault: unknown, expired, deleted or erased token")
	ErrTooMany    = errors.New("vault: batch too large")
	ErrUnreadable = errors.New("vault: the value cannot be decrypted")
)

// Config configures Open.
type Config struct {
	// DB is a SQLite file path or a postgres:// URL. Required.
	DB string
	// KMS seals the vault's key-encryption keys. Required.
	KMS kms.KMS
	// Deterministic lists the types whose equal values get equal tokens
	// (through a keyed HMAC index, never the raw value).
	Deterministic []string
	// KeepEmailDomain makes e-mail tokens keep the address's domain
	// (tok_…@example.com).
	KeepEmailDomain bool
	Logger          *slog.Logger
	Now             func() time.Time
}

// Vault tokenizes and reveals values. It is safe for concurrent use.
type Vault struct {
	cfg  Config
	st   *store
	log  *slog.Logger
	now  func() time.Time
	det  map[string]bool
	idx  []byte // HMAC key of the deterministic index
	keys atomic.Pointer[keyring]

	rotMu sync.Mutex // one rotation at a time
}

// keyring is the unsealed key-encryption keys by version.
type keyring struct {
	active int64
	aeads  map[int64]cipher.AEAD
}

// Open opens the vault's database, creating its first key-encryption key
// and index key on first use.
func Open(ctx context.Context, cfg Config) (*Vault, error) {
	if cfg.DB == "" || cfg.KMS == nil {
		return nil, errors.New("vault: Config.DB and Config.KMS are required")
	}
	v := &Vault{cfg: cfg, log: cfg.Logger, now: cfg.Now, det: map[string]bool{}}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if v.now == nil {
		v.now = time.Now
	}
	for _, t := range cfg.Deterministic {
		if !KnownType(t) {
			return nil, fmt.Errorf("vault: deterministic type %q: %w", t, ErrUnknownType)
		}
		v.det[t] = true
	}
	st, err := openStore(ctx, cfg.DB)
	if err != nil {
		return nil, err
	}
	v.st = st
	if err := v.loadKeys(ctx); err != nil {
		st.close()
		return nil, err
	}
	return v, nil
}

// Close closes the database.
func (v *Vault) Close() error { return v.st.close() }

func kekAAD(version int64) []byte { return []byte(fmt.Sprintf("ward-vault-kek:%d", version)) }

// loadKeys unseals every live key-encryption key (creating version 1 on
// first use) and the index key.
func (v *Vault) loadKeys(ctx context.Context) error {
	sealed, err := v.st.keks(ctx)
	if err != nil {
		return fmt.Errorf("vault: keys: %w", err)
	}
	if len(sealed) == 0 {
		if _, err := v.newKEK(ctx, 1); err != nil {
			return err
		}
		if sealed, err = v.st.keks(ctx); err != nil {
			return fmt.Errorf("vault: keys: %w", err)
		}
	}
	kr := &keyring{aeads: map[int64]cipher.AEAD{}}
	for ver, s := range sealed {
		raw, err := v.cfg.KMS.Decrypt(ctx, s, kekAAD(ver))
		if err != nil {
			return fmt.Errorf("vault: key-encryption key %d: %w", ver, err)
		}
		a, err := newAEAD(raw)
		if err != nil {
			return err
		}
		kr.aeads[ver] = a
		kr.active = max(kr.active, ver)
	}
	v.keys.Store(kr)
	// The index key: sealed in vault_meta.
	idx, err := v.st.meta(ctx, "index-key")
	if errors.Is(err, sql.ErrNoRows) {
		raw := make([]byte, 32)
		_, _ = rand.Read(raw)
		s, err := v.cfg.KMS.Encrypt(ctx, raw, []byte("ward-vault-index-key"))
		if err != nil {
			return fmt.Errorf("vault: index key: %w", err)
		}
		if err := v.st.setMeta(ctx, "index-key", s); err != nil {
			return fmt.Errorf("vault: index key: %w", err)
		}
		idx, err = v.st.meta(ctx, "index-key")
		if err != nil {
			return fmt.Errorf("vault: index key: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("vault: index key: %w", err)
	}
	if v.idx, err = v.cfg.KMS.Decrypt(ctx, idx, []byte("ward-vault-index-key")); err != nil {
		return fmt.Errorf("vault: index key: %w", err)
	}
	return nil
}

// newKEK creates and stores key-encryption key version ver.
func (v *Vault) newKEK(ctx context.Context, ver int64) (cipher.AEAD, error) {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	s, err := v.cfg.KMS.Encrypt(ctx, raw, kekAAD(ver))
	if err != nil {
		return nil, fmt.Errorf("vault: seal key-encryption key: %w", err)
	}
	if err := v.st.addKEK(ctx, ver, s, v.now()); err != nil {
		return nil, fmt.Errorf("vault: store key-encryption key: %w", err)
	}
	return newAEAD(raw)
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	return cipher.NewGCM(b)
}

// seal encrypts value under a fresh data key bound to (token, type,
// subject), and wraps the data key under the active key-encryption key.
func (v *Vault) seal(token, typ, subject, value string) (ct, wdek []byte, ver int64, err error) {
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		return nil, nil, 0, err
	}
	a, err := newAEAD(dek)
	if err != nil {
		return nil, nil, 0, err
	}
	ct = sealWith(a, []byte(value), valueAAD(token, typ, subject))
	kr := v.keys.Load()
	wdek = sealWith(kr.aeads[kr.active], dek, dekAAD(token))
	clear(dek)
	return ct, wdek, kr.active, nil
}

func sealWith(a cipher.AEAD, plaintext, aad []byte) []byte {
	out := make([]byte, 12, 12+len(plaintext)+a.Overhead())
	_, _ = rand.Read(out)
	return a.Seal(out, out[:12], plaintext, aad)
}

func openWith(a cipher.AEAD, ct, aad []byte) ([]byte, error) {
	if len(ct) < 12+a.Overhead() {
		return nil, ErrUnreadable
	}
	pt, err := a.Open(nil, ct[:12], ct[12:], aad)
	if err != nil {
		return nil, ErrUnreadable
	}
	return pt, nil
}

func valueAAD(token, typ, subject string) []byte {
	return []byte("ward-vault-value\x00" + token + "\x00" + typ + "\x00" + subject)
}
func dekAAD(token string) []byte { return []byte("ward-vault-dek\x00" + token) }

// unwrap returns a record's data key.
func (v *Vault) unwrap(r record) ([]byte, error) {
	a, ok := v.keys.Load().aeads[r.KEK]
	if !ok {
		return nil, fmt.Errorf("%w: key-encryption key version %d is not available", ErrUnreadable, r.KEK)
	}
	return openWith(a, r.WDEK, dekAAD(r.Token))
}

// open decrypts a record's value.
func (v *Vault) open(r record) (string, error) {
	dek, err := v.unwrap(r)
	if err != nil {
		return "", err
	}
	a, err := newAEAD(dek)
	clear(dek)
	if err != nil {
		return "", err
	}
	pt, err := openWith(a, r.CT, valueAAD(r.Token, r.Type, r.Subject))
	if err != nil {
		return "", err
	}
	return string(pt), nil
}

// index is the deterministic index of a normalized value: HMAC-SHA256
// under the vault's index key, never the value.
func (v *Vault) index(typ, value string) string {
	m := hmac.New(sha256.New, v.idx)
	m.Write([]byte(typ))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil))
}

// Item is one value to tokenize.
type Item struct {
	Value   string `json:"value"`
	Subject string `json:"subject,omitempty"`
}

// Tokenize stores values of typ and returns their tokens, in order. A
// deterministic type returns the existing token of a value stored
// before. ttl > 0 makes the tokens expire.
func (v *Vault) Tokenize(ctx context.Context, typ string, items []Item, ttl time.Duration) ([]string, error) {
	if !KnownType(typ) {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, clip(typ))
	}
	if len(items) == 0 || len(items) > MaxBatch {
		return nil, fmt.Errorf("%w: 1 to %d values per request", ErrTooMany, MaxBatch)
	}
	if ttl < 0 || ttl > MaxTTL {
		return nil, fmt.Errorf("%w: ttl beyond %s", ErrInvalidValue, MaxTTL)
	}
	now := v.now().UTC()
	var exp *time.Time
	if ttl > 0 {
		e := now.Add(ttl)
		exp = &e
	}
	recs := make([]record, len(items))
	out := make([]string, len(items))
	for i, it := range items {
		if len(it.Subject) > MaxSubject {
			return nil, fmt.Errorf("%w: item %d: subject longer than %d bytes", ErrInvalidValue, i, MaxSubject)
		}
		norm, err := Normalize(typ, it.Value)
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", i, err)
		}
		tok, err := newToken(typ, norm, v.cfg.KeepEmailDomain)
		if err != nil {
			return nil, err
		}
		ct, wdek, ver, err := v.seal(tok, typ, it.Subject, norm)
		if err != nil {
			return nil, err
		}
		r := record{Token: tok, Type: typ, Subject: it.Subject, CT: ct, WDEK: wdek, KEK: ver, CreatedAt: now, ExpiresAt: exp}
		if v.det[typ] {
			r.Det = sql.NullString{String: v.index(typ, norm+"\x00"+it.Subject), Valid: true}
		}
		recs[i], out[i] = r, tok
	}
	existing, err := v.st.insert(ctx, recs)
	if err != nil {
		return nil, fmt.Errorf("vault: store: %w", err)
	}
	for i := range existing {
		r, err := v.st.byDet(ctx, typ, recs[i].Det.String)
		if err != nil {
			return nil, fmt.Errorf("vault: deterministic token: %w", err)
		}
		out[i] = r.Token
	}
	return out, nil
}

// Revealed is one detokenized value; Error is set instead when the token
// is unknown, expired, deleted or erased.
type Revealed struct {
	Token   string `json:"token"`
	Value   string `json:"value,omitempty"`
	Subject string `json:"subject,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Detokenize reveals tokens of typ, in order.
func (v *Vault) Detokenize(ctx context.Context, typ string, tokens []string) ([]Revealed, error) {
	if !KnownType(typ) {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, clip(typ))
	}
	if len(tokens) == 0 || len(tokens) > MaxBatch {
		return nil, fmt.Errorf("%w: 1 to %d tokens per request", ErrTooMany, MaxBatch)
	}
	for i, t := range tokens {
		if err := ParseToken(typ, t); err != nil {
			return nil, fmt.Errorf("token %d: %w", i, err)
		}
	}
	recs, err := v.st.get(ctx, typ, tokens)
	if err != nil {
		return nil, fmt.Errorf("vault: read: %w", err)
	}
	now := v.now()
	out := make([]Revealed, len(tokens))
	for i, t := range tokens {
		out[i].Token = t
		r, ok := recs[t]
		switch {
		case !ok || r.ErasedAt != nil || (r.ExpiresAt != nil && !now.Before(*r.ExpiresAt)):
			out[i].Error = "not-found"
			continue
		}
		val, err := v.open(r)
		if err != nil {
			v.log.Error("vault: a stored value does not decrypt", "token_fp", Fingerprint(t), "kek", r.KEK, "error", err)
			out[i].Error = "unreadable"
			continue
		}
		out[i].Value, out[i].Subject = val, r.Subject
	}
	return out, nil
}

// Metadata is what the vault tells about a token without its value.
type Metadata struct {
	Token         string     `json:"token"`
	Type          string     `json:"type"`
	Subject       string     `json:"subject,omitempty"`
	Deterministic bool       `json:"deterministic"`
	CreatedAt     time.Time  `json:"created_at"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	KEKVersion    int64      `json:"kek_version"`
}

// Metadata returns a live token's metadata.
func (v *Vault) Metadata(ctx context.Context, typ, token string) (Metadata, error) {
	if err := ParseToken(typ, token); err != nil {
		return Metadata{}, err
	}
	recs, err := v.st.get(ctx, typ, []string{token})
	if err != nil {
		return Metadata{}, fmt.Errorf("vault: read: %w", err)
	}
	r, ok := recs[token]
	if !ok || r.ErasedAt != nil || (r.ExpiresAt != nil && !v.now().Before(*r.ExpiresAt)) {
		return Metadata{}, ErrNotFound
	}
	return Metadata{Token: r.Token, Type: r.Type, Subject: r.Subject, Deterministic: r.Det.Valid, CreatedAt: r.CreatedAt,
		ExpiresAt: r.ExpiresAt, KEKVersion: r.KEK}, nil
}

// Delete removes a token and its value.
func (v *Vault) Delete(ctx context.Context, typ, token string) error {
	if err := ParseToken(typ, token); err != nil {
		return err
	}
	ok, err := v.st.delete(ctx, typ, token)
	if err != nil {
		return fmt.Errorf("vault: delete: %w", err)
	}
	if !ok {
		return ErrNotFound
	}
	return nil
}

// Erase crypto-shreds a subject's values of typ: their data keys and
// ciphertexts are overwritten, so no key version can reveal them again.
func (v *Vault) Erase(ctx context.Context, typ, subject string) (int64, error) {
	if !KnownType(typ) {
		return 0, fmt.Errorf("%w %q", ErrUnknownType, clip(typ))
	}
	if subject == "" || len(subject) > MaxSubject {
		return 0, fmt.Errorf("%w: subject is 1 to %d bytes", ErrInvalidValue, MaxSubject)
	}
	n, err := v.st.erase(ctx, typ, subject, v.now())
	if err != nil {
		return n, fmt.Errorf("vault: erase: %w", err)
	}
	return n, nil
}

// Export returns a subject's values of typ (at most MaxBatch).
func (v *Vault) Export(ctx context.Context, typ, subject string) ([]Revealed, error) {
	if !KnownType(typ) {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, clip(typ))
	}
	if subject == "" || len(subject) > MaxSubject {
		return nil, fmt.Errorf("%w: subject is 1 to %d bytes", ErrInvalidValue, MaxSubject)
	}
	recs, err := v.st.bySubject(ctx, typ, subject, MaxBatch)
	if err != nil {
		return nil, fmt.Errorf("vault: read: %w", err)
	}
	now := v.now()
	out := make([]Revealed, 0, len(recs))
	for _, r := range recs {
		if r.ExpiresAt != nil && !now.Before(*r.ExpiresAt) {
			continue
		}
		val, err := v.open(r)
		if err != nil {
			out = append(out, Revealed{Token: r.Token, Subject: subject, Error: "unreadable"})
			continue
		}
		out = append(out, Revealed{Token: r.Token, Value: val, Subject: subject})
	}
	return out, nil
}

// Rotate creates a new key-encryption key version, makes it active, and
// re-wraps every data key under it in the background of the caller
// (batches of 500; requests go on meanwhile); then it retires and
// destroys the old versions. Old versions decrypt until retired.
func (v *Vault) Rotate(ctx context.Context) (int64, error) {
	v.rotMu.Lock()
	defer v.rotMu.Unlock()
	kr := v.keys.Load()
	next := kr.active + 1
	a, err := v.newKEK(ctx, next)
	if err != nil {
		return 0, err
	}
	nk := &keyring{active: next, aeads: map[int64]cipher.AEAD{next: a}}
	for ver, x := range kr.aeads {
		nk.aeads[ver] = x
	}
	v.keys.Store(nk)
	v.log.Info("vault: key-encryption key rotated; re-wrapping data keys", "version", next)
	for ver := range kr.aeads {
		for {
			recs, err := v.st.wrappedUnder(ctx, ver, 500)
			if err != nil {
				return next, fmt.Errorf("vault: rotation: %w", err)
			}
			if len(recs) == 0 {
				break
			}
			for i := range recs {
				dek, err := v.unwrap(recs[i])
				if err != nil {
					return next, fmt.Errorf("vault: rotation: token %s: %w", Fingerprint(recs[i].Token), err)
				}
				recs[i].WDEK, recs[i].KEK = sealWith(a, dek, dekAAD(recs[i].Token)), next
				clear(dek)
			}
			if err := v.st.rewrap(ctx, recs, ver); err != nil {
				return next, fmt.Errorf("vault: rotation: %w", err)
			}
		}
		retired, err := v.st.retireKEK(ctx, ver, v.now())
		if err != nil {
			return next, fmt.Errorf("vault: rotation: %w", err)
		}
		if retired {
			cur := v.keys.Load()
			nk := &keyring{active: cur.active, aeads: map[int64]cipher.AEAD{}}
			for x, aead := range cur.aeads {
				if x != ver {
					nk.aeads[x] = aead
				}
			}
			v.keys.Store(nk)
			v.log.Info("vault: key-encryption key retired", "version", ver)
		}
	}
	return next, nil
}

// KEKVersions returns the live key-encryption key versions and the
// active one.
func (v *Vault) KEKVersions() (active int64, live []int64) {
	kr := v.keys.Load()
	for ver := range kr.aeads {
		live = append(live, ver)
	}
	return kr.active, live
}

// Counts returns the live tokens per type.
func (v *Vault) Counts(ctx context.Context) (map[string]int64, error) { return v.st.counts(ctx) }

// Fingerprint is what logs and audit events carry instead of a token:
// the first 16 hex digits of its SHA-256.
func Fingerprint(token string) string {
	s := sha256.Sum256([]byte(token))
	var b [8]byte
	copy(b[:], s[:8])
	return fmt.Sprintf("%016x", binary.BigEndian.Uint64(b[:]))
}
