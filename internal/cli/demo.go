package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/examples/shop"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/catalog"
	"github.com/wardsec/ward/internal/sidecar"
	"github.com/wardsec/ward/internal/telemetry"
)

func newDemoCmd(g *globals) *cobra.Command {
	var dataDir string
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo [--keep] [--data DIR]",
		Short: "Run ward dev and a small shop, then a scripted tour of what ward enforces",
		Long: `ward demo starts the whole control plane (as ward dev does, on free loopback
ports) and the shop of examples/shop — orders, inventory and payments on the Go
SDK, and shipping, a plain HTTP service behind ward's sidecar — then runs a
seven-step tour and prints each step: what was attempted, what was expected and
what happened. It exits non-zero if any step did not behave as expected.

Without --data the state lives in a new temporary directory, removed at exit.
--keep leaves everything running after the tour (until Ctrl-C) and writes
DIR/demo.env with the shop's addresses and a customer API key, to explore with
the CLI after "source DIR/dev.env".`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), g, dataDir, keep)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "", "data directory; must not hold a ward already (default: a new temporary directory)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the system running after the tour, until interrupted")
	return cmd
}

// demoStep is one row of the tour.
type demoStep struct {
	N        int    `json:"step"`
	Name     string `json:"name"`
	Attempt  string `json:"attempted"`
	Expected string `json:"expected"`
	Got      string `json:"happened"`
	OK       bool   `json:"as_expected"`
	Concept  string `json:"doc"`
}

// demoReport is what ward demo prints (-o json).
type demoReport struct {
	DataDir  string         `json:"data_dir"`
	Steps    []demoStep     `json:"steps"`
	Trail    []audit.Event  `json:"audit_trail"`
	Elapsed  string         `json:"elapsed"`
	Passed   bool           `json:"passed"`
	Services map[string]any `json:"services"`
}

// demo is a running demo: ward dev in this process, the shop, and the
// state the tour needs.
type demo struct {
	g     *globals
	dir   string
	vars  map[string]string
	log   *slog.Logger
	https *http.Client // trusts the dev CA; no client certificate
	// addresses
	orders, inventory, payments, shippingIn, shippingEgress, shippingApp string
	// state made during setup
	shippingRequest string // shipping's pending request for inventory
	alice, bob      apiKey
	cid             string // the tour order's correlation ID
	order           shop.Order
	wg              sync.WaitGroup
	errc            chan error
}

type apiKey struct {
	ID  string `json:"id"`
	Key string `json:"api_key"`
}

const demoPAN = "4242 4242 4242 4242"

func runDemo(ctx context.Context, g *globals, dataDir string, keep bool) error {
	start := time.Now()
	if dataDir == "" {
		tmp, err := os.MkdirTemp("", "ward-demo-")
		if err != nil {
			return err
		}
		dataDir = tmp
		if !keep {
			defer os.RemoveAll(tmp)
		}
	} else if _, err := os.Stat(filepath.Join(dataDir, "ward.db")); err == nil {
		return usageError{fmt.Errorf("--data %s already holds a ward; the demo needs a new directory", dataDir)}
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	logPath := filepath.Join(dataDir, "demo.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	log, err := telemetry.NewLogger(logf, "info", "json")
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	devDone := make(chan int, 1)
	go func() {
		devDone <- run(ctx, []string{"dev", "--data", dataDir, "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--vault-listen", "127.0.0.1:0"},
			strings.NewReader(""), logf, logf)
	}()
	d := &demo{g: g, dir: dataDir, log: log, errc: make(chan error, 8)}
	stop := func() {
		cancel()
		d.wg.Wait()
		select {
		case <-devDone:
		case <-time.After(15 * time.Second):
		}
	}
	defer stop()
	fmt.Fprintf(g.stderr, "ward demo: starting ward dev and the shop in %s (logs: %s)\n", dataDir, logPath)
	if d.vars, err = waitDevEnv(ctx, dataDir, devDone); err != nil {
		return fmt.Errorf("%w (see %s)", err, logPath)
	}
	if d.https, err = trustingClient(d.vars["WARD_CA_BUNDLE"]); err != nil {
		return err
	}
	if err := d.setup(ctx); err != nil {
		return fmt.Errorf("demo setup: %w (see %s)", err, logPath)
	}
	fmt.Fprintf(g.stderr, "ward demo: shop ready after %s; the tour:\n", time.Since(start).Round(100*time.Millisecond))
	rep := demoReport{DataDir: dataDir, Passed: true, Services: map[string]any{
		"gateway": d.vars["WARD_GATEWAY"], "orders": "https://" + d.orders, "inventory": "https://" + d.inventory,
		"payments": "https://" + d.payments, "shipping (sidecar)": "https://" + d.shippingIn, "vault": d.vars["WARD_VAULT"]}}
	rep.Steps, rep.Trail = d.tour(ctx)
	for _, s := range rep.Steps {
		rep.Passed = rep.Passed && s.OK
	}
	rep.Elapsed = time.Since(start).Round(100 * time.Millisecond).String()
	if err := g.print(rep, func(w io.Writer) { printDemo(w, rep) }); err != nil {
		return err
	}
	if keep {
		if err := d.writeDemoEnv(ctx); err != nil {
			return err
		}
		fmt.Fprintf(g.stderr, "ward demo: still running (Ctrl-C stops it). In another shell:\n  source %s/dev.env; source %s/demo.env\n"+
			"  curl -s --cacert \"$WARD_CA_BUNDLE\" -H \"Authorization: Bearer $WARD_DEMO_KEY\" -d '{\"sku\":\"sku-desk\",\"quantity\":1,\"card_number\":\"4111 1111 1111 1111\"}' \"$WARD_GATEWAY/orders\"\n"+
			"  go run ./cmd/ward audit query --db \"$WARD_AUDIT_DB\" --since 10m\n", dataDir, dataDir)
		select {
		case <-ctx.Done():
		case code := <-devDone:
			devDone <- code
			return errors.New("ward dev stopped")
		case err := <-d.errc:
			return err
		}
	}
	if !rep.Passed {
		failed := 0
		for _, s := range rep.Steps {
			if !s.OK {
				failed++
			}
		}
		return fmt.Errorf("%d of %d steps did not behave as expected (logs: %s)", failed, len(rep.Steps), logPath)
	}
	return nil
}

// waitDevEnv waits for ward dev to write dev.env.
func waitDevEnv(ctx context.Context, dir string, done chan int) (map[string]string, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		vars, err := readEnvFile(filepath.Join(dir, "dev.env"))
		if err == nil && vars["WARD_AUTHORITY"] != "" && vars["WARD_VAULT"] != "" {
			return vars, nil
		}
		select {
		case code := <-done:
			return nil, fmt.Errorf("ward dev exited with status %d", code)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, errors.New("ward dev did not start within a minute")
		}
	}
}

// trustingClient is an HTTPS client that trusts the CA bundle and has no
// client certificate (an outsider).
func trustingClient(bundle string) (*http.Client, error) {
	pemData, err := readBounded(bundle, 1<<20)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("%s holds no certificate", bundle)
	}
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 4}}, nil
}

// ward runs one CLI command in-process against the demo's ward dev, as an
// administrator, and returns its stdout.
func (d *demo) ward(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	full := append([]string{"--authority", d.vars["WARD_AUTHORITY"], "--ca-bundle", d.vars["WARD_CA_BUNDLE"], "--admin-token", d.vars["WARD_ADMIN_TOKEN"]}, args...)
	if code := run(ctx, full, strings.NewReader(""), &out, &errb); code != 0 {
		return out.String(), errors.New(strings.TrimSpace(strings.TrimPrefix(errb.String(), "ward: ")))
	}
	return out.String(), nil
}

// wardJSON runs a command with -o json and decodes its output.
func (d *demo) wardJSON(ctx context.Context, v any, args ...string) error {
	out, err := d.ward(ctx, append(args, "-o", "json")...)
	if err != nil {
		return fmt.Errorf("ward %s: %w", strings.Join(args[:min(2, len(args))], " "), err)
	}
	return json.Unmarshal([]byte(out), v)
}

// retry calls fn until it succeeds or the deadline passes.
func retry(ctx context.Context, within time.Duration, what string, fn func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// setup registers the shop, starts it, approves what the shop needs (but
// not shipping's request for inventory), routes /orders through the
// gateway, pushes the orders policy and creates two users' API keys.
func (d *demo) setup(ctx context.Context) error {
	if _, err := d.ward(ctx, "team", "create", "shop"); err != nil {
		return err
	}
	dirs := map[string]string{}
	for _, s := range []struct{ name, level string }{{shop.Inventory, "L2"}, {shop.Payments, "L3"}, {shop.Shipping, "L2"}, {shop.Orders, "L2"}} {
		var created struct {
			Token string `json:"bootstrap_token"`
		}
		if err := d.wardJSON(ctx, &created, "service", "create", s.name, "--team", "shop", "--level", s.level); err != nil {
			return err
		}
		dir := filepath.Join(d.dir, "shop", s.name)
		svid, bundle, err := identity.Fetch(ctx, identity.Config{AuthorityURL: d.vars["WARD_AUTHORITY"], BootstrapToken: created.Token, BundleFile: d.vars["WARD_CA_BUNDLE"]})
		if err != nil {
			return fmt.Errorf("%s's SVID: %w", s.name, err)
		}
		if err := identity.WriteDir(dir, svid, bundle); err != nil {
			return err
		}
		dirs[s.name] = dir
	}

	// The shop. Each service runs until the demo ends.
	start := func(name string, fn func(ready func(net.Addr)) error) (string, error) {
		addr := make(chan string, 1)
		d.wg.Go(func() {
			if err := fn(func(a net.Addr) { addr <- a.String() }); err != nil {
				d.log.Error("shop service stopped", "service", name, "error", err)
				d.errc <- fmt.Errorf("%s: %w", name, err)
			}
		})
		select {
		case a := <-addr:
			return a, nil
		case err := <-d.errc:
			return "", err
		case <-time.After(30 * time.Second):
			return "", fmt.Errorf("%s did not start", name)
		}
	}
	runShop := func(name string, peers map[string]string) func(func(net.Addr)) error {
		return func(ready func(net.Addr)) error {
			return shop.Run(ctx, shop.Config{Service: name, AuthorityURL: d.vars["WARD_AUTHORITY"], SVIDDir: dirs[name],
				Peers: peers, AuditDir: d.vars["WARD_AUDIT_DIR"], Logger: d.log, Ready: ready})
		}
	}
	var err error
	if d.inventory, err = start(shop.Inventory, runShop(shop.Inventory, nil)); err != nil {
		return err
	}
	if err := d.waitDeclared(ctx, shop.Inventory, "vault"); err != nil { // shipping and payments consume them
		return err
	}
	if d.payments, err = start(shop.Payments, runShop(shop.Payments, map[string]string{"vault": d.vars["WARD_VAULT"]})); err != nil {
		return err
	}
	if d.shippingApp, err = start("shipping app", func(ready func(net.Addr)) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: shop.ShippingHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			_ = srv.Close()
		}()
		ready(ln.Addr())
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}); err != nil {
		return err
	}
	routes, err := parseSidecarRoutes([]byte(shop.ShippingRoutes))
	if err != nil {
		return err
	}
	aw, err := audit.NewWriter(audit.Config{Dir: d.vars["WARD_AUDIT_DIR"], Service: shop.Shipping})
	if err != nil {
		return err
	}
	egress := make(chan string, 1)
	if d.shippingIn, err = start("shipping sidecar", func(ready func(net.Addr)) error {
		defer aw.Close()
		sc := sidecar.Config{Service: shop.Shipping, Upstream: "http://" + d.shippingApp, Routes: routes, Manifest: []byte(shop.ShippingManifest),
			Egress: map[string]string{shop.Inventory: "https://" + d.inventory}, CacheDir: dirs[shop.Shipping], Audit: aw, Logger: d.log.With("component", "sidecar")}
		return runSidecar(ctx, d.vars["WARD_AUTHORITY"], dirs[shop.Shipping], "127.0.0.1:0", "127.0.0.1:0", sc, func(in, eg net.Addr) {
			egress <- eg.String()
			ready(in)
		})
	}); err != nil {
		return err
	}
	d.shippingEgress = <-egress
	// orders' manifest names what the others provide: it is accepted
	// once theirs are (the guard would retry; waiting keeps the demo fast).
	if err := d.waitDeclared(ctx, shop.Inventory, shop.Payments, shop.Shipping, "vault"); err != nil {
		return err
	}
	if d.orders, err = start(shop.Orders, runShop(shop.Orders, map[string]string{shop.Inventory: "https://" + d.inventory,
		shop.Payments: "https://" + d.payments, shop.Shipping: "https://" + d.shippingIn})); err != nil {
		return err
	}

	// Every service declares its manifest on start: approve what the shop
	// needs to take an order, and leave shipping's request for inventory
	// pending for the tour.
	want := map[string]bool{"orders>inventory": true, "orders>payments": true, "orders>shipping": true, "payments>vault": true, "shipping>inventory": true}
	type request struct {
		ID       string `json:"id"`
		Consumer string `json:"consumer"`
		Provider string `json:"provider"`
	}
	pending := map[string]string{}
	err = retry(ctx, 20*time.Second, "the shop's access requests", func() error {
		var reqs []request
		if err := d.wardJSON(ctx, &reqs, "catalog", "pending"); err != nil {
			return err
		}
		for _, r := range reqs {
			k := strings.TrimPrefix(r.Consumer, "spiffe://"+d.vars["WARD_TRUST_DOMAIN"]+"/svc/") + ">" + strings.TrimPrefix(r.Provider, "spiffe://"+d.vars["WARD_TRUST_DOMAIN"]+"/svc/")
			if want[k] {
				pending[k] = r.ID
			}
		}
		if len(pending) < len(want) {
			return fmt.Errorf("%d of %d declared", len(pending), len(want))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k, id := range pending {
		if k == "shipping>inventory" {
			d.shippingRequest = id
			continue
		}
		if _, err := d.ward(ctx, "catalog", "approve", id, "--reason", "ward demo: the shop needs "+k); err != nil {
			return err
		}
	}
	if _, err := d.ward(ctx, "route", "set", "shop", "--prefix", "/orders", "--service", shop.Orders, "--upstream", "https://"+d.orders, "--scopes", "orders.create"); err != nil {
		return err
	}
	polDir := filepath.Join(d.dir, "policy", shop.Orders)
	if err := writeDemoPolicy(polDir); err != nil {
		return err
	}
	if _, err := d.ward(ctx, "policy", "push", "--domain", shop.Orders, "--dir", polDir); err != nil {
		return err
	}
	if err := d.wardJSON(ctx, &d.alice, "apikey", "create", "--subject", "alice", "--tenant", "demo", "--scope", "orders.create", "--meta", "roles=customer"); err != nil {
		return err
	}
	if err := d.wardJSON(ctx, &d.bob, "apikey", "create", "--subject", "bob", "--tenant", "demo", "--scope", "orders.create", "--meta", "roles=support"); err != nil {
		return err
	}

	// Ready when orders reaches every dependency through the gateway for
	// alice, and the policy already refuses bob.
	return retry(ctx, 30*time.Second, "the shop is ready", func() error {
		code, body, _, err := d.gateway(ctx, d.alice.Key, http.MethodGet, "/orders/deps", "")
		if err != nil {
			return err
		}
		var deps shop.Deps
		if code != http.StatusOK || json.Unmarshal(body, &deps) != nil || !deps.Ready {
			return fmt.Errorf("orders' dependencies: %d %s", code, clipBody(body))
		}
		if code, body, _, err = d.gateway(ctx, d.bob.Key, http.MethodGet, "/orders/deps", ""); err != nil || code != http.StatusForbidden {
			return fmt.Errorf("the orders policy is not enforced yet: %d %s %v", code, clipBody(body), err)
		}
		return nil
	})
}

// waitDeclared waits until the posture report shows a declaration of
// every named service.
func (d *demo) waitDeclared(ctx context.Context, names ...string) error {
	return retry(ctx, 20*time.Second, "declarations", func() error {
		var rep catalog.Report
		if err := d.wardJSON(ctx, &rep, "posture"); err != nil {
			return err
		}
		declared := map[string]bool{}
		for _, s := range rep.Services {
			declared[s.Name] = s.Declared != ""
		}
		for _, n := range names {
			if !declared[n] {
				return fmt.Errorf("%s has not declared yet", n)
			}
		}
		return nil
	})
}

// writeDemoPolicy writes the orders domain: customers may order and read
// their orders; nobody else may.
func writeDemoPolicy(dir string) error {
	files := map[string]string{
		"orders.cedar": `// Only customers place and read orders.
@id("customers-order")
permit(principal in Role::"customer", action in [Action::"create", Action::"read"], resource is orders);
`,
		"schema.cedarschema": `entity Role;
entity User in [Role] { tenant: String, auth_method: String, issuer: String };
entity Service;
entity orders;
action create, read appliesTo {
  principal: [User, Service],
  resource: orders,
  context: { caller: String, scopes: Set<String>, tenant: String, auth_method: String, correlation_id: String },
};
`,
		"tests/orders.yaml": `cases:
  - name: a customer orders
    principal: User::"alice"
    action: Action::"create"
    resource: orders::"/orders"
    context: {caller: "spiffe://ward.test/ward/gateway", scopes: [orders.create], tenant: demo, auth_method: apikey, correlation_id: ""}
    entities:
      - uid: User::"alice"
        parents: [Role::"customer"]
        attrs: {tenant: demo, auth_method: apikey, issuer: ward}
    expect: allow
  - name: support staff do not order
    principal: User::"bob"
    action: Action::"create"
    resource: orders::"/orders"
    context: {caller: "spiffe://ward.test/ward/gateway", scopes: [orders.create], tenant: demo, auth_method: apikey, correlation_id: ""}
    entities:
      - uid: User::"bob"
        parents: [Role::"support"]
        attrs: {tenant: demo, auth_method: apikey, issuer: ward}
    expect: deny
`,
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// gateway sends a request to the edge gateway with an API key.
func (d *demo) gateway(ctx context.Context, key, method, path, body string) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, d.vars["WARD_GATEWAY"]+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.https.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, data, resp.Header, err
}

func clipBody(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// problemOf returns the title and detail of a problem+json body.
func problemOf(b []byte) string {
	var p struct {
		Title  string `json:"title"`
		Detail string `json:"detail"`
		Reason string `json:"reason"`
	}
	if json.Unmarshal(b, &p) != nil {
		return clipBody(b)
	}
	s := p.Title
	if p.Reason != "" {
		s += " (" + p.Reason + ")"
	} else if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s
}

// tour runs the seven steps; a step that fails does not stop the others.
func (d *demo) tour(ctx context.Context) ([]demoStep, []audit.Event) {
	var trail []audit.Event
	steps := []demoStep{
		d.stepOrder(ctx),
		d.stepNoCertificate(ctx),
		d.stepAccessList(ctx),
		d.stepPolicy(ctx),
		d.stepRevokeKey(ctx),
		d.stepCardInVault(ctx),
		d.stepAuditTrail(ctx, &trail),
	}
	for i := range steps {
		steps[i].N = i + 1
	}
	return steps, trail
}

func (d *demo) stepOrder(ctx context.Context) demoStep {
	s := demoStep{Name: "customer order", Attempt: "alice (role customer) POSTs an order to the gateway with her API key",
		Expected: "201; orders reserves stock, payments charges, shipping books via its sidecar and sees user alice", Concept: "docs/concepts/gateway.md"}
	body := fmt.Sprintf(`{"sku":"sku-lamp","quantity":2,"card_number":%q}`, demoPAN)
	code, resp, hdr, err := d.gateway(ctx, d.alice.Key, http.MethodPost, "/orders", body)
	if err != nil {
		s.Got = err.Error()
		return s
	}
	d.cid = hdr.Get("X-Correlation-ID")
	if code != http.StatusCreated || json.Unmarshal(resp, &d.order) != nil {
		s.Got = fmt.Sprintf("%d %s", code, problemOf(resp))
		return s
	}
	o := d.order
	td := "spiffe://" + d.vars["WARD_TRUST_DOMAIN"]
	onlySidecar := true
	for _, h := range o.Shipment.WardHeaders {
		switch h {
		case sidecar.HeaderCaller, sidecar.HeaderUser, sidecar.HeaderPassportClaims, sidecar.HeaderCorrelationID:
		default:
			onlySidecar = false
		}
	}
	s.Got = fmt.Sprintf("201 %s: charge %s (auth %s), shipment %s; shipping saw caller %s, user %s",
		o.ID, o.ChargeID, o.AuthCode, o.Shipment.ID, strings.TrimPrefix(o.Shipment.Caller, td), o.Shipment.User)
	s.OK = o.User == "alice" && o.ChargeID != "" && o.Shipment.ID != "" && o.Shipment.User == "alice" &&
		o.Shipment.Caller == td+"/svc/orders" && o.Shipment.CorrelationID == d.cid && d.cid != "" && onlySidecar
	if !onlySidecar {
		s.Got += fmt.Sprintf("; shipping saw headers %v", o.Shipment.WardHeaders)
	}
	return s
}

func (d *demo) stepNoCertificate(ctx context.Context) demoStep {
	s := demoStep{Name: "no certificate", Attempt: "a client with no certificate calls orders directly, bypassing the gateway",
		Expected: "refused in the TLS handshake", Concept: "docs/concepts/identity.md"}
	// The client verifies orders' SVID chain against the trust bundle (an
	// SVID names a SPIFFE ID, not a host) and offers no certificate.
	pool := d.https.Transport.(*http.Transport).TLSClientConfig.RootCAs
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // the chain is verified below, without a host name
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		},
	}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+d.orders+"/orders/deps", nil)
	resp, err := hc.Do(req)
	if err == nil {
		resp.Body.Close()
		s.Got = fmt.Sprintf("answered %d", resp.StatusCode)
		return s
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	s.Got = "refused: " + msg
	s.OK = strings.Contains(err.Error(), "certificate required") || strings.Contains(err.Error(), "bad certificate") || strings.Contains(err.Error(), "handshake failure")
	return s
}

func (d *demo) stepAccessList(ctx context.Context) demoStep {
	s := demoStep{Name: "access list", Attempt: "shipping (through its sidecar's egress) reads inventory's stock before and after a reviewer approves its request",
		Expected: "403 not on the list; approved; 200 within seconds, nothing restarted", Concept: "docs/concepts/access-lists.md"}
	get := func() (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.shippingEgress+"/inventory/stock/sku-lamp", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, problemOf(b)
	}
	code, why := get()
	if code != http.StatusForbidden {
		s.Got = fmt.Sprintf("before approval: %d %s", code, why)
		return s
	}
	if _, err := d.ward(ctx, "catalog", "approve", d.shippingRequest, "--reason", "ward demo: shipping checks stock"); err != nil {
		s.Got = "403, then approval failed: " + err.Error()
		return s
	}
	t0 := time.Now()
	var after int
	err := retry(ctx, 10*time.Second, "after approval", func() error {
		if after, why = get(); after != http.StatusOK {
			return fmt.Errorf("%d %s", after, why)
		}
		return nil
	})
	if err != nil {
		s.Got = "403, approved, then " + err.Error()
		return s
	}
	s.Got = fmt.Sprintf("403 (not on the list); approved %s; 200 %s after the approval", d.shippingRequest, fmtDur(time.Since(t0)))
	s.OK = true
	return s
}

func (d *demo) stepPolicy(ctx context.Context) demoStep {
	s := demoStep{Name: "policy", Attempt: "bob (role support; his key has the orders.create scope) orders through the gateway",
		Expected: "403 from orders' Cedar policy (only customers order)", Concept: "docs/concepts/policies.md"}
	body := fmt.Sprintf(`{"sku":"sku-lamp","quantity":1,"card_number":%q}`, demoPAN)
	code, resp, _, err := d.gateway(ctx, d.bob.Key, http.MethodPost, "/orders", body)
	if err != nil {
		s.Got = err.Error()
		return s
	}
	s.Got = fmt.Sprintf("%d %s", code, problemOf(resp))
	s.OK = code == http.StatusForbidden && strings.Contains(string(resp), "policy")
	return s
}

func (d *demo) stepRevokeKey(ctx context.Context) demoStep {
	s := demoStep{Name: "revoked API key", Attempt: "alice's API key is revoked while she reads her order in a loop",
		Expected: "401 at the gateway within a second", Concept: "docs/concepts/tokens.md"}
	path := "/orders/" + d.order.ID
	if code, resp, _, err := d.gateway(ctx, d.alice.Key, http.MethodGet, path, ""); err != nil || code != http.StatusOK {
		s.Got = fmt.Sprintf("before revocation: %d %s %v", code, problemOf(resp), err)
		return s
	}
	if _, err := d.ward(ctx, "apikey", "revoke", d.alice.ID); err != nil {
		s.Got = "revoke: " + err.Error()
		return s
	}
	t0 := time.Now()
	for {
		code, resp, _, err := d.gateway(ctx, d.alice.Key, http.MethodGet, path, "")
		el := time.Since(t0)
		if err == nil && code == http.StatusUnauthorized {
			s.Got = fmt.Sprintf("401 %s after the revocation (%s)", fmtDur(el), problemOf(resp))
			s.OK = el <= time.Second
			return s
		}
		if el > 5*time.Second {
			s.Got = fmt.Sprintf("still %d after %s %v", code, el.Round(time.Millisecond), err)
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *demo) stepCardInVault(ctx context.Context) demoStep {
	s := demoStep{Name: "card only in the vault", Attempt: "search every file of the deployment for the card number; orders tries to reveal the card token",
		Expected: "no file holds the number; orders and payments hold only the token; orders' reveal is refused (403)", Concept: "docs/concepts/vault.md"}
	pan := strings.ReplaceAll(demoPAN, " ", "")
	forms := [][]byte{[]byte(pan), []byte(demoPAN)}
	files, hits := 0, []string{}
	tokenIn := map[string]bool{}
	err := filepath.WalkDir(d.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		files++
		for _, f := range forms {
			if bytes.Contains(data, f) {
				rel, _ := filepath.Rel(d.dir, p)
				hits = append(hits, rel)
				break
			}
		}
		if d.order.CardToken != "" && bytes.Contains(data, []byte(d.order.CardToken)) {
			tokenIn[filepath.Base(p)] = true
		}
		return nil
	})
	if err != nil {
		s.Got = err.Error()
		return s
	}
	_, rerr := d.ward(ctx, "vault", "detokenize", "--vault", d.vars["WARD_VAULT"], "--svid-dir", filepath.Join(d.dir, "shop", shop.Orders), "--type", "pan", "--token", d.order.CardToken)
	refused := rerr != nil && strings.Contains(rerr.Error(), "403")
	s.Got = fmt.Sprintf("%d of %d files hold the number; token %s in orders.jsonl: %s, in charges.jsonl: %s; orders' reveal: %s",
		len(hits), files, maskToken(d.order.CardToken), yesNo(tokenIn["orders.jsonl"]), yesNo(tokenIn["charges.jsonl"]), errSummary(rerr))
	if len(hits) > 0 {
		s.Got += fmt.Sprintf(" (%s)", strings.Join(hits, ", "))
	}
	s.OK = len(hits) == 0 && files > 0 && d.order.CardToken != "" && d.order.CardToken != pan && tokenIn["orders.jsonl"] && tokenIn["charges.jsonl"] && refused
	return s
}

// fmtDur prints a short duration readably (0.4ms, 12ms, 1.2s).
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(100 * time.Millisecond).String()
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func maskToken(t string) string {
	if len(t) < 8 {
		return t
	}
	return t[:4] + "…" + t[len(t)-4:]
}

func errSummary(err error) string {
	if err == nil {
		return "revealed"
	}
	s := err.Error()
	if strings.Contains(s, "403") {
		return "refused (403)"
	}
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	return s
}

func (d *demo) stepAuditTrail(ctx context.Context, trail *[]audit.Event) demoStep {
	s := demoStep{Name: "audit trail", Attempt: "query the order's events by its correlation ID and verify the hash chains and signed checkpoints",
		Expected: "events from the gateway, orders, inventory, payments, the vault and shipping; verification ok", Concept: "docs/concepts/audit.md"}
	if d.cid == "" {
		s.Got = "no correlation ID (step 1 failed)"
		return s
	}
	want := []string{"ward-gateway", shop.Orders, shop.Inventory, shop.Payments, "vault", shop.Shipping}
	var rows []struct {
		Event audit.Event `json:"event"`
	}
	err := retry(ctx, 20*time.Second, "the trail is stored", func() error {
		rows = nil
		if err := d.wardJSON(ctx, &rows, "audit", "query", "--db", d.vars["WARD_AUDIT_DB"], "--correlation-id", d.cid); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, r := range rows {
			seen[r.Event.Service] = true
		}
		for _, w := range want {
			if !seen[w] {
				return fmt.Errorf("no event from %s yet", w)
			}
		}
		return nil
	})
	for _, r := range rows {
		*trail = append(*trail, r.Event)
	}
	if err != nil {
		s.Got = err.Error()
		return s
	}
	key, err := readBounded(filepath.Join(filepath.Dir(d.vars["WARD_AUDIT_DB"]), "audit-checkpoint.key.pub"), 4<<10)
	if err != nil {
		s.Got = err.Error()
		return s
	}
	var res struct {
		Events      int64
		Checkpoints int
		Broken      string
	}
	if err := d.wardJSON(ctx, &res, "audit", "verify", "--db", d.vars["WARD_AUDIT_DB"], "--key", strings.TrimSpace(string(key))); err != nil {
		s.Got = fmt.Sprintf("%d events; verify: %v", len(rows), err)
		return s
	}
	services := map[string]int{}
	for _, r := range rows {
		services[r.Event.Service]++
	}
	s.Got = fmt.Sprintf("%d events from %d services (listed below); verify: %d events, %d signed checkpoints, no broken link", len(rows), len(services), res.Events, res.Checkpoints)
	s.OK = res.Broken == "" && res.Events >= int64(len(rows))
	return s
}

// writeDemoEnv writes DIR/demo.env for --keep: the shop's addresses and a
// new customer key (alice's was revoked by the tour).
func (d *demo) writeDemoEnv(ctx context.Context) error {
	var k apiKey
	if err := d.wardJSON(ctx, &k, "apikey", "create", "--subject", "carol", "--tenant", "demo", "--scope", "orders.create", "--meta", "roles=customer"); err != nil {
		return err
	}
	return writeEnvFile(filepath.Join(d.dir, "demo.env"), map[string]string{
		"WARD_DEMO_KEY": k.Key, "WARD_SHOP_ORDERS": "https://" + d.orders, "WARD_SHOP_INVENTORY": "https://" + d.inventory,
		"WARD_SHOP_PAYMENTS": "https://" + d.payments, "WARD_SHOP_SHIPPING": "https://" + d.shippingIn,
		"WARD_SHOP_SHIPPING_EGRESS": "http://" + d.shippingEgress, "WARD_SHOP_DIR": filepath.Join(d.dir, "shop")})
}

// printDemo writes the tour as a table, then the order's audit trail.
func printDemo(w io.Writer, rep demoReport) {
	rows := make([][]string, 0, len(rep.Steps))
	for _, s := range rep.Steps {
		mark := "yes"
		if !s.OK {
			mark = "NO"
		}
		rows = append(rows, []string{fmt.Sprint(s.N), s.Name, s.Attempt, s.Expected, s.Got, mark})
	}
	fmt.Fprintln(w)
	wrapTable(w, []string{"#", "STEP", "ATTEMPTED", "EXPECTED", "HAPPENED", "OK"}, []int{2, 14, 36, 36, 46, 3}, rows)
	if len(rep.Trail) > 0 {
		fmt.Fprintf(w, "\nThe order's audit trail (correlation ID %s):\n", rep.Trail[0].CorrelationID)
		trows := make([][]string, 0, len(rep.Trail))
		for _, e := range rep.Trail {
			trows = append(trows, []string{e.Time.Format("15:04:05.000"), e.Service, e.Kind, e.Caller, e.User, e.Action + " " + e.Resource, e.Decision, e.Reason})
		}
		table(w, []string{"TIME", "SERVICE", "KIND", "CALLER", "USER", "ACTION", "DECISION", "REASON"}, trows)
	}
	keys := make([]string, 0, len(rep.Services))
	for k := range rep.Services {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(w)
	for _, k := range keys {
		fmt.Fprintf(w, "%-20s %v\n", k, rep.Services[k])
	}
	verdict := "every step behaved as expected"
	if !rep.Passed {
		verdict = "SOME STEPS DID NOT BEHAVE AS EXPECTED"
	}
	fmt.Fprintf(w, "\nward demo: %s (%s)\n", verdict, rep.Elapsed)
}

// wrapTable writes rows as a table whose cells are wrapped at word
// boundaries to the column widths; rows are separated by a blank line.
func wrapTable(w io.Writer, header []string, widths []int, rows [][]string) {
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			if i == len(cells)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", max(0, widths[i]-len([]rune(c)))+2))
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(header)
	for _, r := range rows {
		wrapped := make([][]string, len(r))
		n := 1
		for i, c := range r {
			wrapped[i] = wrapWords(c, widths[i])
			n = max(n, len(wrapped[i]))
		}
		for k := range n {
			cells := make([]string, len(r))
			for i := range r {
				if k < len(wrapped[i]) {
					cells[i] = wrapped[i][k]
				}
			}
			line(cells)
		}
		fmt.Fprintln(w)
	}
}

// wrapWords splits s into lines of at most width runes, at spaces where it
// can.
func wrapWords(s string, width int) []string {
	var out []string
	var cur []rune
	for _, word := range strings.Fields(s) {
		wr := []rune(word)
		for len(wr) > width { // a word longer than the column
			if len(cur) > 0 {
				out = append(out, string(cur))
				cur = nil
			}
			out = append(out, string(wr[:width]))
			wr = wr[width:]
		}
		switch {
		case len(cur) == 0:
			cur = wr
		case len(cur)+1+len(wr) <= width:
			cur = append(append(cur, ' '), wr...)
		default:
			out = append(out, string(cur))
			cur = wr
		}
	}
	if len(cur) > 0 || len(out) == 0 {
		out = append(out, string(cur))
	}
	return out
}
