package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/credential"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/gateway"
	"github.com/wardsec/ward/internal/telemetry"
	"github.com/wardsec/ward/pdp"
)

func newGatewayCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "The edge gateway: external credentials stop here, a signed passport travels inside",
	}
	var listen string
	run := &cobra.Command{
		Use:   "run",
		Short: "Run the edge gateway (HTTPS for external clients, mTLS to services)",
		Long: `ward gateway run serves external HTTPS on gateway.listen. It obtains its SVID
(spiffe://<td>/ward/gateway) with the bootstrap token in WARD_GATEWAY_TOKEN (make
one with "ward gateway token"), keeps it in gateway.state_dir, and learns its
routes, revocations and key set from the authority: it needs no admin token.
The external certificate comes from gateway.tls_cert and gateway.tls_key.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := g.serverConfig()
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("listen") {
				cfg.Gateway.Listen = listen
			}
			if cfg.Gateway.TLSCert == "" || cfg.Gateway.TLSKey == "" {
				return usageError{errors.New("gateway.tls_cert and gateway.tls_key (env WARD_GATEWAY_TLS_CERT, WARD_GATEWAY_TLS_KEY) are required")}
			}
			cert, err := tls.LoadX509KeyPair(cfg.Gateway.TLSCert, cfg.Gateway.TLSKey)
			if err != nil {
				return fmt.Errorf("gateway certificate: %w", err)
			}
			ln, err := net.Listen("tcp", cfg.Gateway.Listen)
			if err != nil {
				return fmt.Errorf("gateway listen %s: %w", cfg.Gateway.Listen, err)
			}
			defer ln.Close()
			gc := gatewayRun{
				cfg:          cfg,
				authorityURL: cfg.Gateway.AuthorityURL,
				token:        os.Getenv("WARD_GATEWAY_TOKEN"),
				bundleFile:   cfg.Gateway.CABundle,
				stateDir:     cfg.Gateway.StateDir,
				certificate:  func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil },
				log:          logger,
			}
			return gc.run(cmd.Context(), ln)
		},
	}
	run.Flags().StringVar(&listen, "listen", "", "external HTTPS address (default gateway.listen, 127.0.0.1:9443)")
	var ttl string
	token := &cobra.Command{
		Use:   "token [--ttl 24h]",
		Short: "Create a bootstrap token for a gateway (printed once): WARD_GATEWAY_TOKEN of ward gateway run",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.componentToken(cmd, "gateway", ttl, "")
		},
	}
	token.Flags().StringVar(&ttl, "ttl", "", "lifetime of the token (default 24h)")
	cmd.AddCommand(run, token)
	return cmd
}

// gatewayRun is one gateway process: its identity Source, the gateway and
// its listener. ward gateway run and ward dev share it.
type gatewayRun struct {
	cfg          *Config
	authorityURL string
	token        string
	bundleFile   string
	stateDir     string
	certificate  func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	log          *slog.Logger
	ready        func(*gateway.Gateway) // tests and dev
}

// run obtains the gateway's SVID (retrying while the authority is not
// up), starts the gateway and serves ln until ctx ends.
func (gr gatewayRun) run(ctx context.Context, ln net.Listener) error {
	gcfg := gr.cfg.Gateway
	opts, err := gcfg.options()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(gr.stateDir, 0o700); err != nil {
		return fmt.Errorf("gateway state dir: %w", err)
	}
	idcfg := identity.Config{AuthorityURL: gr.authorityURL, BootstrapToken: gr.token, BundleFile: gr.bundleFile,
		Dir: gr.stateDir, Logger: gr.log.With("component", "gateway")}
	var src *identity.Source
	for backoff := 200 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		src, err = identity.New(ctx, idcfg)
		if err == nil {
			break
		}
		var ae *identity.AuthorityError
		if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusTooManyRequests {
			return fmt.Errorf("gateway identity: %w", err)
		}
		gr.log.Warn("gateway identity not obtained yet; retrying", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srcDone := make(chan error, 1)
	go func() { srcDone <- src.Run(ctx) }()

	// Every request is audited locally (audit.dir); the host's agent
	// ships the file.
	aw, err := audit.NewWriter(audit.Config{Dir: gr.cfg.Audit.Dir, Service: "ward-gateway", Instance: src.SVID().Certificates[0].Subject.SerialNumber})
	if err != nil {
		return fmt.Errorf("gateway audit: %w", err)
	}
	defer aw.Close()
	opts.Audit = aw
	// The "edge" policy domain is the route-level check; until it has a
	// version, what passed the route's scopes is admitted.
	edge, err := pdp.NewForSource(src, pdp.Config{CacheDir: filepath.Join(gr.stateDir, "policy"), Logger: gr.log.With("component", "gateway")})
	if err != nil {
		return fmt.Errorf("gateway policy: %w", err)
	}
	pdpDone := make(chan struct{})
	go func() { defer close(pdpDone); _ = edge.Run(ctx) }()
	defer func() { cancel(); <-pdpDone }()
	opts.Policy = gateway.EdgePolicy{PDP: edge}
	opts.Source = src
	opts.Certificate = gr.certificate
	opts.Logger = gr.log.With("component", "gateway")
	opts.Registry = telemetry.NewRegistry()
	opts.Registry.MustRegister(auditDropMetric(aw))
	gw, err := gateway.New(opts)
	if err != nil {
		return err
	}
	defer gw.Close()
	if err := gw.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if gr.ready != nil {
		gr.ready(gw)
	}
	gr.log.Info("gateway serving", "addr", ln.Addr().String(), "spiffe_id", src.ID().String())
	err = gw.Serve(ctx, ln)
	cancel()
	if serr := <-srcDone; err == nil && serr != nil && !errors.Is(serr, context.Canceled) {
		err = serr
	}
	return err
}

// auditDropMetric exposes a writer's dropped events as
// ward_audit_events_dropped_total{writer}: drops are never silent.
func auditDropMetric(w *audit.Writer) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "ward_audit_events_dropped_total",
		Help:        "Audit events the local writer had to drop (its buffer stayed full); each drop is also reported as an audit.dropped event.",
		ConstLabels: prometheus.Labels{"writer": filepath.Base(w.Path())},
	}, func() float64 { return float64(w.Dropped()) })
}

// GatewayConfig is the gateway section of the config file.
type GatewayConfig struct {
	// Listen is the external HTTPS address (default 127.0.0.1:9443). Env WARD_GATEWAY_LISTEN.
	Listen string `yaml:"listen"`
	// AuthorityURL is the authority's public URL (default
	// authority.public_url). Env WARD_AUTHORITY.
	AuthorityURL string `yaml:"authority_url"`
	// CABundle verifies the authority on first contact (default
	// <data_dir>/bundle.pem). Env WARD_CA_BUNDLE.
	CABundle string `yaml:"ca_bundle"`
	// StateDir keeps the gateway's SVID (default <data_dir>/gateway).
	StateDir string `yaml:"state_dir"`
	// TLSCert and TLSKey are the external listener's certificate and key
	// (PEM files). Env WARD_GATEWAY_TLS_CERT, WARD_GATEWAY_TLS_KEY.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// PartnerCAFile holds the CAs of partner client certificates
	// (credential kind mtls); empty refuses them.
	PartnerCAFile string `yaml:"partner_ca_file"`
	// ExternalIssuers are trusted OpenID Connect issuers (kind oidc).
	ExternalIssuers []struct {
		URL      string `yaml:"url"`
		Audience string `yaml:"audience"`
		JWKSURL  string `yaml:"jwks_url"`
	} `yaml:"external_issuers"`
	// PassportTTL is a passport's lifetime (default 30s, at most 60s).
	// Env WARD_GATEWAY_PASSPORT_TTL.
	PassportTTL string `yaml:"passport_ttl"`
	// CacheMaxTTL caps how long a verified credential is cached (default 60s).
	CacheMaxTTL string `yaml:"cache_max_ttl"`
	// PreAuthRate and PreAuthBurst limit requests per client address
	// before authentication (default 50/s, burst 100).
	PreAuthRate  float64 `yaml:"pre_auth_rate"`
	PreAuthBurst int     `yaml:"pre_auth_burst"`
	// RouteRate and RouteBurst are the per-caller limits of routes that
	// set none (default 100/s, burst 200).
	RouteRate  float64 `yaml:"route_rate"`
	RouteBurst int     `yaml:"route_burst"`
	// MaxBodyBytes bounds request bodies (default 10 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// options turns the config section into gateway.Config (without Source,
// Certificate, Logger).
func (c GatewayConfig) options() (gateway.Config, error) {
	o := gateway.Config{PreAuthRate: c.PreAuthRate, PreAuthBurst: c.PreAuthBurst, RouteRate: c.RouteRate,
		RouteBurst: c.RouteBurst, MaxBodyBytes: c.MaxBodyBytes}
	for name, p := range map[string]struct {
		s   string
		dst *time.Duration
	}{"passport_ttl": {c.PassportTTL, &o.PassportTTL}, "cache_max_ttl": {c.CacheMaxTTL, &o.CacheMaxTTL}} {
		if p.s == "" {
			continue
		}
		d, err := time.ParseDuration(p.s)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("config: gateway.%s: %q is not a positive duration", name, p.s)
		}
		*p.dst = d
	}
	for i, is := range c.ExternalIssuers {
		if is.URL == "" || is.Audience == "" {
			return o, fmt.Errorf("config: gateway.external_issuers[%d]: url and audience are required", i)
		}
		o.ExternalIssuers = append(o.ExternalIssuers, credential.Issuer{URL: is.URL, Audience: is.Audience, JWKSURL: is.JWKSURL})
	}
	if c.PartnerCAFile != "" {
		data, err := readBounded(c.PartnerCAFile, 1<<20)
		if err != nil {
			return o, fmt.Errorf("config: gateway.partner_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return o, fmt.Errorf("config: gateway.partner_ca_file %s holds no PEM certificates", c.PartnerCAFile)
		}
		o.PartnerCAs = pool
	}
	return o, nil
}

func (c *GatewayConfig) defaults(cfg *Config) {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:9443"
	}
	if c.AuthorityURL == "" {
		c.AuthorityURL = cfg.Authority.PublicURL
	}
	if c.CABundle == "" {
		c.CABundle = filepath.Join(cfg.DataDir, "bundle.pem")
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join(cfg.DataDir, "gateway")
	}
}

func newRouteCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "route",
		Short: "Gateway routes: which external paths reach which service, with which credentials",
	}
	var prefix, host, service, upstream, rateSpec, timeout string
	var scopes, creds, exposes []string
	var burst int
	var anonymous bool
	set := &cobra.Command{
		Use:   "set NAME --prefix /orders --service orders --upstream https://HOST:PORT [--scopes S] [--rate N/s]",
		Short: "Create or replace a route; records the gateway's grant for what it exposes",
		Long: `ward route set stores a route in the authority; every gateway applies it within a
second. Setting it records, in the catalogue, the gateway's grant for the
resources and actions the route exposes (--expose RESOURCE:ACTION[,ACTION]; default
everything the service provides), attributed to you; deleting the route withdraws
it. Needs an admin or security token.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if prefix == "" || service == "" || upstream == "" {
				return usageError{errors.New("--prefix, --service and --upstream are required")}
			}
			body := obj{"host": host, "prefix": prefix, "service": service, "upstream": upstream,
				"scopes": splitScopes(scopes), "anonymous": anonymous}
			if len(creds) > 0 {
				body["credentials"] = splitScopes(creds)
			}
			if rateSpec != "" || burst > 0 {
				perSecond, err := parseRate(rateSpec)
				if err != nil {
					return usageError{err}
				}
				body["rate"] = obj{"per_second": perSecond, "burst": burst}
			}
			if timeout != "" {
				body["timeout"] = timeout
			}
			if len(exposes) > 0 {
				var list []obj
				for _, e := range exposes {
					res, acts, ok := strings.Cut(e, ":")
					if !ok || res == "" || acts == "" {
						return usageError{fmt.Errorf("--expose %q: want RESOURCE:ACTION[,ACTION]", e)}
					}
					list = append(list, obj{"resource": res, "actions": strings.Split(acts, ",")})
				}
				body["exposes"] = list
			}
			_, err := g.send(cmd, http.MethodPut, "/v1/routes/"+pathEscape(args[0]), body,
				"name", "host", "prefix", "service", "upstream", "credentials", "scopes", "anonymous", "version")
			return err
		},
	}
	f := set.Flags()
	f.StringVar(&prefix, "prefix", "", "path prefix, e.g. /orders (matches /orders and /orders/…)")
	f.StringVar(&host, "host", "", "host name the route is for (default: any)")
	f.StringVar(&service, "service", "", "registered service the route forwards to (its SPIFFE ID is checked)")
	f.StringVar(&upstream, "upstream", "", "upstream address, https://HOST:PORT")
	f.StringArrayVar(&scopes, "scopes", nil, "scopes a credential must carry (space or comma separated)")
	f.StringArrayVar(&creds, "credentials", nil, "accepted credential kinds: apikey, jwt, oidc, introspection, mtls (default all but mtls)")
	f.StringVar(&rateSpec, "rate", "", "per-caller rate limit: N, N/s or N/m (default: the gateway's)")
	f.IntVar(&burst, "burst", 0, "per-caller burst (default: the rate per second)")
	f.BoolVar(&anonymous, "anonymous", false, "forward requests without a credential (with an anonymous passport)")
	f.StringArrayVar(&exposes, "expose", nil, "RESOURCE:ACTION[,ACTION] the route exposes (repeatable; default all the service provides)")
	f.StringVar(&timeout, "timeout", "", "upstream response-header timeout (default 30s)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List routes",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.getList(cmd, "/v1/routes", "name", "host", "prefix", "service", "upstream", "credentials", "scopes", "version")
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a route; withdraws the gateway's grant it recorded",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.send(cmd, http.MethodDelete, "/v1/routes/"+pathEscape(args[0]), nil, "name", "deleted_at")
			return err
		},
	}
	cmd.AddCommand(set, list, del)
	return cmd
}

// parseRate reads "N", "N/s" or "N/m" as requests per second.
func parseRate(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	num, unit, _ := strings.Cut(s, "/")
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("--rate %q: want N, N/s or N/m", s)
	}
	switch unit {
	case "", "s":
		return v, nil
	case "m":
		return v / 60, nil
	}
	return 0, fmt.Errorf("--rate %q: want N, N/s or N/m", s)
}
