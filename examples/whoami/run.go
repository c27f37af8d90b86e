package whoami

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

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/passport"
	"github.com/wardsec/ward/pdp"
	"github.com/wardsec/ward/pep"
)

// Config configures Run.
type Config struct {
	// AuthorityURL is the authority's https URL (renewal, watch stream,
	// access list). Required.
	AuthorityURL string
	// SVIDDir holds svid.pem, svid.key and bundle.pem (as written by
	// `ward svid fetch`); renewed certificates are written back, and the
	// verified access list is cached in its subdirectory accesslist.
	// Required.
	SVIDDir string
	// Listen is the HTTPS address (default 127.0.0.1:8444).
	Listen string
	// Unguarded serves every authenticated caller of the trust domain
	// without declaring a manifest or enforcing an access list. The
	// default (false) is guarded.
	Unguarded bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Ready, if set, receives the bound address once serving.
	Ready func(addr net.Addr)
}

// Run serves whoami until ctx is done. Guarded (the default), it declares
// Manifest under the service name of its SVID (spiffe://<td>/svc/<name>)
// and admits only callers that the signed access list grants whoami/read;
// until a list is held every request is answered 503.
func Run(ctx context.Context, cfg Config) error {
	if cfg.SVIDDir == "" {
		return errors.New("whoami: SVIDDir is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8444"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	src, err := identity.New(ctx, identity.Config{
		AuthorityURL: cfg.AuthorityURL,
		Dir:          cfg.SVIDDir,
		BundleFile:   filepath.Join(cfg.SVIDDir, "bundle.pem"),
		Logger:       cfg.Logger,
	})
	if err != nil {
		return err
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(ctx)

	// Background tasks: the identity Source and, guarded, the guard. The
	// first to fail ends Run; Run returns after both stopped.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait
	taskErr := make(chan error, 3)
	start := func(run func(context.Context) error) {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				taskErr <- err
			}
		})
	}
	start(src.Run)

	handler := src.Middleware(Handler(src))
	if !cfg.Unguarded {
		name, err := serviceName(src.ID())
		if err != nil {
			return err
		}
		g, err := guard.NewForSource(ctx, src, src.AuthorityURL(), guard.Config{
			CacheDir: filepath.Join(cfg.SVIDDir, "accesslist"),
			Manifest: Manifest(name, Version),
			Logger:   cfg.Logger,
		})
		if err != nil {
			return fmt.Errorf("whoami: guard: %w", err)
		}
		// Passports are verified when present (a request through the
		// gateway); callers inside the mesh may call without one.
		pv, err := passport.NewForSource(src, passport.Config{Logger: cfg.Logger})
		if err != nil {
			return fmt.Errorf("whoami: passport verifier: %w", err)
		}
		defer pv.Close()
		// Decisions are audited locally when WARD_AUDIT_DIR is set (ward
		// dev sets it); ward's agent ships the file.
		aw, err := audit.FromEnv(name)
		if err != nil {
			return fmt.Errorf("whoami: audit: %w", err)
		}
		defer aw.Close()
		// Cedar policies of the domain "<name>", pushed by the authority;
		// until the domain has a version, access lists alone decide.
		pd, err := pdp.NewForSource(src, pdp.Config{CacheDir: filepath.Join(cfg.SVIDDir, "policy"), Logger: cfg.Logger})
		if err != nil {
			return fmt.Errorf("whoami: policy decision point: %w", err)
		}
		pc := pep.Config{Guard: g, Routes: Routes(), Logger: cfg.Logger, Passports: pv, PDP: pd}
		if aw != nil {
			pc.Audit = aw
		}
		p, err := pep.New(pc)
		if err != nil {
			return fmt.Errorf("whoami: %w", err)
		}
		start(g.Run)
		start(pd.Run)
		handler = src.Middleware(p.Middleware(GuardedHandler(src, g)))
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("whoami: listen: %w", err)
	}
	srv := &http.Server{
		Handler:           handler,
		TLSConfig:         src.ServerTLSConfig(identity.AuthorizeMemberOf(src.ID().TrustDomain())),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	cfg.Logger.Info("whoami serving", "addr", ln.Addr().String(), "spiffe_id", src.ID().String(), "guarded", !cfg.Unguarded)
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

// serviceName returns <name> of spiffe://<td>/svc/<name>.
func serviceName(id spiffeid.ID) (string, error) {
	name, ok := strings.CutPrefix(id.Path(), "/svc/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("whoami: a guarded whoami needs a service SVID spiffe://%s/svc/<name>, got %s (set Config.Unguarded to serve without an access list)", id.TrustDomain(), id)
	}
	return name, nil
}
