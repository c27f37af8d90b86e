package workloadapi

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/identity"
)

// Node is the node agent's side of the Workload API: it follows its
// registration entries in the authority, obtains and renews (at half
// life) the SVIDs they name over mTLS with the agent's own SVID, and
// serves them to matching local processes.
type Node struct {
	src    *identity.Source
	hc     *http.Client
	base   string
	log    *slog.Logger
	server *Server
	wake   chan struct{}

	mu      sync.Mutex
	entries []Entry
	svids   map[spiffeid.ID]*x509svid.SVID
	jwts    map[string]jwtCached
	jwks    []byte
	jwksAt  time.Time
}

// NewNode builds the agent's Workload API on src (the agent's identity).
func NewNode(src *identity.Source, log *slog.Logger) (*Node, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	authority, err := spiffeid.FromSegments(src.ID().TrustDomain(), "ward", "authority")
	if err != nil {
		return nil, err
	}
	n := &Node{src: src, base: src.AuthorityURL(), log: log, wake: make(chan struct{}, 1), svids: map[spiffeid.ID]*x509svid.SVID{}, jwts: map[string]jwtCached{},
		hc: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: src.ClientTLSConfig(identity.AuthorizeID(authority)), MaxIdleConnsPerHost: 2}}}
	n.server, err = New(Config{Entries: n.currentEntries, Issuer: n, JWT: n, Bundle: func() *x509bundle.Bundle { return src.Bundle() }, Logger: log})
	if err != nil {
		return nil, err
	}
	return n, nil
}

func (n *Node) currentEntries() []Entry {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.entries
}

// SVID implements Issuer.
func (n *Node) SVID(_ context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.svids[id]
	if !ok {
		return nil, fmt.Errorf("workloadapi: no SVID for %s yet", id)
	}
	return s, nil
}

// Run serves the Workload API on ln and keeps entries and SVIDs current
// until ctx ends.
func (n *Node) Run(ctx context.Context, ln net.Listener) error {
	unsub := n.src.Subscribe(func(kind string, payload []byte) {
		n.src.FollowSigner(kind, payload) // the agent's own SVID follows CA rotations
		switch kind {
		case "agent-entries", "snapshot":
			select {
			case n.wake <- struct{}{}:
			default:
			}
		case "bundle":
			n.server.Notify()
		}
	})
	defer unsub()
	errc := make(chan error, 1)
	go func() { errc <- n.server.Serve(ctx, ln) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastEntries := time.Time{}
	for {
		if time.Since(lastEntries) > 30*time.Second {
			if err := n.refreshEntries(ctx); err != nil && ctx.Err() == nil {
				n.log.Warn("workloadapi: registration entries not refreshed", "error", err)
			} else {
				lastEntries = time.Now()
			}
		}
		if n.renew(ctx) {
			n.server.Notify()
		}
		select {
		case <-ctx.Done():
			return <-errc
		case err := <-errc:
			return err
		case <-n.wake:
			lastEntries = time.Time{}
		case <-tick.C:
		}
	}
}

// refreshEntries fetches this agent's entries.
func (n *Node) refreshEntries(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.base+"/v1/agent/workload-entries", nil)
	resp, err := n.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("authority answered %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	var views []struct {
		SPIFFEID string `json:"spiffe_id"`
		UID      *int   `json:"uid"`
		GID      *int   `json:"gid"`
		Path     string `json:"path"`
	}
	if err := json.Unmarshal(body, &views); err != nil {
		return err
	}
	var es []Entry
	for _, v := range views {
		id, err := spiffeid.FromString(v.SPIFFEID)
		if err != nil || id.TrustDomain() != n.src.ID().TrustDomain() {
			continue
		}
		es = append(es, Entry{ID: id, UID: v.UID, GID: v.GID, Path: v.Path})
	}
	n.mu.Lock()
	n.entries = es
	keep := map[spiffeid.ID]bool{}
	for _, e := range es {
		keep[e.ID] = true
	}
	for id := range n.svids {
		if !keep[id] {
			delete(n.svids, id)
		}
	}
	n.mu.Unlock()
	n.server.Notify()
	return nil
}

// renew obtains the SVIDs that are missing or past half their life, and
// reports whether any changed.
func (n *Node) renew(ctx context.Context) bool {
	changed := false
	for _, e := range n.currentEntries() {
		n.mu.Lock()
		cur := n.svids[e.ID]
		n.mu.Unlock()
		if cur != nil {
			leaf := cur.Certificates[0]
			if time.Now().Before(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)) {
				continue
			}
		}
		s, err := n.issue(ctx, e.ID)
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn("workloadapi: SVID not obtained", "spiffe_id", e.ID.String(), "error", err)
			}
			continue
		}
		n.mu.Lock()
		n.svids[e.ID] = s
		n.mu.Unlock()
		changed = true
	}
	return changed
}

// issue asks the authority for a service SVID.
func (n *Node) issue(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	name := id.Path()[len("/svc/"):]
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: nil}, key)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]string{"service": name, "csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.base+"/v1/agent/svid", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("authority answered %d: %s", resp.StatusCode, bytes.TrimSpace(data))
	}
	var out struct {
		SVIDPEM string `json:"svid_pem"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, err
	}
	certs, err := parseCerts([]byte(out.SVIDPEM))
	if err != nil {
		return nil, err
	}
	s := &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: crypto.Signer(key)}
	got, err := x509svid.IDFromCert(certs[0])
	if err != nil || got != id {
		return nil, fmt.Errorf("the authority issued %v, not %s", got, id)
	}
	if _, _, err := x509svid.Verify(certs, n.src); err != nil {
		return nil, fmt.Errorf("the issued SVID does not verify: %w", err)
	}
	return s, nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in the answer")
	}
	return out, nil
}

// jwtCached is a JWT-SVID kept until half its life.
type jwtCached struct {
	token         string
	issued, until time.Time
}

const maxJWTCache = 1024

// JWTSVID implements JWTIssuer: from the authority, cached until half
// its life.
func (n *Node) JWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (string, error) {
	auds := append([]string(nil), audience...)
	sort.Strings(auds)
	key := id.String() + "\x00" + strings.Join(auds, "\x00")
	n.mu.Lock()
	if c, ok := n.jwts[key]; ok && time.Now().Before(c.issued.Add(c.until.Sub(c.issued)/2)) {
		n.mu.Unlock()
		return c.token, nil
	}
	n.mu.Unlock()
	body, _ := json.Marshal(map[string]any{"service": strings.TrimPrefix(id.Path(), "/svc/"), "audience": auds})
	var out struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := n.call(ctx, http.MethodPost, "/v1/agent/jwt-svid", body, http.StatusCreated, &out); err != nil {
		return "", err
	}
	n.mu.Lock()
	if len(n.jwts) >= maxJWTCache {
		clear(n.jwts)
	}
	n.jwts[key] = jwtCached{token: out.Token, issued: time.Now(), until: out.ExpiresAt}
	n.mu.Unlock()
	return out.Token, nil
}

// JWTBundle implements JWTIssuer: the authority's JWT-SVID keys, cached
// for a minute.
func (n *Node) JWTBundle(ctx context.Context) ([]byte, error) {
	n.mu.Lock()
	if n.jwks != nil && time.Since(n.jwksAt) < time.Minute {
		b := n.jwks
		n.mu.Unlock()
		return b, nil
	}
	n.mu.Unlock()
	var raw json.RawMessage
	if err := n.call(ctx, http.MethodGet, "/v1/jwt-svid/keys", nil, http.StatusOK, &raw); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.jwks, n.jwksAt = raw, time.Now()
	n.mu.Unlock()
	return raw, nil
}

// call sends one request to the authority and decodes a JSON answer.
func (n *Node) call(ctx context.Context, method, path string, body []byte, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		return fmt.Errorf("authority answered %d: %s", resp.StatusCode, bytes.TrimSpace(data))
	}
	return json.Unmarshal(data, out)
}
