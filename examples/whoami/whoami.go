// Package whoami is a small HTTPS service built only on ward's public SDK:
// it serves mTLS with an SVID from the identity package and answers every
// request with JSON describing what it verified about the caller. It is the
// debugging target for ward features and the first example of the SDK.
//
//	src, _ := identity.New(ctx, identity.Config{AuthorityURL: url, Dir: svidDir, BundleFile: svidDir + "/bundle.pem"})
//	go src.Run(ctx)
//	srv := &http.Server{Handler: src.Middleware(whoami.Handler(src)), TLSConfig: src.ServerTLSConfig(identity.AuthorizeMemberOf(src.ID().TrustDomain()))}
package whoami

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"time"

	"github.com/wardsec/ward/identity"
)

// Response is what whoami answers. Later features add access, passport and
// decision fields.
type Response struct {
	CallerSPIFFEID string              `json:"caller_spiffe_id"`
	ServerSPIFFEID string              `json:"server_spiffe_id"`
	Method         string              `json:"method"`
	Path           string              `json:"path"`
	Headers        map[string][]string `json:"headers"`
	TLSVersion     string              `json:"tls_version"`
}

// Handler answers any path with a Response. It must run behind
// Source.Middleware (which establishes and re-checks the peer identity).
func Handler(src *identity.Source) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := identity.PeerIDFromContext(r.Context())
		if !ok {
			http.Error(w, "no verified peer", http.StatusForbidden)
			return
		}
		hdr := make(map[string][]string, len(r.Header))
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			hdr[k] = r.Header[k]
		}
		resp := Response{
			CallerSPIFFEID: id.String(),
			ServerSPIFFEID: src.ID().String(),
			Method:         r.Method,
			Path:           r.URL.Path,
			Headers:        hdr,
		}
		if r.TLS != nil {
			resp.TLSVersion = tlsVersion(r.TLS.Version)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

func tlsVersion(v uint16) string {
	switch v {
	case 0x0304:
		return "TLS1.3"
	case 0x0303:
		return "TLS1.2"
	default:
		return fmt.Sprintf("0x%04x", v)
	}
}

// Config configures Run.
type Config struct {
	// AuthorityURL is the authority's https URL (renewal and watch stream). Required.
	AuthorityURL string
	// SVIDDir holds svid.pem, svid.key and bundle.pem (as written by
	// `ward svid fetch`); renewed certificates are written back. Required.
	SVIDDir string
	// Listen is the HTTPS address (default 127.0.0.1:8444).
	Listen string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Ready, if set, receives the bound address once serving.
	Ready func(addr net.Addr)
}

// Run serves whoami until ctx is done.
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
	defer cancel()
	srcDone := make(chan error, 1)
	go func() { srcDone <- src.Run(ctx) }()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("whoami: listen: %w", err)
	}
	srv := &http.Server{
		Handler:           src.Middleware(Handler(src)),
		TLSConfig:         src.ServerTLSConfig(identity.AuthorizeMemberOf(src.ID().TrustDomain())),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	cfg.Logger.Info("whoami serving", "addr", ln.Addr().String(), "spiffe_id", src.ID().String())
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
	case err := <-srcDone:
		_ = srv.Close()
		return err
	}
}
