package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/audit/agent"
	"github.com/wardsec/ward/internal/authority"
	"github.com/wardsec/ward/internal/bus"
	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/internal/telemetry"
)

func newAuthorityCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "authority", Short: "Initialise and run the control plane"}
	var td string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create the trust domain: root CA, intermediate, signing key and the bootstrap admin token (printed once)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := LoadConfig(g.configPath, os.Getenv)
			if err != nil {
				return err
			}
			if td != "" {
				cfg.TrustDomain = td
			}
			res, err := initAuthority(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return g.print(map[string]string{
				"trust_domain":     res.TrustDomain.Name(),
				"admin_token":      res.AdminToken,
				"root_fingerprint": res.RootFingerprint,
				"bundle_file":      bundlePath(cfg),
			}, func(w io.Writer) {
				fmt.Fprintf(w, "trust domain:      %s\n", res.TrustDomain.Name())
				fmt.Fprintf(w, "root fingerprint:  %s\n", res.RootFingerprint)
				fmt.Fprintf(w, "trust bundle:      %s\n", bundlePath(cfg))
				fmt.Fprintf(w, "admin token:       %s\n", res.AdminToken)
				fmt.Fprintln(w, "The admin token is shown only now. Store it in a secret manager.")
			})
		},
	}
	initCmd.Flags().StringVar(&td, "trust-domain", "", "SPIFFE trust domain (default from config, else ward.test)")
	runCmd := &cobra.Command{
		Use:   "run",
		Short: "Serve the authority (HTTPS admin, issuance, OCSP, CRL, watch stream)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := g.serverConfig()
			if err != nil {
				return err
			}
			p, err := startControlPlane(cmd.Context(), cfg, log, false)
			if err != nil {
				return err
			}
			defer p.close()
			return p.run(cmd.Context())
		},
	}
	cmd.AddCommand(initCmd, runCmd)
	return cmd
}

func bundlePath(cfg *Config) string { return filepath.Join(cfg.DataDir, "bundle.pem") }

// initAuthority runs authority.Init against the configured store and KMS and
// writes the trust bundle next to the data.
func initAuthority(ctx context.Context, cfg *Config) (authority.InitResult, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return authority.InitResult{}, usageError{fmt.Errorf("invalid trust domain %q: %v", cfg.TrustDomain, err)}
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return authority.InitResult{}, err
	}
	defer st.Close()
	k, err := openKMS(ctx, cfg, st, true)
	if err != nil {
		return authority.InitResult{}, err
	}
	res, err := authority.Init(ctx, st, k, authority.InitOptions{TrustDomain: td})
	if err != nil {
		return authority.InitResult{}, err
	}
	if err := writeFileAtomic(bundlePath(cfg), res.RootPEM, 0o644); err != nil {
		return res, err
	}
	return res, nil
}

// controlPlane is a running authority with its bus.
type controlPlane struct {
	cfg    *Config
	log    *slog.Logger
	store  *store.Store
	auth   *authority.Authority
	nats   *bus.Server // nil with an external bus
	conn   *bus.Conn
	ln     net.Listener
	busURL string
	// components are the in-process SVIDs of ward's own parts (bus client,
	// embedded NATS server), refreshed in the background.
	components []*componentCert
	auditW     *audit.Writer  // the authority's audit events
	edge       *componentCert // ward dev: the gateway's external certificate
	auditCert  *componentCert // ward dev: the audit collector's bus identity
	agentCert  *componentCert // ward dev: the audit agent's bus identity
}

// startControlPlane opens the store and KMS, loads the authority, connects
// the bus (embedded when no URL is configured, or always with dev) and
// binds the listener.
func startControlPlane(ctx context.Context, cfg *Config, log *slog.Logger, dev bool) (*controlPlane, error) {
	p := &controlPlane{cfg: cfg, log: log}
	ok := false
	defer func() {
		if !ok {
			p.close()
		}
	}()
	var err error
	if p.store, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	inited, err := authority.Initialized(ctx, p.store)
	if err != nil {
		return nil, err
	}
	if !inited {
		return nil, errors.New("authority not initialised: run `ward authority init` first")
	}
	k, err := openKMS(ctx, cfg, p.store, false)
	if err != nil {
		return nil, err
	}
	ttls, err := cfg.svidTTLs()
	if err != nil {
		return nil, err
	}
	if p.ln, err = net.Listen("tcp", cfg.Authority.Listen); err != nil {
		return nil, fmt.Errorf("authority listen %s: %w", cfg.Authority.Listen, err)
	}
	if cfg.Authority.PublicURL == "https://"+cfg.Authority.Listen {
		// Derived URL: name the bound address (resolves port 0).
		cfg.Authority.PublicURL = "https://" + p.ln.Addr().String()
	}
	lb := &lateBus{}
	// The authority's audit events go to the local audit directory, which
	// the host's agent ships (ward dev's embedded one).
	if p.auditW, err = audit.NewWriter(audit.Config{Dir: cfg.Audit.Dir, Service: "ward-authority"}); err != nil {
		return nil, fmt.Errorf("authority audit: %w", err)
	}
	reg := telemetry.NewRegistry()
	reg.MustRegister(auditDropMetric(p.auditW))
	p.auth, err = authority.New(ctx, authority.Config{
		Audit:     p.auditW,
		Store:     p.store,
		KMS:       k,
		Bus:       lb,
		PublicURL: cfg.Authority.PublicURL,
		Hostnames: cfg.Authority.Hostnames,
		Logger:    log,
		Registry:  reg,
		SVIDTTL:   ttls,

		AuthFailureBurst: cfg.Authority.AuthFailureBurst,
	})
	if errors.Is(err, kms.ErrDecrypt) {
		return nil, fmt.Errorf("cannot unseal the CA keys: wrong key-encryption key (kms.kek_file or passphrase) for this store (%w)", err)
	}
	if err != nil {
		return nil, err
	}
	serving := p.auth.ServerTLSConfig()
	p.components = []*componentCert{{a: p.auth, name: "authority", serving: serving}}
	busTLS, err := componentTLS(p.components[0])
	if err != nil {
		return nil, err
	}
	url := cfg.Bus.URL
	if dev || url == "" {
		natsCert := &componentCert{a: p.auth, name: "nats", serving: serving}
		p.components = append(p.components, natsCert)
		natsTLS, err := componentTLS(natsCert)
		if err != nil {
			return nil, err
		}
		// Only ward components of this trust domain may join the bus:
		// natsTLS requires a client certificate and verifies it in
		// VerifyConnection against the live trust bundle (so a root
		// rotation needs no restart), requiring spiffe://<td>/ward/….
		p.nats, err = bus.StartEmbedded(bus.EmbeddedConfig{
			Host:        "127.0.0.1",
			Port:        0,
			TLS:         natsTLS,
			StoreDir:    filepath.Join(cfg.DataDir, "nats"),
			Permissions: busPermissions(p.auth.TrustDomain().Name(), devAgentHost(cfg)),
		})
		if err != nil {
			return nil, err
		}
		url = p.nats.ClientURL()
	} else if plain, err := plaintextBusOK(url); err != nil {
		return nil, err
	} else if plain {
		log.Warn("bus: plaintext NATS connection (allowed on loopback only); use tls:// in production", "url", url)
		busTLS = nil
	} else if cfg.Bus.CAFile != "" {
		data, err := os.ReadFile(cfg.Bus.CAFile)
		if err != nil {
			return nil, fmt.Errorf("bus.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("bus.ca_file %s holds no PEM certificates", cfg.Bus.CAFile)
		}
		busTLS.RootCAs = pool
		busTLS.InsecureSkipVerify = false
		busTLS.VerifyConnection = nil
	}
	p.busURL = url
	if p.conn, err = bus.Connect(ctx, url, busTLS, "ward-authority"); err != nil {
		return nil, err
	}
	if err := lb.attach(p.conn); err != nil {
		return nil, err
	}
	ok = true
	return p, nil
}

// devAgentHost is the host name ward dev's embedded agent publishes as.
func devAgentHost(cfg *Config) string {
	if cfg.Audit.Host != "" {
		return cfg.Audit.Host
	}
	h, _ := os.Hostname()
	return h
}

// busPermissions is least privilege on the embedded bus (seed 002, rule
// 5): each ward component identity may publish and subscribe only where
// its job needs; any other certificate is refused. An agent bound to a
// host (spiffe://<td>/ward/agent/<host>) may publish only that host's
// audit subjects; ward dev's own agent (spiffe://<td>/ward/agent) only
// devHost's.
func busPermissions(td, devHost string) func(spiffeid.ID) (bus.Permissions, bool) {
	auditStream := []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.WARD_AUDIT", "$JS.API.STREAM.CREATE.WARD_AUDIT", "$JS.API.STREAM.UPDATE.WARD_AUDIT"}
	agentPerms := func(host string) bus.Permissions {
		return bus.Permissions{
			Publish:   append([]string{agent.SubjectEventsPrefix + host, agent.SubjectHeartbeatPrefix + host}, auditStream...),
			Subscribe: []string{"_INBOX.>"},
		}
	}
	return func(id spiffeid.ID) (bus.Permissions, bool) {
		if id.TrustDomain().Name() != td {
			return bus.Permissions{}, false
		}
		switch path := id.Path(); {
		case path == "/ward/authority": // replicas' change log, credential revocation feed
			return bus.Permissions{
				Publish:   []string{bus.SubjectEvents, bus.SubjectCredentialRevocations},
				Subscribe: []string{bus.SubjectEvents, bus.SubjectCredentialRevocations, "_INBOX.>"},
			}, true
		case path == "/ward/agent":
			return agentPerms(agent.SubjectToken(devHost)), true
		case strings.HasPrefix(path, "/ward/agent/"):
			host := strings.TrimPrefix(path, "/ward/agent/")
			if host == "" || strings.ContainsAny(host, "/.*> ") {
				return bus.Permissions{}, false
			}
			return agentPerms(host), true
		case path == "/ward/audit": // the collector's durable consumer
			return bus.Permissions{
				Publish: append([]string{"$JS.API.CONSUMER.*.WARD_AUDIT.>", "$JS.API.CONSUMER.DURABLE.CREATE.WARD_AUDIT.>",
					"$JS.API.CONSUMER.MSG.NEXT.WARD_AUDIT.>", "$JS.ACK.WARD_AUDIT.>"}, auditStream...),
				Subscribe: []string{"_INBOX.>"},
			}, true
		}
		return bus.Permissions{}, false
	}
}

func (p *controlPlane) run(ctx context.Context) error {
	p.log.Info("authority serving", "addr", p.ln.Addr().String(), "public_url", p.cfg.Authority.PublicURL,
		"trust_domain", p.auth.TrustDomain().Name(), "store", p.store.Backend(), "bus", p.busURL)
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return p.auth.Serve(ctx, p.ln) })
	eg.Go(func() error { return p.syncBundleFile(ctx) })
	for _, c := range p.components {
		eg.Go(func() error { return c.refresh(ctx, 5*time.Second, p.log) })
	}
	return eg.Wait()
}

func (p *controlPlane) close() {
	if p.auth != nil {
		_ = p.auth.Close()
	}
	if p.auditW != nil {
		_ = p.auditW.Close()
	}
	if p.conn != nil {
		p.conn.Close()
	}
	if p.nats != nil {
		p.nats.Shutdown()
	}
	if p.ln != nil {
		_ = p.ln.Close()
	}
	if p.store != nil {
		_ = p.store.Close()
	}
}

// plaintextBusOK reports whether url asks for a plaintext NATS connection
// (nats://), which is refused unless the host is a loopback address: the bus
// carries the authority's change notifications and must not be spoofable
// from the network.
func plaintextBusOK(raw string) (bool, error) {
	u, err := neturl.Parse(raw)
	if err != nil {
		return false, fmt.Errorf("bus.url: %w", err)
	}
	switch u.Scheme {
	case "tls":
		return false, nil
	case "nats":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return true, nil
		}
		return false, fmt.Errorf("bus.url %s: plaintext nats:// is allowed only on loopback; use tls://", u.Redacted())
	default:
		return false, fmt.Errorf("bus.url %s: scheme must be tls:// (or nats:// on loopback)", u.Redacted())
	}
}
