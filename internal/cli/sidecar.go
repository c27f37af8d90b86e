package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/sidecar"
	"github.com/wardsec/ward/pep"
)

func newSidecarCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "sidecar", Short: "Put a service not written against the SDK behind ward"}
	var (
		service, dir, listen, upstream, routesFile, manifestFile, egress string
		egressRoutes                                                     []string
		timeout                                                          time.Duration
	)
	run := &cobra.Command{
		Use:   "run --service NAME --svid-dir DIR --listen ADDR --upstream http://127.0.0.1:PORT",
		Short: "Terminate mTLS, enforce access list, passport and policy, and forward to a plain HTTP service on loopback",
		Long: `ward sidecar run serves the service's mTLS listener with its SVID (DIR, as written by
ward svid fetch; it must be spiffe://<td>/svc/NAME), runs the full PEP — access list,
passport, Cedar policy, audit — and forwards allowed requests to the plain HTTP service
on loopback. Every inbound Ward-* header is removed (any case, "_" or "-"); the service
receives Ward-Caller, Ward-User, Ward-Passport-Claims (base64url JSON) and
Ward-Correlation-Id, which it can trust because only the sidecar sets them.

--routes names a YAML list of {pattern, resource, action} (net/http patterns); without
it every request is the action "call" on the resource NAME. --manifest is declared on
start (default: provides NAME: [call]). --egress serves plain HTTP on loopback for the
service's own calls: http://EGRESS/<service>/<path> goes to the --egress-route of that
service over mTLS, with the passport of the inbound request whose Ward-Correlation-Id
the service sends along.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if service == "" || listen == "" || upstream == "" {
				return usageError{errors.New("--service, --listen and --upstream are required")}
			}
			if dir == "" && os.Getenv("SPIFFE_ENDPOINT_SOCKET") == "" {
				return usageError{errors.New("--svid-dir is required without a node agent (SPIFFE_ENDPOINT_SOCKET)")}
			}
			base, err := g.authorityURL()
			if err != nil {
				return err
			}
			cfg, log, err := g.serverConfig()
			if err != nil {
				return err
			}
			sc := sidecar.Config{Service: service, Upstream: upstream, UpstreamTimeout: timeout, Logger: log.With("component", "sidecar"),
				CacheDir: dir, Egress: map[string]string{}}
			if dir == "" {
				sc.CacheDir = filepath.Join(cfg.DataDir, "sidecar-"+service)
			}
			if routesFile != "" {
				data, err := readBounded(routesFile, 1<<20)
				if err != nil {
					return err
				}
				if sc.Routes, err = parseSidecarRoutes(data); err != nil {
					return fmt.Errorf("--routes %s: %v", routesFile, err)
				}
			}
			if manifestFile != "" {
				if sc.Manifest, err = readBounded(manifestFile, 1<<20); err != nil {
					return err
				}
			}
			for _, e := range egressRoutes {
				name, u, ok := strings.Cut(e, "=")
				if !ok || name == "" {
					return usageError{fmt.Errorf("--egress-route %q: want NAME=https://HOST:PORT", e)}
				}
				sc.Egress[name] = u
			}
			// Decisions are audited to audit.dir, else WARD_AUDIT_DIR.
			var aw *audit.Writer
			if cfg.Audit.Dir != "" {
				aw, err = audit.NewWriter(audit.Config{Dir: cfg.Audit.Dir, Service: service})
			} else {
				aw, err = audit.FromEnv(service)
			}
			if err != nil {
				return fmt.Errorf("sidecar audit: %w", err)
			}
			if aw != nil {
				defer aw.Close()
				sc.Audit = aw
			}
			return runSidecar(cmd.Context(), base, dir, listen, egress, sc, nil)
		},
	}
	f := run.Flags()
	f.StringVar(&service, "service", "", "the service's registered name")
	f.StringVar(&dir, "svid-dir", "", "the service's SVID directory (default: the node agent's Workload API, SPIFFE_ENDPOINT_SOCKET)")
	f.StringVar(&listen, "listen", "", "mTLS listen address")
	f.StringVar(&upstream, "upstream", "", "the plain HTTP service, http://127.0.0.1:PORT")
	f.StringVar(&routesFile, "routes", "", "YAML route table: [{pattern, resource, action}]")
	f.StringVar(&manifestFile, "manifest", "", "the service's manifest (ward.yaml) to declare")
	f.StringVar(&egress, "egress", "", "loopback address for the service's calls to other ward services")
	f.StringArrayVar(&egressRoutes, "egress-route", nil, "NAME=https://HOST:PORT of a service reachable through --egress (repeatable)")
	f.DurationVar(&timeout, "upstream-timeout", 30*time.Second, "how long to wait for the service's response headers")
	cmd.AddCommand(run)
	return cmd
}

// parseSidecarRoutes reads a YAML route table: [{pattern, resource,
// action, id_param}].
func parseSidecarRoutes(data []byte) ([]pep.Route, error) {
	var rs []struct {
		Pattern, Resource, Action string
		IDParam                   string `yaml:"id_param"`
	}
	if err := yaml.Unmarshal(data, &rs); err != nil {
		return nil, err
	}
	out := make([]pep.Route, 0, len(rs))
	for _, r := range rs {
		out = append(out, pep.Route{Pattern: r.Pattern, Resource: r.Resource, Action: r.Action, IDParam: r.IDParam})
	}
	return out, nil
}

// runSidecar runs a sidecar until ctx ends; ready, if set, gets the
// ingress and egress addresses.
func runSidecar(ctx context.Context, authority, dir, listen, egress string, sc sidecar.Config, ready func(in, eg net.Addr)) error {
	icfg := identity.Config{AuthorityURL: authority, Dir: dir, BundleFile: filepath.Join(dir, "bundle.pem"), Logger: sc.Logger}
	if dir == "" { // the node agent's Workload API
		icfg = identity.Config{AuthorityURL: authority, WorkloadAPIAddr: os.Getenv("SPIFFE_ENDPOINT_SOCKET"), Logger: sc.Logger}
	}
	src, err := identity.New(ctx, icfg)
	if err != nil {
		return err
	}
	defer src.Close()
	sc.Source = src
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = src.Run(ctx) }()
	s, err := sidecar.New(ctx, sc)
	if err != nil {
		return err
	}
	errc := make(chan error, 3)
	go func() { errc <- s.Run(ctx) }()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("sidecar listen: %w", err)
	}
	srv := &http.Server{Handler: s.Ingress(), TLSConfig: src.ServerTLSConfig(identity.AuthorizeMemberOf(src.ID().TrustDomain())),
		ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	var egAddr net.Addr
	var esrv *http.Server
	if egress != "" {
		host, _, err := net.SplitHostPort(egress)
		if err != nil || !isLoopback(host) {
			return usageError{fmt.Errorf("--egress %q must be a loopback address", egress)}
		}
		eln, err := net.Listen("tcp", egress)
		if err != nil {
			return fmt.Errorf("sidecar egress listen: %w", err)
		}
		egAddr = eln.Addr()
		esrv = &http.Server{Handler: s.Egress(), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
		go func() { errc <- esrv.Serve(eln) }()
	}
	sc.Logger.Info("sidecar serving", "service", sc.Service, "listen", ln.Addr().String(), "upstream", sc.Upstream, "egress", egress)
	if ready != nil {
		ready(ln.Addr(), egAddr)
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shut, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	_ = srv.Shutdown(shut)
	if esrv != nil {
		_ = esrv.Shutdown(shut)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
