package authority

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/internal/store"
)

// crlValidity is a CRL's nextUpdate - thisUpdate.
const crlValidity = time.Hour

// crlCache keeps each CA's last CRL until it is older than crlMaxAge or a
// revocation (or CA change) invalidates every entry. Each generation takes a
// new CRL number from the store.
type crlCache struct {
	mu      sync.Mutex
	gen     uint64
	entries map[string]crlEntry
}

type crlEntry struct {
	der []byte
	gen uint64
	at  time.Time
}

func newCRLCache() *crlCache { return &crlCache{entries: map[string]crlEntry{}} }

func (c *crlCache) invalidate() {
	c.mu.Lock()
	c.gen++
	c.mu.Unlock()
}

// GET /crl/{id}.crl: the DER CRL of one CA. A root's CRL lists its revoked
// intermediates; an intermediate's lists the revoked, unexpired
// certificates it issued.
func (a *Authority) handleCRL(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("file"), ".crl")
	e := a.cas.Load().byID[id]
	if e == nil && ok && validID(id) {
		// Created by another replica a moment ago?
		if err := a.reloadCAs(r.Context()); err == nil {
			e = a.cas.Load().byID[id]
		}
	}
	if !ok || e == nil {
		problem.Write(w, problem.New(http.StatusNotFound, slugNotFound, "Not found", "no CRL under this name; CRLs are at /crl/<ca_id>.crl"))
		return
	}
	der, err := a.crl(r.Context(), e)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/pkix-crl")
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(a.tun.crlMaxAge/time.Second)))
	h.Set("Content-Length", strconv.Itoa(len(der)))
	_, _ = w.Write(der)
}

// crl returns e's current CRL, from the cache or freshly signed.
func (a *Authority) crl(ctx context.Context, e *caEntry) ([]byte, error) {
	c := a.crls
	c.mu.Lock()
	defer c.mu.Unlock()
	now := a.now()
	if ent, ok := c.entries[e.ID]; ok && ent.gen == c.gen && now.Sub(ent.at) < a.tun.crlMaxAge {
		return ent.der, nil
	}
	gen := c.gen
	var entries []x509.RevocationListEntry
	if e.Kind == store.CAKindRoot {
		for _, child := range a.cas.Load().children[e.ID] {
			if child.State == store.CAStateRevoked && child.NotAfter.After(now) {
				entries = append(entries, x509.RevocationListEntry{
					SerialNumber:   child.cert.SerialNumber,
					RevocationTime: revokedAtOr(child.RevokedAt, now),
				})
			}
		}
	} else {
		revoked, err := a.st.ListRevokedCertificates(ctx, e.ID, now)
		if err != nil {
			return nil, fmt.Errorf("authority: crl %s: %w", e.ID, err)
		}
		for _, rc := range revoked {
			n, err := parseSerial(rc.Serial)
			if err != nil {
				a.log.ErrorContext(ctx, "bad serial in store", "serial", rc.Serial)
				continue
			}
			entries = append(entries, x509.RevocationListEntry{
				SerialNumber:   n,
				RevocationTime: revokedAtOr(rc.RevokedAt, now),
				ReasonCode:     rc.RevocationReason,
			})
		}
	}
	number, err := a.st.NextCRLNumber(ctx, e.ID)
	if err != nil {
		return nil, fmt.Errorf("authority: crl %s: %w", e.ID, err)
	}
	der, err := e.signer.CreateCRL(entries, number, now, now.Add(crlValidity))
	if err != nil {
		return nil, fmt.Errorf("authority: crl %s: %w", e.ID, err)
	}
	c.entries[e.ID] = crlEntry{der: der, gen: gen, at: now}
	return der, nil
}
