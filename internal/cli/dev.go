package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/wardsec/ward/internal/atomicfile"
	"github.com/wardsec/ward/internal/authority"
)

func newDevCmd(g *globals) *cobra.Command {
	var dataDir, listen, td, gatewayListen, vaultListen string
	withVault := true
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the authority, an embedded NATS and SQLite in one process for development",
		Long: `ward dev runs the whole control plane in one process under --data DIR:
SQLite store, KEK file, embedded NATS (TLS, loopback, random port) and the
authority on --listen. It writes DIR/dev.env; "source DIR/dev.env" makes every
CLI command work. Restarting on the same directory keeps all state.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			env := func(k string) string {
				// WARD_BUS_URL from a sourced dev.env points at a previous
				// embedded bus; dev always runs its own.
				switch k {
				case "WARD_BUS_URL", "WARD_AUDIT_DIR", "WARD_AUDIT_DB", "WARD_VAULT", "SPIFFE_ENDPOINT_SOCKET":
					return ""
				}
				return os.Getenv(k)
			}
			cfg, err := LoadConfig(g.configPath, env)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("data") || os.Getenv("WARD_DATA_DIR") == "" {
				cfg.DataDir = dataDir
				cfg.Store.DSN = filepath.Join(dataDir, "ward.db")
				cfg.KMS.KEKFile = filepath.Join(dataDir, "kek")
				cfg.KMS.PassphraseEnv = ""
			}
			if cmd.Flags().Changed("listen") || os.Getenv("WARD_AUTHORITY_LISTEN") == "" {
				cfg.Authority.Listen = listen
				cfg.Authority.PublicURL = "https://" + listen
			}
			if td != "" {
				cfg.TrustDomain = td
			}
			if cmd.Flags().Changed("gateway-listen") || os.Getenv("WARD_GATEWAY_LISTEN") == "" {
				cfg.Gateway.Listen = gatewayListen
			}
			cfg.Gateway.AuthorityURL = cfg.Authority.PublicURL
			// The audit pipeline lives in the data directory too.
			cfg.Audit.Dir, cfg.Audit.DB, cfg.Audit.KeyFile = "", "", ""
			cfg.Audit.defaults(cfg)
			cfg.Gateway.CABundle = bundlePath(cfg)
			cfg.Gateway.StateDir = filepath.Join(cfg.DataDir, "gateway")
			if !withVault {
				vaultListen = ""
			}
			return runDev(cmd.Context(), g, cfg, vaultListen)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "ward-data", "data directory (state survives restarts)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8443", "authority listen address")
	cmd.Flags().StringVar(&gatewayListen, "gateway-listen", "127.0.0.1:9443", "edge gateway listen address")
	cmd.Flags().StringVar(&vaultListen, "vault-listen", "127.0.0.1:9445", "PII vault listen address")
	cmd.Flags().BoolVar(&withVault, "vault", true, "run the PII vault (the L3 service \"vault\"; its 15-minute SVIDs hold a retiring root until they expire)")
	cmd.Flags().StringVar(&td, "trust-domain", "", "trust domain for a new data directory (default ward.test)")
	return cmd
}

func runDev(ctx context.Context, g *globals, cfg *Config, vaultListen string) error {
	envPath := filepath.Join(cfg.DataDir, "dev.env")
	prev, err := readEnvFile(envPath)
	if err != nil {
		return err
	}
	adminToken := prev["WARD_ADMIN_TOKEN"]
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	inited, err := authority.Initialized(ctx, st)
	_ = st.Close()
	if err != nil {
		return err
	}
	if !inited {
		res, err := initAuthority(ctx, cfg)
		if err != nil {
			return err
		}
		adminToken = res.AdminToken
		fmt.Fprintf(g.stderr, "ward dev: initialised trust domain %s in %s\n", res.TrustDomain.Name(), cfg.DataDir)
	} else if adminToken == "" {
		return fmt.Errorf("%s is initialised but %s has no WARD_ADMIN_TOKEN; restore dev.env or start with a new --data directory", cfg.DataDir, envPath)
	}
	logger, err := g.logger(cfg)
	if err != nil {
		return err
	}
	p, err := startControlPlane(ctx, cfg, logger, true)
	if err != nil {
		return err
	}
	defer p.close()
	gwLn, err := net.Listen("tcp", cfg.Gateway.Listen)
	if err != nil {
		return fmt.Errorf("gateway listen %s: %w", cfg.Gateway.Listen, err)
	}
	defer gwLn.Close()
	sockPath, err := filepath.Abs(filepath.Join(cfg.DataDir, "agent.sock"))
	if err != nil {
		return err
	}
	wlLn, err := listenWorkloadSocket(sockPath)
	if err != nil {
		return err
	}
	defer wlLn.Close()
	var vaultLn net.Listener
	if vaultListen != "" {
		if vaultLn, err = net.Listen("tcp", vaultListen); err != nil {
			return fmt.Errorf("vault listen %s: %w", vaultListen, err)
		}
		defer vaultLn.Close()
	}
	if err := writeFileAtomic(bundlePath(cfg), p.auth.BundlePEM(), 0o644); err != nil {
		return err
	}
	absBundle, err := filepath.Abs(bundlePath(cfg))
	if err != nil {
		return err
	}
	vars := map[string]string{
		"WARD_AUTHORITY":    cfg.Authority.PublicURL,
		"WARD_CA_BUNDLE":    absBundle,
		"WARD_ADMIN_TOKEN":  adminToken,
		"WARD_TRUST_DOMAIN": p.auth.TrustDomain().Name(),
		"WARD_NATS_URL":     p.busURL,
		"WARD_GATEWAY":      "https://" + gwLn.Addr().String(),
	}
	if vaultLn != nil {
		vars["WARD_VAULT"] = "https://" + vaultLn.Addr().String()
	}
	vars["SPIFFE_ENDPOINT_SOCKET"] = "unix://" + sockPath
	for k, path := range map[string]string{"WARD_AUDIT_DIR": cfg.Audit.Dir, "WARD_AUDIT_DB": cfg.Audit.DB} {
		abs, err := filepath.Abs(path)
		if err != nil {
			return err
		}
		vars[k] = abs
	}
	if err := os.MkdirAll(cfg.Audit.Dir, 0o700); err != nil {
		return err
	}
	if err := writeEnvFile(envPath, vars); err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "ward dev: authority on %s, gateway on %s, NATS on %s\nward dev: run `source %s` to use the CLI\n",
		cfg.Authority.PublicURL, vars["WARD_GATEWAY"], p.busURL, envPath)
	logger.Info("dev environment ready", "env_file", envPath)
	// The gateway's external certificate, refreshed with the other
	// in-process component certificates (it follows CA rotations).
	p.edge = &componentCert{a: p.auth, name: "edge", serving: p.auth.ServerTLSConfig()}
	p.auditCert = &componentCert{a: p.auth, name: "audit", serving: p.auth.ServerTLSConfig()}
	p.agentCert = &componentCert{a: p.auth, name: "agent", serving: p.auth.ServerTLSConfig()}
	p.components = append(p.components, p.edge, p.auditCert, p.agentCert)
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return p.run(ctx) })
	eg.Go(func() error { return p.runDevGateway(ctx, gwLn) })
	eg.Go(func() error { return p.runDevAudit(ctx) })
	if vaultLn != nil {
		eg.Go(func() error { return p.runDevVault(ctx, g, vaultLn, adminToken, absBundle) })
	}
	eg.Go(func() error { return p.runDevWorkloadAPI(ctx, wlLn) })
	return eg.Wait()
}

// runDevGateway runs the edge gateway of ward dev in-process, exactly as
// ward gateway run does (its own SVID from a component bootstrap token,
// routes and keys from the authority over HTTPS); only its external
// certificate comes from the authority directly (DNS localhost, IP
// 127.0.0.1, chaining to the trust bundle in WARD_CA_BUNDLE).
func (p *controlPlane) runDevGateway(ctx context.Context, ln net.Listener) error {
	token, err := p.auth.CreateComponentToken(ctx, "gateway", time.Hour)
	if err != nil {
		return fmt.Errorf("gateway bootstrap token: %w", err)
	}
	edge := p.edge
	gr := gatewayRun{
		cfg:          p.cfg,
		authorityURL: p.cfg.Authority.PublicURL,
		token:        token,
		bundleFile:   bundlePath(p.cfg),
		stateDir:     p.cfg.Gateway.StateDir,
		certificate:  func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return edge.get() },
		log:          p.log,
	}
	return gr.run(ctx, ln)
}

// syncBundleFile keeps <data>/bundle.pem equal to the authority's current
// trust bundle, so CLI clients keep trusting it across root rotations.
func (p *controlPlane) syncBundleFile(ctx context.Context) error {
	path := bundlePath(p.cfg)
	last := p.auth.BundlePEM()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			cur := p.auth.BundlePEM()
			if bytes.Equal(cur, last) {
				continue
			}
			if err := writeFileAtomic(path, cur, 0o644); err != nil {
				p.log.Warn("trust bundle file not updated", "path", path, "error", err)
				continue
			}
			last = cur
		}
	}
}

// readEnvFile parses KEY=VALUE lines (as written by writeEnvFile); a missing
// file is an empty map.
func readEnvFile(path string) (map[string]string, error) {
	out := map[string]string{}
	data, err := readBounded(path, 64<<10)
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		out[k] = strings.Trim(v, "'\"")
	}
	return out, sc.Err()
}

// writeEnvFile writes vars as shell-sourceable export lines, mode 0600 (it
// holds the admin token).
func writeEnvFile(path string, vars map[string]string) error {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteString("# Written by `ward dev`. Holds the development admin token: keep it private.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "export %s='%s'\n", k, strings.ReplaceAll(vars[k], "'", ""))
	}
	return writeFileAtomic(path, b.Bytes(), 0o600)
}

// writeFileAtomic writes data to a temporary file beside path and renames it
// into place, so readers never see a partial file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	return atomicfile.Write(path, data, mode)
}
