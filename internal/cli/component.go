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
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/audit/agent"
	"github.com/wardsec/ward/internal/audit/redact"
	"github.com/wardsec/ward/internal/bus"
	"github.com/wardsec/ward/internal/workloadapi"
)

func newComponentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "component",
		Short: "Identities of ward's own processes (gateway, agent, audit)",
	}
	var ttl, host string
	token := &cobra.Command{
		Use:   "token gateway|agent|audit [--host H] [--ttl 24h]",
		Short: "Create a bootstrap token for a ward component (printed once)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.componentToken(cmd, args[0], ttl, host)
		},
	}
	token.Flags().StringVar(&ttl, "ttl", "", "lifetime of the token (default 24h)")
	token.Flags().StringVar(&host, "host", "", "agent: bind it to this host (spiffe://<td>/ward/agent/<host>; it may publish only this host's audit events)")
	cmd.AddCommand(token)
	return cmd
}

// componentToken asks the authority for a component's bootstrap token
// and prints it (once).
func (g *globals) componentToken(cmd *cobra.Command, component, ttl, host string) error {
	body := obj{}
	if ttl != "" {
		body["ttl"] = ttl
	}
	if host != "" {
		body["host"] = host
	}
	_, err := g.send(cmd, http.MethodPost, "/v1/components/"+pathEscape(component)+"/bootstrap-token", body, "id", "spiffe_id", "token", "expires_at")
	return err
}

// componentSource obtains a ward component's SVID with the bootstrap token
// in env tokenVar (once; later starts use the SVID kept in stateDir),
// retrying while the authority is unreachable, and runs its renewal until
// ctx ends.
func componentSource(ctx context.Context, cfg *Config, log *slog.Logger, tokenVar, stateDir string) (*identity.Source, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	idcfg := identity.Config{AuthorityURL: cfg.Gateway.AuthorityURL, BootstrapToken: os.Getenv(tokenVar),
		BundleFile: cfg.Gateway.CABundle, Dir: stateDir, Logger: log}
	for backoff := 200 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		src, err := identity.New(ctx, idcfg)
		if err == nil {
			go func() { _ = src.Run(ctx) }()
			return src, nil
		}
		var ae *identity.AuthorityError
		if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusTooManyRequests {
			return nil, fmt.Errorf("identity (bootstrap token in %s): %w", tokenVar, err)
		}
		log.Warn("identity not obtained yet; retrying", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
	}
}

// componentJetStream connects to the bus (bus.url) with the component's
// SVID: the server must be spiffe://<td>/ward/nats, or verify against
// bus.ca_file when that is set (an external NATS cluster with its own CA).
func componentJetStream(ctx context.Context, cfg *Config, src *identity.Source, name string) (jetstream.JetStream, func(), error) {
	if cfg.Bus.URL == "" {
		return nil, nil, usageError{errors.New("bus.url (WARD_BUS_URL) is required: the NATS server the audit pipeline uses")}
	}
	natsID, err := spiffeid.FromSegments(src.ID().TrustDomain(), "ward", "nats")
	if err != nil {
		return nil, nil, err
	}
	tc := src.ClientTLSConfig(identity.AuthorizeID(natsID))
	if cfg.Bus.CAFile != "" {
		data, err := readBounded(cfg.Bus.CAFile, 1<<20)
		if err != nil {
			return nil, nil, fmt.Errorf("bus.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, nil, fmt.Errorf("bus.ca_file %s holds no PEM certificates", cfg.Bus.CAFile)
		}
		tc.RootCAs, tc.InsecureSkipVerify, tc.VerifyConnection = pool, false, nil
	}
	return jetStreamOn(ctx, cfg.Bus.URL, tc, name)
}

// jetStreamOn connects to the bus at url as ward component name and
// returns its JetStream context and the connection's close.
func jetStreamOn(ctx context.Context, url string, tc *tls.Config, name string) (jetstream.JetStream, func(), error) {
	conn, err := bus.Connect(ctx, url, tc, "ward-"+name)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(conn.NATS())
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return js, conn.Close, nil
}

func newAgentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "The node agent: ships this host's audit files, serves the SPIFFE Workload API"}
	var socket string
	run := &cobra.Command{
		Use:   "run",
		Short: "Tail audit.dir, redact, and publish to the audit stream (mTLS with the agent's SVID)",
		Long: `ward agent run ships the audit files of this host (audit.dir) to NATS JetStream
(bus.url). Its identity is spiffe://<td>/ward/agent, obtained once with the bootstrap
token in WARD_AGENT_TOKEN ("ward component token agent") and kept in <data_dir>/agent.
Offsets are checkpointed in audit.dir after the broker acknowledged.

With --workload-socket it also serves the SPIFFE Workload API on that Unix socket:
local processes get the SVIDs of the registration entries they match (ward agent
entry create), identified by their uid, gid and executable.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := g.serverConfig()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			src, err := componentSource(ctx, cfg, log.With("component", "agent"), "WARD_AGENT_TOKEN", filepath.Join(cfg.DataDir, "agent"))
			if err != nil {
				return ignoreCanceled(err)
			}
			defer src.Close()
			js, closeBus, err := componentJetStream(ctx, cfg, src, "agent")
			if err != nil {
				return err
			}
			defer closeBus()
			if _, err := agent.EnsureStream(ctx, js); err != nil {
				return err
			}
			r, err := redact.New(redact.Config{Fields: cfg.Audit.RedactFields, Patterns: cfg.Audit.RedactPatterns})
			if err != nil {
				return usageError{err}
			}
			host := cfg.Audit.Host
			if h, ok := strings.CutPrefix(src.ID().Path(), "/ward/agent/"); ok {
				if host != "" && agent.SubjectToken(host) != h {
					log.Warn("audit.host differs from the host the agent's identity is bound to; using the identity's", "audit.host", host, "identity_host", h)
				}
				host = h // the broker lets it publish only this host's events
			}
			a, err := agent.New(agent.Config{Dir: cfg.Audit.Dir, Publisher: &agent.JetStream{JS: js}, Host: host,
				Container: cfg.Audit.Container, Redactor: r, Logger: log.With("component", "agent")})
			if err != nil {
				return err
			}
			log.Info("agent shipping", "dir", cfg.Audit.Dir, "subject", a.Subject(), "spiffe_id", src.ID().String())
			if socket == "" {
				return a.Run(ctx)
			}
			ln, err := listenWorkloadSocket(socket)
			if err != nil {
				return err
			}
			node, err := workloadapi.NewNode(src, log.With("component", "workload-api"))
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			errc := make(chan error, 2)
			go func() { errc <- a.Run(ctx) }()
			go func() { errc <- node.Run(ctx, ln) }()
			err = <-errc
			cancel()
			if err2 := <-errc; err == nil {
				err = err2
			}
			return err
		},
	}
	run.Flags().StringVar(&socket, "workload-socket", "", "serve the SPIFFE Workload API on this Unix socket path")
	cmd.AddCommand(run, newAgentEntryCmd(g))
	return cmd
}

// listenWorkloadSocket listens on a Unix socket path (replacing a stale
// socket file) that any local process may connect to: who gets what is
// decided by the registration entries.
func listenWorkloadSocket(path string) (net.Listener, error) {
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("workload socket: %w", err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func newAgentEntryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "entry", Short: "Registration entries: which local processes get which service's SVID from node agents"}
	var service, host, path string
	var uid, gid int
	create := &cobra.Command{
		Use:   "create --service NAME (--uid N | --gid N | --path EXE)… [--host H]",
		Short: "Give processes matching every selector the service's SVID (on every agent, or on --host's)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := obj{"service": service}
			if host != "" {
				body["host"] = host
			}
			if cmd.Flags().Changed("uid") {
				body["uid"] = uid
			}
			if cmd.Flags().Changed("gid") {
				body["gid"] = gid
			}
			if path != "" {
				body["path"] = path
			}
			_, err := g.send(cmd, http.MethodPost, "/v1/agent/entries", body, "id", "service", "spiffe_id", "host", "uid", "gid", "path")
			return err
		},
	}
	f := create.Flags()
	f.StringVar(&service, "service", "", "registered service whose SVID matching processes get")
	f.StringVar(&host, "host", "", "only on the agent of this host (default: every agent)")
	f.IntVar(&uid, "uid", 0, "the process's user ID")
	f.IntVar(&gid, "gid", 0, "the process's group ID")
	f.StringVar(&path, "path", "", "the process's executable (absolute)")
	list := &cobra.Command{
		Use: "list", Short: "List registration entries", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.getList(cmd, "/v1/agent/entries", "id", "service", "host", "uid", "gid", "path")
		},
	}
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a registration entry", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.send(cmd, http.MethodDelete, "/v1/agent/entries/"+pathEscape(args[0]), nil, "id", "deleted_at")
			return err
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

func newAuditRunCmd(g *globals, db *string) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the collector: store the audit stream, chain it, sign checkpoints",
		Long: `ward audit run consumes the audit stream (bus.url) with a durable consumer and
stores it in audit.db. Its identity is spiffe://<td>/ward/audit, obtained once with
the bootstrap token in WARD_AUDIT_TOKEN ("ward component token audit") and kept in
<data_dir>/audit-collector. Checkpoints are signed with audit.key_file (created on
first start); the verifier key is written to <key_file>.pub.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := g.serverConfig()
			if err != nil {
				return err
			}
			cfg.Audit.setDB(*db)
			ctx := cmd.Context()
			src, err := componentSource(ctx, cfg, log.With("component", "audit"), "WARD_AUDIT_TOKEN", filepath.Join(cfg.DataDir, "audit-collector"))
			if err != nil {
				return ignoreCanceled(err)
			}
			defer src.Close()
			js, closeBus, err := componentJetStream(ctx, cfg, src, "audit")
			if err != nil {
				return err
			}
			defer closeBus()
			col, st, err := newCollector(ctx, cfg.Audit, cfg.Audit.Origin, js, &controlPlane{log: log})
			if err != nil {
				return err
			}
			defer st.Close()
			log.Info("audit collector running", "db", cfg.Audit.DB, "verifier_key", col.VerifierKey())
			return col.Run(ctx)
		},
	}
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
