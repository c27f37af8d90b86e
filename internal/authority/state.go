package authority

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/store"
)

// caEntry is one CA with its parsed certificate and unsealed key.
type caEntry struct {
	store.CA
	cert   *x509.Certificate
	signer *ca.Signer
	serial string // hex serial of the CA certificate
}

// caState is an immutable view of all CAs, replaced as a whole on reload.
type caState struct {
	list          []*caEntry // ordered by creation
	byID          map[string]*caEntry
	byRaw         map[string]*caEntry   // by certificate DER
	active        map[string]*caEntry   // issuing intermediate per team ("" = the authority's own)
	activeRoot    *caEntry              // nil only in a broken store
	children      map[string][]*caEntry // intermediates by parent ID
	roots         []*x509.Certificate   // the trust bundle: roots prepared, active or retiring
	bundle        *x509bundle.Bundle    // the same, for go-spiffe verification
	bundlePEM     []byte
	bundleVersion int64
}

// inBundle reports whether a root in state s is trusted.
func inBundle(state string) bool {
	return state == store.CAStatePrepared || state == store.CAStateActive || state == store.CAStateRetiring
}

// reloadCAs rebuilds the CA view from the store. Keys already unsealed are
// reused (a CA's key never changes); new ones are unsealed with aad
// "ca:<id>".
func (a *Authority) reloadCAs(ctx context.Context) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	recs, err := a.st.ListCAs(ctx)
	if err != nil {
		return fmt.Errorf("authority: load CAs: %w", err)
	}
	verRaw, err := a.st.GetMeta(ctx, metaBundleVersion)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("authority: load bundle version: %w", err)
	}
	var version int64
	if len(verRaw) > 0 {
		if version, err = strconv.ParseInt(string(verRaw), 10, 64); err != nil {
			return fmt.Errorf("authority: bundle version %q: %w", verRaw, err)
		}
	}
	old := a.cas.Load()
	st := &caState{
		byID:          make(map[string]*caEntry, len(recs)),
		byRaw:         make(map[string]*caEntry, len(recs)),
		active:        map[string]*caEntry{},
		children:      map[string][]*caEntry{},
		bundleVersion: version,
	}
	for _, rec := range recs {
		e := &caEntry{CA: rec}
		e.KeyCiphertext = nil
		if old != nil {
			if prev := old.byID[rec.ID]; prev != nil && string(prev.CertDER) == string(rec.CertDER) {
				e.cert, e.signer, e.serial = prev.cert, prev.signer, prev.serial
			}
		}
		if e.signer == nil {
			if e.cert, err = x509.ParseCertificate(rec.CertDER); err != nil {
				return fmt.Errorf("authority: CA %s: parse certificate: %w", rec.ID, err)
			}
			der, err := a.kms.Decrypt(ctx, rec.KeyCiphertext, aadCA(rec.ID))
			if err != nil {
				return fmt.Errorf("authority: CA %s: unseal key: %w", rec.ID, err)
			}
			key, err := ca.ParseKey(der)
			if err != nil {
				return fmt.Errorf("authority: CA %s: %w", rec.ID, err)
			}
			if e.signer, err = ca.NewSigner(e.cert, key); err != nil {
				return fmt.Errorf("authority: CA %s: %w", rec.ID, err)
			}
			e.serial = ca.SerialHex(e.cert.SerialNumber)
		}
		st.list = append(st.list, e)
		st.byID[e.ID] = e
		st.byRaw[string(e.CertDER)] = e
		switch e.Kind {
		case store.CAKindRoot:
			if inBundle(e.State) {
				st.roots = append(st.roots, e.cert)
			}
			if e.State == store.CAStateActive {
				st.activeRoot = e // the newest wins
			}
		case store.CAKindIntermediate:
			st.children[e.ParentID] = append(st.children[e.ParentID], e)
			if e.State == store.CAStateActive {
				st.active[e.Team] = e // the newest wins
			}
		}
	}
	st.bundle = x509bundle.FromX509Authorities(a.td, st.roots)
	st.bundlePEM = ca.EncodeCertsPEM(st.roots...)
	a.cas.Store(st)
	return nil
}

// issuer returns the active intermediate of team ("" for the authority's
// own), reloading once from the store when this replica does not know one
// (a team created by another replica).
func (a *Authority) issuer(ctx context.Context, team string) (*caEntry, error) {
	if e := a.cas.Load().active[team]; e != nil {
		return e, nil
	}
	if err := a.reloadCAs(ctx); err != nil {
		return nil, err
	}
	if e := a.cas.Load().active[team]; e != nil {
		return e, nil
	}
	return nil, fmt.Errorf("%w for team %q", ErrNoActiveCA, team)
}

// chain returns leaf followed by e, the intermediate that issued it: what a
// peer presents.
func (e *caEntry) chain(leaf *x509.Certificate) []*x509.Certificate {
	return []*x509.Certificate{leaf, e.cert}
}
