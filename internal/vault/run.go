package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/passport"
	"github.com/wardsec/ward/pdp"
	"github.com/wardsec/ward/pep"
)

// Version is what the vault declares in the catalogue.
const Version = "1.0.0"

// RunConfig configures Run.
type RunConfig struct {
	// AuthorityURL is the authority's https URL. Required.
	AuthorityURL string
	// SVIDDir holds the vault's SVID (spiffe://<td>/svc/vault), as written
	// by `ward svid fetch`; the access list and policy caches live under
	// it. Required.
	SVIDDir string
	// BundleFile is the trust bundle (default <SVIDDir>/bundle.pem).
	BundleFile string
	// Listen is the HTTPS address (default 127.0.0.1:8445); Listener, if
	// set, is used instead.
	Listen   string
	Listener net.Listener
	// Vault configures the store (DB, KMS, deterministic types, …).
	Vault Config
	// AuditDir, if set, receives the vault's audit events (decisions and
	// reveals); otherwise WARD_AUDIT_DIR, if set.
	AuditDir string
	// RotateEvery rotates the key-encryption key periodically (0: never).
	RotateEvery time.Duration
	Logger      *slog.Logger
	// Ready, if set, receives the bound address once serving.
	Ready func(addr net.Addr)
}

// Run serves the vault until ctx is done: mTLS with its SVID, its
// declared manifest and signed access list, passports, its Cedar policy
// domain "vault", and the audit writer.
func Run(ctx context.Context, cfg RunConfig) error {
	if cfg.SVIDDir == "" || cfg.AuthorityURL == "" {
		return errors.New("vault: AuthorityURL and SVIDDir are required")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8445"
	}
	if cfg.BundleFile == "" {
		cfg.BundleFile = filepath.Join(cfg.SVIDDir, "bundle.pem")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "vault")
	src, err := identity.New(ctx, identity.Config{AuthorityURL: cfg.AuthorityURL, Dir: cfg.SVIDDir, BundleFile: cfg.BundleFile, Logger: log})
	if err != nil {
		return err
	}
	defer src.Close()
	if p := src.ID().Path(); p != "/svc/vault" {
		return fmt.Errorf("vault: the SVID is %s; the vault runs as spiffe://%s/svc/vault", src.ID(), src.ID().TrustDomain())
	}
	cfg.Vault.Logger = log
	v, err := Open(ctx, cfg.Vault)
	if err != nil {
		return err
	}
	defer v.Close()

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	taskErr := make(chan error, 4)
	start := func(run func(context.Context) error) {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				taskErr <- err
			}
		})
	}
	start(src.Run)
	g, err := guard.NewForSource(ctx, src, src.AuthorityURL(), guard.Config{
		CacheDir: filepath.Join(cfg.SVIDDir, "accesslist"), Manifest: Manifest(Version), Logger: log})
	if err != nil {
		return fmt.Errorf("vault: guard: %w", err)
	}
	pv, err := passport.NewForSource(src, passport.Config{Logger: log})
	if err != nil {
		return fmt.Errorf("vault: passports: %w", err)
	}
	defer pv.Close()
	pd, err := pdp.NewForSource(src, pdp.Config{CacheDir: filepath.Join(cfg.SVIDDir, "policy"), Logger: log})
	if err != nil {
		return fmt.Errorf("vault: policy: %w", err)
	}
	var aw *audit.Writer
	if cfg.AuditDir != "" {
		aw, err = audit.NewWriter(audit.Config{Dir: cfg.AuditDir, Service: "vault"})
	} else {
		aw, err = audit.FromEnv("vault")
	}
	if err != nil {
		return fmt.Errorf("vault: audit: %w", err)
	}
	pc := pep.Config{Guard: g, Routes: Routes(), Logger: log, Passports: pv, PDP: pd}
	var rec Recorder
	if aw != nil {
		defer aw.Close()
		pc.Audit, rec = aw, aw
	}
	p, err := pep.New(pc)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	start(g.Run)
	start(pd.Run)
	if cfg.RotateEvery > 0 {
		start(func(ctx context.Context) error {
			t := time.NewTicker(cfg.RotateEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
					if ver, err := v.Rotate(ctx); err != nil && ctx.Err() == nil {
						log.Error("vault: key rotation failed; retrying next period", "version", ver, "error", err)
					}
				}
			}
		})
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("vault: listen: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           src.Middleware(p.Middleware(v.Handler(rec, log))),
		TLSConfig:         src.ServerTLSConfig(identity.AuthorizeMemberOf(src.ID().TrustDomain())),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	log.Info("vault serving", "addr", ln.Addr().String(), "spiffe_id", src.ID().String(), "db", redactDSN(cfg.Vault.DB))
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case <-ctx.Done():
		shut, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = srv.Shutdown(shut)
		return nil
	case err := <-errc:
		return err
	case err := <-taskErr:
		_ = srv.Close()
		return err
	}
}

// redactDSN hides a PostgreSQL password in logs.
func redactDSN(s string) string {
	if i := strings.Index(s, "@"); i >= 0 && strings.Contains(s[:i], ":") && strings.HasPrefix(s, "postgres") {
		if j := strings.LastIndex(s[:i], ":"); j > strings.Index(s, "//")+1 {
			return s[:j] + ":***" + s[i:]
		}
	}
	return s
}

// LocalKMS loads (creating it on first use) the vault's KEK file.
func LocalKMS(path string) (kms.KMS, error) {
	kek, err := kms.LoadKEKFile(path)
	if err != nil {
		if errGen := kms.GenerateKEKFile(path); errGen != nil {
			return nil, fmt.Errorf("vault: key file %s: %v (and creating it: %v)", path, err, errGen)
		}
		if kek, err = kms.LoadKEKFile(path); err != nil {
			return nil, fmt.Errorf("vault: key file %s: %w", path, err)
		}
	}
	return kms.NewLocal(kek)
}
