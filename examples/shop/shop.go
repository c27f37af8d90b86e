// Package shop is the small shop that `ward demo` runs, written only
// against ward's public SDK (identity, guard, passport, pdp, pep, audit):
//
//   - orders takes a customer's order from the edge gateway, reserves stock
//     at inventory, charges the card at payments and books the parcel at
//     shipping, forwarding the customer's passport on every call;
//   - inventory holds stock;
//   - payments never stores a card number: it tokenizes the number in ward's
//     PII vault, keeps the token, and reveals the number only to hand it to
//     the card network;
//   - shipping is a plain HTTP service that knows nothing of ward
//     (ShippingHandler); ward's sidecar terminates mTLS in front of it and
//     tells it who called in Ward-* headers.
//
// Each SDK service is one call to Run. Run wires the SDK the way a service
// team would: an identity Source for the SVID, a guard that declares the
// service's manifest and enforces its signed access list, a passport
// verifier, the Cedar PDP of the service's policy domain, an audit writer,
// and the PEP in front of the handler. Calls to other services use mTLS
// clients that accept only the named peer and forward the passport.
package shop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/passport"
	"github.com/wardsec/ward/pdp"
	"github.com/wardsec/ward/pep"
)

// The shop's services.
const (
	Orders    = "orders"
	Inventory = "inventory"
	Payments  = "payments"
	Shipping  = "shipping"
)

// Config configures Run.
type Config struct {
	// Service is Orders, Inventory or Payments (shipping is not an SDK
	// service: serve ShippingHandler behind `ward sidecar`).
	Service string
	// AuthorityURL is ward's authority. Required.
	AuthorityURL string
	// SVIDDir holds the service's SVID (svid.pem, svid.key, bundle.pem as
	// written by `ward svid fetch`); the guard's and PDP's caches live
	// below it. Required unless WorkloadAPIAddr is set.
	SVIDDir string
	// WorkloadAPIAddr, if set, takes the SVID from a node agent's SPIFFE
	// Workload API (unix:///path) instead; SVIDDir then only holds caches.
	WorkloadAPIAddr string
	// DataDir holds the service's own records (orders.jsonl,
	// charges.jsonl); default SVIDDir.
	DataDir string
	// Listen is the service's mTLS address (default 127.0.0.1:0).
	Listen string
	// Peers are the https base URLs of the services this one calls:
	// orders needs inventory, payments and shipping (shipping's sidecar);
	// payments needs "vault".
	Peers map[string]string
	// AuditDir, if set, is where decisions are audited; else
	// WARD_AUDIT_DIR, else nowhere.
	AuditDir string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Ready, if set, receives the bound address once serving.
	Ready func(addr net.Addr)
}

// service is what differs between the SDK services.
type service struct {
	manifest string
	routes   []pep.Route
	handler  func(env *env) (http.Handler, error)
	peers    []string // names of Peers it needs
}

var services = map[string]service{
	Orders:    {manifest: ordersManifest, routes: ordersRoutes, handler: newOrders, peers: []string{Inventory, Payments, Shipping}},
	Inventory: {manifest: inventoryManifest, routes: inventoryRoutes, handler: newInventory},
	Payments:  {manifest: paymentsManifest, routes: paymentsRoutes, handler: newPayments, peers: []string{"vault"}},
}

// env is what a handler gets from Run.
type env struct {
	cfg     Config
	src     *identity.Source
	log     *slog.Logger
	clients map[string]*peerClient
}

// Run serves cfg.Service until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	svc, ok := services[cfg.Service]
	if !ok {
		return fmt.Errorf("shop: unknown service %q (want orders, inventory or payments)", cfg.Service)
	}
	if cfg.SVIDDir == "" {
		return errors.New("shop: SVIDDir is required")
	}
	for _, p := range svc.peers {
		if !strings.HasPrefix(cfg.Peers[p], "https://") {
			return fmt.Errorf("shop: %s needs the https URL of %s (Config.Peers)", cfg.Service, p)
		}
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.SVIDDir
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("service", cfg.Service)

	// Identity: the SVID, renewed before it expires.
	icfg := identity.Config{AuthorityURL: cfg.AuthorityURL, Dir: cfg.SVIDDir, BundleFile: filepath.Join(cfg.SVIDDir, "bundle.pem"), Logger: log}
	if cfg.WorkloadAPIAddr != "" {
		icfg = identity.Config{AuthorityURL: cfg.AuthorityURL, WorkloadAPIAddr: cfg.WorkloadAPIAddr, Logger: log}
	}
	src, err := identity.New(ctx, icfg)
	if err != nil {
		return err
	}
	defer src.Close()
	if want := spiffeid.RequireFromPath(src.ID().TrustDomain(), "/svc/"+cfg.Service); src.ID() != want {
		return fmt.Errorf("shop: the SVID is %s, want %s", src.ID(), want)
	}

	// The guard declares the manifest and enforces the signed access list;
	// passports and Cedar policy decide what the user may do; every
	// decision is audited.
	g, err := guard.NewForSource(ctx, src, src.AuthorityURL(), guard.Config{
		CacheDir: filepath.Join(cfg.SVIDDir, "accesslist"), Manifest: []byte(svc.manifest), Logger: log})
	if err != nil {
		return fmt.Errorf("shop: guard: %w", err)
	}
	pv, err := passport.NewForSource(src, passport.Config{Logger: log})
	if err != nil {
		return fmt.Errorf("shop: passports: %w", err)
	}
	defer pv.Close()
	pd, err := pdp.NewForSource(src, pdp.Config{CacheDir: filepath.Join(cfg.SVIDDir, "policy"), Logger: log})
	if err != nil {
		return fmt.Errorf("shop: policy: %w", err)
	}
	var aw *audit.Writer
	if cfg.AuditDir != "" {
		aw, err = audit.NewWriter(audit.Config{Dir: cfg.AuditDir, Service: cfg.Service})
	} else {
		aw, err = audit.FromEnv(cfg.Service)
	}
	if err != nil {
		return fmt.Errorf("shop: audit: %w", err)
	}
	pc := pep.Config{Guard: g, Routes: svc.routes, Logger: log, Passports: pv, PDP: pd}
	if aw != nil {
		defer aw.Close()
		pc.Audit = aw
	}
	p, err := pep.New(pc)
	if err != nil {
		return fmt.Errorf("shop: %w", err)
	}

	e := &env{cfg: cfg, src: src, log: log, clients: map[string]*peerClient{}}
	for _, name := range svc.peers {
		e.clients[name] = newPeerClient(src, cfg.Peers[name], name)
	}
	h, err := svc.handler(e)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	errc := make(chan error, 4)
	for _, run := range []func(context.Context) error{src.Run, g.Run, pd.Run} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				errc <- err
			}
		})
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("shop: listen: %w", err)
	}
	srv := &http.Server{
		Handler:           src.Middleware(p.Middleware(h)),
		TLSConfig:         src.ServerTLSConfig(identity.AuthorizeMemberOf(src.ID().TrustDomain())),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	wg.Go(func() {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	})
	log.Info("shop service serving", "addr", ln.Addr().String(), "spiffe_id", src.ID().String())
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}
	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	shut, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	_ = srv.Shutdown(shut)
	return err
}

// peerClient calls one named service over mTLS: the handshake accepts
// only spiffe://<td>/svc/<name>, and the passport of the request being
// served goes along.
type peerClient struct {
	name, base string
	hc         *http.Client
}

func newPeerClient(src *identity.Source, base, name string) *peerClient {
	id := spiffeid.RequireFromPath(src.ID().TrustDomain(), "/svc/"+name)
	tr := &http.Transport{TLSClientConfig: src.ClientTLSConfig(identity.AuthorizeID(id)), MaxIdleConnsPerHost: 16,
		ResponseHeaderTimeout: 10 * time.Second, IdleConnTimeout: 90 * time.Second}
	return &peerClient{name: name, base: strings.TrimRight(base, "/"), hc: passport.Client(&http.Client{Transport: tr, Timeout: 15 * time.Second})}
}

// peerError is a call to another service that did not succeed; status 0
// means it was not answered.
type peerError struct {
	peer   string
	status int
	detail string
}

func (e *peerError) Error() string {
	if e.status == 0 {
		return fmt.Sprintf("%s did not answer: %s", e.peer, e.detail)
	}
	return fmt.Sprintf("%s answered %d: %s", e.peer, e.status, e.detail)
}

// call sends a JSON request (body nil: none) and decodes a 2xx JSON
// answer into out.
func (c *peerClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return &peerError{peer: c.name, detail: err.Error()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return &peerError{peer: c.name, detail: err.Error()}
	}
	if resp.StatusCode/100 != 2 {
		var p struct {
			Title  string `json:"title"`
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(data, &p)
		d := p.Detail
		if d == "" {
			d = p.Title
		}
		if d == "" {
			d = http.StatusText(resp.StatusCode)
		}
		return &peerError{peer: c.name, status: resp.StatusCode, detail: clip(d)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &peerError{peer: c.name, status: resp.StatusCode, detail: "answer is not the expected JSON"}
	}
	return nil
}

// problem writes an RFC 9457 problem.
func problem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": title, "status": status, "detail": detail})
}

// peerProblem answers for a failed call to another service: 502 when it
// refused or failed, 504 when it did not answer.
func peerProblem(w http.ResponseWriter, err error) {
	var pe *peerError
	if errors.As(err, &pe) && pe.status == 0 {
		problem(w, http.StatusGatewayTimeout, "Dependency unavailable", pe.Error())
		return
	}
	problem(w, http.StatusBadGateway, "Dependency refused", err.Error())
}

// reply writes v as JSON.
func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// maxBody bounds every request body.
const maxBody = 64 << 10

// decodeJSON reads one JSON object of at most maxBody bytes with no
// unknown fields into v.
func decodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(io.LimitReader(r, maxBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return errors.New("the body is not one complete JSON object (at most 64 KiB)")
		}
		return fmt.Errorf("the body is not valid: %s", clip(err.Error()))
	}
	if dec.More() {
		return errors.New("the body holds more than one JSON value")
	}
	return nil
}

// journal appends records to a JSON-lines file (the services' own store).
type journal struct {
	mu   sync.Mutex
	path string
}

func (j *journal) append(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(j.path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(j.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// user is the passport subject of the request ("" without a passport).
func user(r *http.Request) string {
	if c, ok := passport.FromContext(r.Context()); ok {
		return c.Subject
	}
	return ""
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
