package authority

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/catalog"
	"github.com/wardsec/ward/internal/store"
)

// kindAccessList events tell a provider that its access list changed:
// {"provider": "spiffe://td/svc/name", "list_version": N}. They reach
// only the watch streams of that provider.
const kindAccessList = "accesslist"

// accessListPayload is the stored payload of an accesslist event.
type accessListPayload struct {
	Provider    string `json:"provider"`
	ListVersion int64  `json:"list_version"`
}

// maxCachedLists bounds the signed-list cache of a replica.
const maxCachedLists = 10000

// listCache keeps the last signed list per provider: a list is compiled
// and signed once per version, not once per fetch.
type listCache struct {
	mu sync.Mutex
	m  map[string]signedList
}

type signedList struct {
	version int64
	jws     []byte
}

func (c *listCache) get(provider string, version int64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[provider]
	return s.jws, ok && s.version == version
}

func (c *listCache) put(provider string, version int64, jws []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]signedList{}
	}
	if _, ok := c.m[provider]; !ok && len(c.m) >= maxCachedLists {
		for k := range c.m { // evict an arbitrary entry
			delete(c.m, k)
			break
		}
	}
	if cur, ok := c.m[provider]; ok && cur.version > version {
		return
	}
	c.m[provider] = signedList{version: version, jws: jws}
}

// keyID is the RFC 7638 thumbprint of the control-plane signing key: the
// "kid" of every access list and of its entry in /v1/keys.
func (a *Authority) keyID() string {
	a.kidOnce.Do(func() {
		jwk := jose.JSONWebKey{Key: a.signingKey.Public()}
		tp, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil { // unreachable for an Ed25519 key
			panic(fmt.Sprintf("authority: signing key thumbprint: %v", err))
		}
		a.kid = base64.RawURLEncoding.EncodeToString(tp)
	})
	return a.kid
}

// signAccessList signs list as a compact JWS (EdDSA, typ
// ward-accesslist+jws, kid).
func (a *Authority) signAccessList(list guard.AccessList) ([]byte, error) {
	payload, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("authority: encode access list: %w", err)
	}
	return a.signJWS(payload, guard.JWSType)
}

// AccessList returns the current signed access list of a provider (a
// registered service name) and its version.
func (a *Authority) AccessList(ctx context.Context, provider string) ([]byte, int64, error) {
	st, err := a.st.AccessListState(ctx, provider)
	if err == nil && st.Version == 0 {
		// Versions start at 1: a provider that never declared and holds
		// no grant still gets a valid (empty) list.
		if _, err = a.st.BumpAccessListVersion(ctx, provider); err == nil {
			st, err = a.st.AccessListState(ctx, provider)
		}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("authority: access list of %s: %w", provider, err)
	}
	if jws, ok := a.lists.get(provider, st.Version); ok {
		return jws, st.Version, nil
	}
	revoked := map[string]bool{}
	for _, g := range st.Grants {
		if _, seen := revoked[g.Consumer]; seen || strings.HasPrefix(g.Consumer, catalog.ComponentPrefix) {
			continue
		}
		svc, err := a.st.GetService(ctx, g.Consumer)
		switch {
		case isNotFound(err):
			revoked[g.Consumer] = true
		case err != nil:
			return nil, 0, fmt.Errorf("authority: access list of %s: %w", provider, err)
		default:
			revoked[g.Consumer] = svc.RevokedAt != nil
		}
	}
	list, err := catalog.Compile(a.td, provider, st, revoked, a.now())
	if err != nil {
		return nil, 0, fmt.Errorf("authority: access list of %s: %w", provider, err)
	}
	jws, err := a.signAccessList(list)
	if err != nil {
		return nil, 0, err
	}
	a.lists.put(provider, st.Version, jws)
	return jws, st.Version, nil
}

// serviceOf returns the service name of a workload SPIFFE ID
// (spiffe://<td>/svc/<name>), or false for anything else.
func (a *Authority) serviceOf(id spiffeid.ID) (string, bool) {
	if id.TrustDomain() != a.td {
		return "", false
	}
	name, ok := strings.CutPrefix(id.Path(), "/svc/")
	if !ok || !nameRE.MatchString(name) {
		return "", false
	}
	return name, true
}

// servicePeer authenticates a request by SVID and returns the calling
// service, which must be registered and not revoked.
func (a *Authority) servicePeer(r *http.Request) (store.Service, peer, error) {
	p, err := a.requirePeer(r)
	if err != nil {
		return store.Service{}, peer{}, err
	}
	name, ok := a.serviceOf(p.id)
	if !ok {
		return store.Service{}, peer{}, errForbiddenIdentity(fmt.Sprintf("%s is not a service identity (spiffe://%s/svc/<name>)", p.id, a.td))
	}
	svc, err := a.service(r.Context(), name)
	if err != nil {
		if errors.Is(err, ErrUnknownService) {
			return store.Service{}, peer{}, errForbiddenIdentity(fmt.Sprintf("service %s is not registered", quote(name)))
		}
		return store.Service{}, peer{}, err
	}
	if svc.RevokedAt != nil {
		return store.Service{}, peer{}, errRevoked(fmt.Sprintf("service %s has been revoked", quote(name)))
	}
	return svc, p, nil
}

// GET /v1/accesslist (mTLS): the calling provider's own signed access
// list, a compact JWS (application/jose).
func (a *Authority) handleAccessList(w http.ResponseWriter, r *http.Request) error {
	svc, _, err := a.servicePeer(r)
	if err != nil {
		return err
	}
	jws, version, err := a.AccessList(r.Context(), svc.Name)
	if err != nil {
		return err
	}
	a.metrics.accessListFetches.Inc()
	h := w.Header()
	h.Set("Content-Type", guard.MediaType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Ward-Access-List-Version", strconv.FormatInt(version, 10))
	h.Set("Content-Length", strconv.Itoa(len(jws)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(jws)
	return nil
}

// GET /v1/keys (public): the control-plane signing key as a JWKS, with the
// certificate chain that binds it to the trust domain in x5c.
func (a *Authority) handleKeys(w http.ResponseWriter, r *http.Request) error {
	chain, err := ca.ParseCertsPEM(a.signing.Load().chainPEM)
	if err != nil {
		return fmt.Errorf("authority: signing chain: %w", err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key:          a.signingKey.Public(),
		KeyID:        a.keyID(),
		Algorithm:    string(jose.EdDSA),
		Use:          "sig",
		Certificates: chain,
	}}}
	body, err := json.Marshal(set)
	if err != nil {
		return fmt.Errorf("authority: encode key set: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", guard.KeySetMediaType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "max-age=300")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// listChanged announces a provider's new access-list version to every
// replica and to the provider's watch streams.
func (a *Authority) listChanged(ctx context.Context, provider string, version int64) error {
	if version <= 0 {
		return nil
	}
	id, err := spiffeid.FromSegments(a.td, "svc", provider)
	if err != nil {
		return fmt.Errorf("authority: provider %q: %w", provider, err)
	}
	_, err = a.appendEvent(ctx, kindAccessList, accessListPayload{Provider: id.String(), ListVersion: version})
	return err
}
