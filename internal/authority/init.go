package authority

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/internal/store"
)

// Keys of the store's meta table.
const (
	metaTrustDomain     = "trust_domain"     // the trust domain name; written last by Init
	metaSigningKey      = "signing_key"      // control-plane Ed25519 key, PKCS#8 sealed with aad "signing-key"
	metaSigningCert     = "signing_cert"     // PEM chain certifying the signing key (leaf + intermediate)
	metaBundleVersion   = "bundle_version"   // decimal, bumped on every trust bundle change
	metaRootTTL         = "root_ttl"         // decimal nanoseconds, lifetime of new roots
	metaIntermediateTTL = "intermediate_ttl" // decimal nanoseconds, lifetime of new intermediates
)

// aadSigningKey binds the sealed signing key to its meta row.
var aadSigningKey = []byte("signing-key")

// aadCA binds a sealed CA key to its CA row.
func aadCA(id string) []byte { return []byte("ca:" + id) }

const (
	defaultRootTTL         = 10 * 365 * 24 * time.Hour
	defaultIntermediateTTL = 365 * 24 * time.Hour
	defaultTrustDomain     = "ward.test"
	bootstrapAdminName     = "bootstrap"
)

// InitOptions configures Init.
type InitOptions struct {
	// TrustDomain of the deployment; zero means ward.test.
	TrustDomain spiffeid.TrustDomain
	// RootTTL and IntermediateTTL are the lifetimes of roots and
	// intermediates, now and after rotations; zero means 10 years / 1 year.
	RootTTL, IntermediateTTL time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// InitResult is what Init created. AdminToken is shown to the operator once
// and never stored in clear.
type InitResult struct {
	TrustDomain     spiffeid.TrustDomain
	AdminToken      string
	RootFingerprint string // hex SHA-256 of the root certificate's DER
	RootPEM         []byte
}

// Init prepares an empty store: a root CA, the authority's default
// intermediate (Team ""), the control-plane Ed25519 signing key and a
// bootstrap admin token with role admin. Keys are sealed with k (aad
// "ca:<id>" and "signing-key"); only the token's SHA-256 is stored. The trust
// domain is written last, so a store on which Init failed midway is reported
// as not initialized (and refused by a second Init: start from an empty
// store). ErrAlreadyInitialized if the store holds a trust domain.
func Init(ctx context.Context, st *store.Store, k kms.KMS, opts InitOptions) (InitResult, error) {
	if st == nil || k == nil {
		return InitResult{}, errors.New("authority: Init needs a store and a KMS")
	}
	done, err := Initialized(ctx, st)
	if err != nil {
		return InitResult{}, err
	}
	if done {
		return InitResult{}, ErrAlreadyInitialized
	}
	existing, err := st.ListCAs(ctx)
	if err != nil {
		return InitResult{}, fmt.Errorf("authority: init: %w", err)
	}
	if len(existing) > 0 {
		return InitResult{}, errors.New("authority: init: the store holds CAs from an interrupted init; start from an empty store")
	}
	td := opts.TrustDomain
	if td.IsZero() {
		td = spiffeid.RequireTrustDomainFromString(defaultTrustDomain)
	}
	rootTTL, interTTL := opts.RootTTL, opts.IntermediateTTL
	if rootTTL == 0 {
		rootTTL = defaultRootTTL
	}
	if interTTL == 0 {
		interTTL = defaultIntermediateTTL
	}
	if rootTTL < 0 || interTTL < 0 {
		return InitResult{}, errors.New("authority: init: negative CA lifetime")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}

	t := now()
	root, err := ca.NewRoot(td, rootTTL, t)
	if err != nil {
		return InitResult{}, fmt.Errorf("authority: init: %w", err)
	}
	rootRec, err := saveCA(ctx, st, k, root, store.CAKindRoot, "", "", store.CAStateActive, t)
	if err != nil {
		return InitResult{}, err
	}
	inter, err := ca.NewIntermediate(root, td, "", interTTL, t)
	if err != nil {
		return InitResult{}, fmt.Errorf("authority: init: %w", err)
	}
	if _, err := saveCA(ctx, st, k, inter, store.CAKindIntermediate, "", rootRec.ID, store.CAStateActive, t); err != nil {
		return InitResult{}, err
	}

	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return InitResult{}, fmt.Errorf("authority: init: signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(sk)
	if err != nil {
		return InitResult{}, fmt.Errorf("authority: init: signing key: %w", err)
	}
	sealed, err := k.Encrypt(ctx, der, aadSigningKey)
	if err != nil {
		return InitResult{}, fmt.Errorf("authority: init: seal signing key: %w", err)
	}
	token, hash, err := newToken(adminTokenPrefix)
	if err != nil {
		return InitResult{}, err
	}
	id, err := randomHex(8)
	if err != nil {
		return InitResult{}, err
	}
	for _, kv := range []struct {
		key string
		val []byte
	}{
		{metaSigningKey, sealed},
		{metaBundleVersion, []byte("1")},
		{metaRootTTL, []byte(strconv.FormatInt(int64(rootTTL), 10))},
		{metaIntermediateTTL, []byte(strconv.FormatInt(int64(interTTL), 10))},
	} {
		if err := st.PutMeta(ctx, kv.key, kv.val); err != nil {
			return InitResult{}, fmt.Errorf("authority: init: %w", err)
		}
	}
	if err := st.CreateAdminToken(ctx, store.AdminToken{
		ID: "adm-" + id, Name: bootstrapAdminName, Hash: hash, Roles: []string{roleAdmin}, CreatedAt: t,
	}); err != nil {
		return InitResult{}, fmt.Errorf("authority: init: %w", err)
	}
	if err := st.PutMeta(ctx, metaTrustDomain, []byte(td.Name())); err != nil {
		return InitResult{}, fmt.Errorf("authority: init: %w", err)
	}
	return InitResult{
		TrustDomain:     td,
		AdminToken:      token,
		RootFingerprint: ca.Fingerprint(root.Cert),
		RootPEM:         ca.EncodeCertsPEM(root.Cert),
	}, nil
}

// Initialized reports whether Init has completed on st.
func Initialized(ctx context.Context, st *store.Store) (bool, error) {
	_, err := st.GetMeta(ctx, metaTrustDomain)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("authority: %w", err)
	}
}

// saveCA seals s's key and stores s as a new CA row.
func saveCA(ctx context.Context, st *store.Store, k kms.KMS, s *ca.Signer, kind, team, parentID, state string, now time.Time) (store.CA, error) {
	suffix, err := randomHex(4)
	if err != nil {
		return store.CA{}, err
	}
	id := "int-" + suffix
	switch {
	case kind == store.CAKindRoot:
		id = "root-" + suffix
	case team != "":
		id = "int-" + team + "-" + suffix
	}
	der, err := ca.MarshalKey(s.Key)
	if err != nil {
		return store.CA{}, fmt.Errorf("authority: %w", err)
	}
	sealed, err := k.Encrypt(ctx, der, aadCA(id))
	if err != nil {
		return store.CA{}, fmt.Errorf("authority: seal key of %s: %w", id, err)
	}
	rec := store.CA{
		ID:            id,
		Kind:          kind,
		Team:          team,
		ParentID:      parentID,
		CertDER:       s.Cert.Raw,
		KeyCiphertext: sealed,
		State:         state,
		CreatedAt:     now,
		NotAfter:      s.Cert.NotAfter,
	}
	if err := st.CreateCA(ctx, rec); err != nil {
		return store.CA{}, fmt.Errorf("authority: create CA %s: %w", id, err)
	}
	return rec, nil
}

// loadSigningKey unseals the control-plane signing key.
func loadSigningKey(ctx context.Context, st *store.Store, k kms.KMS) (ed25519.PrivateKey, error) {
	sealed, err := st.GetMeta(ctx, metaSigningKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotInitialized
	}
	if err != nil {
		return nil, fmt.Errorf("authority: load signing key: %w", err)
	}
	der, err := k.Decrypt(ctx, sealed, aadSigningKey)
	if err != nil {
		return nil, fmt.Errorf("authority: unseal signing key: %w", err)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("authority: parse signing key: %w", err)
	}
	sk, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("authority: signing key is %T, want Ed25519", key)
	}
	return sk, nil
}

// metaDuration reads a duration stored by Init, or def when absent.
func (a *Authority) metaDuration(ctx context.Context, key string, def time.Duration) (time.Duration, error) {
	raw, err := a.st.GetMeta(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return def, nil
	}
	if err != nil {
		return 0, fmt.Errorf("authority: meta %s: %w", key, err)
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("authority: meta %s: invalid duration %q", key, raw)
	}
	return time.Duration(n), nil
}
