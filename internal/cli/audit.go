package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/audit/agent"
	"github.com/wardsec/ward/internal/audit/collector"
	"github.com/wardsec/ward/internal/audit/redact"
)

// AuditConfig is the audit section of the config file.
type AuditConfig struct {
	// Dir holds the audit files services write (WARD_AUDIT_DIR of the
	// SDK) and the agent tails (default <data_dir>/audit). Env WARD_AUDIT_DIR.
	Dir string `yaml:"dir"`
	// DB is the collector's database: a SQLite file (default
	// <data_dir>/audit.db) or a postgres:// URL.
	// Env WARD_AUDIT_DB.
	DB string `yaml:"db"`
	// KeyFile holds the collector's checkpoint signing key (default
	// audit-checkpoint.key beside DB, created on first start); the
	// verifier key is written beside it with the extension .pub.
	KeyFile string `yaml:"key_file"`
	// Origin names the log in checkpoints (default <trust domain>/audit).
	Origin string `yaml:"origin"`
	// Host is the agent's host name (default: the system's).
	Host string `yaml:"host"`
	// Container adds container context to every shipped event.
	Container string `yaml:"container"`
	// RedactFields and RedactPatterns add to the built-in redaction.
	RedactFields   []string `yaml:"redact_fields"`
	RedactPatterns []string `yaml:"redact_patterns"`
	// Consumer is the collector's durable JetStream consumer (default
	// ward-audit-collector); collectors with different names each store
	// every event.
	Consumer string `yaml:"consumer"`
	// CheckpointEvery is the checkpoint interval (default 10s).
	CheckpointEvery string `yaml:"checkpoint_every"`
}

func (c *AuditConfig) defaults(cfg *Config) {
	if c.Dir == "" {
		c.Dir = filepath.Join(cfg.DataDir, "audit")
	}
	if c.DB == "" {
		c.DB = filepath.Join(cfg.DataDir, "audit.db")
	}
	if c.KeyFile == "" {
		c.KeyFile = filepath.Join(filepath.Dir(c.DB), "audit-checkpoint.key")
	}
	if c.Origin == "" {
		c.Origin = cfg.TrustDomain + "/audit"
	}
}

// setDB points the collector at another database (--db); a key file left
// at its default moves beside it.
func (c *AuditConfig) setDB(db string) {
	if db == "" {
		return
	}
	if c.KeyFile == filepath.Join(filepath.Dir(c.DB), "audit-checkpoint.key") {
		c.KeyFile = filepath.Join(filepath.Dir(db), "audit-checkpoint.key")
	}
	c.DB = db
}

// runDevAudit runs ward dev's audit pipeline in-process: an agent tailing
// the audit directory and a collector storing into the audit database,
// both on the embedded NATS with their own component certificates.
func (p *controlPlane) runDevAudit(ctx context.Context) error {
	ac := p.cfg.Audit
	origin := p.auth.TrustDomain().Name() + "/audit"
	if p.cfg.Audit.Origin != "" && p.cfg.Audit.Origin != p.cfg.TrustDomain+"/audit" {
		origin = p.cfg.Audit.Origin
	}
	connect := func(cert *componentCert) (jetstream.JetStream, func(), error) {
		tc, err := componentTLS(cert)
		if err != nil {
			return nil, nil, err
		}
		return jetStreamOn(ctx, p.busURL, tc, cert.name)
	}
	cjs, cclose, err := connect(p.auditCert)
	if err != nil {
		return fmt.Errorf("audit collector: %w", err)
	}
	defer cclose()
	ajs, aclose, err := connect(p.agentCert)
	if err != nil {
		return fmt.Errorf("audit agent: %w", err)
	}
	defer aclose()
	col, st, err := newCollector(ctx, ac, origin, cjs, p)
	if err != nil {
		return err
	}
	defer st.Close() // after both goroutines below returned
	r, err := redact.New(redact.Config{Fields: ac.RedactFields, Patterns: ac.RedactPatterns})
	if err != nil {
		return err
	}
	ag, err := agent.New(agent.Config{Dir: ac.Dir, Publisher: &agent.JetStream{JS: ajs}, Host: devAgentHost(p.cfg), Container: ac.Container,
		Redactor: r, Logger: p.log.With("component", "audit-agent")})
	if err != nil {
		return err
	}
	// The first to stop stops the other; both are waited for.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- col.Run(rctx) }()
	go func() { errc <- ag.Run(rctx) }()
	err = <-errc
	cancel()
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}

// newCollector opens the audit store and the checkpoint key and writes
// the verifier key beside it. Close the store after Run returned.
func newCollector(ctx context.Context, ac AuditConfig, origin string, js jetstream.JetStream, p *controlPlane) (*collector.Collector, *collector.Store, error) {
	st, err := collector.OpenStore(ctx, ac.DB)
	if err != nil {
		return nil, nil, err
	}
	col, err := openCollector(ctx, ac, origin, js, p, st)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return col, st, nil
}

func openCollector(ctx context.Context, ac AuditConfig, origin string, js jetstream.JetStream, p *controlPlane, st *collector.Store) (*collector.Collector, error) {
	key, err := collector.LoadOrCreateKey(ac.KeyFile)
	if err != nil {
		return nil, err
	}
	every := 10 * time.Second
	if ac.CheckpointEvery != "" {
		if every, err = time.ParseDuration(ac.CheckpointEvery); err != nil || every <= 0 {
			return nil, fmt.Errorf("config: audit.checkpoint_every %q is not a positive duration", ac.CheckpointEvery)
		}
	}
	col, err := collector.New(ctx, collector.Config{Store: st, JS: js, Origin: origin, Key: key, CheckpointEvery: every, Durable: ac.Consumer,
		Logger: p.log.With("component", "audit-collector")})
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(ac.KeyFile+".pub", []byte(col.VerifierKey()+"\n"), 0o644); err != nil {
		return nil, err
	}
	return col, nil
}

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "The audit trail: verify its integrity, query it, follow it",
	}
	var db, key string
	loadCfg := func() (*Config, error) {
		cfg, err := LoadConfig(g.configPath, os.Getenv)
		if err != nil {
			return nil, err
		}
		cfg.Audit.setDB(db)
		if _, err := os.Stat(cfg.Audit.DB); err != nil && !strings.HasPrefix(cfg.Audit.DB, "postgres") {
			return nil, usageError{fmt.Errorf("no audit database at %s (--db, or audit.db in the config)", cfg.Audit.DB)}
		}
		return cfg, nil
	}
	verify := &cobra.Command{
		Use:   "verify [--db FILE] [--key VERIFIER-KEY]",
		Short: "Check every hash chain and signed checkpoint offline; names the first broken link",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadCfg()
			if err != nil {
				return err
			}
			vk := key
			if vk == "" {
				data, err := os.ReadFile(cfg.Audit.KeyFile + ".pub")
				if err != nil {
					return usageError{fmt.Errorf("--key is required (the collector's verifier key; %s.pub not readable)", cfg.Audit.KeyFile)}
				}
				vk = strings.TrimSpace(string(data))
			}
			if _, _, err := collector.ParseVerifierKey(vk); err != nil {
				return usageError{err}
			}
			st, err := collector.OpenStore(cmd.Context(), cfg.Audit.DB)
			if err != nil {
				return err
			}
			defer st.Close()
			res, err := st.Verify(cmd.Context(), vk)
			if err != nil {
				return err
			}
			if err := g.print(res, func(w io.Writer) {
				if res.Broken == "" {
					fmt.Fprintf(w, "ok: %d events, %d signed checkpoints verified\n", res.Events, res.Checkpoints)
				}
			}); err != nil {
				return err
			}
			if res.Broken != "" {
				return fmt.Errorf("audit trail broken: %s", res.Broken)
			}
			return nil
		},
	}
	verify.Flags().StringVar(&key, "key", "", "verifier key (default: the .pub file beside audit.key_file)")
	var q collector.Query
	var since, until string
	parseQuery := func() error {
		for _, f := range []struct {
			s   string
			dst *time.Time
		}{{since, &q.Since}, {until, &q.Until}} {
			if f.s == "" {
				continue
			}
			t, err := time.Parse(time.RFC3339, f.s)
			if err != nil {
				d, derr := time.ParseDuration(f.s)
				if derr != nil {
					return usageError{fmt.Errorf("%q: want RFC 3339 time or a duration ago (1h)", f.s)}
				}
				t = time.Now().Add(-d)
			}
			*f.dst = t
		}
		return nil
	}
	// openQuery reads the config and the query flags and opens the store.
	openQuery := func(cmd *cobra.Command) (*collector.Store, error) {
		cfg, err := loadCfg()
		if err != nil {
			return nil, err
		}
		if err := parseQuery(); err != nil {
			return nil, err
		}
		return collector.OpenStore(cmd.Context(), cfg.Audit.DB)
	}
	printRows := func(rows []collector.Row) error {
		return g.print(rows, func(w io.Writer) {
			for _, r := range rows {
				var e audit.Event
				_ = json.Unmarshal(r.Event, &e)
				fmt.Fprintf(w, "%s  %-16s %-8s %-22s cid=%s caller=%s user=%s %s %s %s\n", e.Time.Format(time.RFC3339Nano), e.Service, e.Decision, e.Kind,
					e.CorrelationID, e.Caller, e.User, e.Action, e.Resource, e.Reason)
			}
		})
	}
	query := &cobra.Command{
		Use:   "query [--correlation-id C] [--caller ID] [--user U] [--kind K] [--decision D] [--since T] [--until T]",
		Short: "Find stored events (a correlation ID's trail is in time order)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := openQuery(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			rows, err := st.Find(cmd.Context(), q)
			if err != nil {
				return err
			}
			if rows == nil {
				rows = []collector.Row{}
			}
			return printRows(rows)
		},
	}
	tail := &cobra.Command{
		Use:   "tail [filters]",
		Short: "Follow events as they are stored",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := openQuery(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			if n, err := st.Count(cmd.Context()); err == nil {
				q.AfterID = max(0, n-10)
			}
			for {
				rows, err := st.Find(cmd.Context(), q)
				if err != nil && !errors.Is(err, context.Canceled) {
					return err
				}
				if len(rows) > 0 {
					q.AfterID = rows[len(rows)-1].ID
					if err := printRows(rows); err != nil {
						return err
					}
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	for _, c := range []*cobra.Command{query, tail} {
		f := c.Flags()
		f.StringVar(&q.CorrelationID, "correlation-id", "", "correlation ID (the passport cid, X-Correlation-ID)")
		f.StringVar(&q.Caller, "caller", "", "caller SPIFFE ID")
		f.StringVar(&q.User, "user", "", "user (passport subject)")
		f.StringVar(&q.Kind, "kind", "", "event kind, e.g. authz.decision")
		f.StringVar(&q.Decision, "decision", "", "allow or deny")
		f.StringVar(&since, "since", "", "from this time (RFC 3339) or this long ago (1h)")
		f.StringVar(&until, "until", "", "before this time (RFC 3339) or this long ago")
	}
	query.Flags().IntVar(&q.Limit, "limit", 1000, "at most this many events")
	cmd.PersistentFlags().StringVar(&db, "db", "", "the collector's database (default audit.db in the config, <data_dir>/audit.db)")
	cmd.AddCommand(newAuditRunCmd(g, &db), verify, query, tail)
	return cmd
}
