package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/internal/vault"
	"github.com/wardsec/ward/internal/workloadapi"
)

// runDevVault runs ward dev's vault in-process, exactly as ward vault run
// does: the L3 service "vault" of the team "privacy" (registered on first
// start through the admin API), its own SVID under <data>/vault/svid, its
// database <data>/vault/vault.db and key file <data>/vault/vault.kek, and
// its audit events in the audit directory the embedded agent ships.
func (p *controlPlane) runDevVault(ctx context.Context, g *globals, ln net.Listener, adminToken, bundleFile string) error {
	dir := filepath.Join(p.cfg.DataDir, "vault", "svid")
	if _, err := os.Stat(filepath.Join(dir, "svid.pem")); errors.Is(err, os.ErrNotExist) {
		if err := p.enrollDevVault(ctx, g, dir, adminToken, bundleFile); err != nil {
			return err
		}
	}
	k, err := vault.LocalKMS(filepath.Join(p.cfg.DataDir, "vault", "vault.kek"))
	if err != nil {
		return err
	}
	return vault.Run(ctx, vault.RunConfig{
		AuthorityURL: p.cfg.Authority.PublicURL, SVIDDir: dir, BundleFile: bundleFile, Listener: ln,
		Vault:       vault.Config{DB: filepath.Join(p.cfg.DataDir, "vault", "vault.db"), KMS: k},
		AuditDir:    p.cfg.Audit.Dir,
		RotateEvery: 30 * 24 * time.Hour,
		Logger:      p.log,
	})
}

// enrollDevVault registers the vault service (or issues it a new
// bootstrap token) and fetches its first SVID, retrying while the
// authority starts.
func (p *controlPlane) enrollDevVault(ctx context.Context, g *globals, dir, adminToken, bundleFile string) error {
	gg := *g
	gg.authority, gg.caBundle, gg.adminToken = p.cfg.Authority.PublicURL, bundleFile, adminToken
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := func() error {
			c, err := gg.adminClient()
			if err != nil {
				return err
			}
			if err := c.do(ctx, http.MethodPost, "/v1/teams", obj{"name": "privacy"}, nil); err != nil && !isStatus(err, http.StatusConflict) {
				return err
			}
			var created struct {
				Token string `json:"bootstrap_token"`
			}
			err = c.do(ctx, http.MethodPost, "/v1/services", obj{"name": "vault", "team": "privacy", "level": "L3"}, &created)
			if isStatus(err, http.StatusConflict) {
				err = c.do(ctx, http.MethodPost, "/v1/services/vault/bootstrap-token", nil, &created)
			}
			if err != nil {
				return err
			}
			svid, bundle, err := identity.Fetch(ctx, identity.Config{AuthorityURL: p.cfg.Authority.PublicURL, BootstrapToken: created.Token, BundleFile: bundleFile})
			if err != nil {
				return err
			}
			return identity.WriteDir(dir, svid, bundle)
		}()
		if err == nil {
			return nil
		}
		p.log.Debug("dev vault not enrolled yet; retrying", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
}

func isStatus(err error, status int) bool {
	var pr *problem.Problem
	return errors.As(err, &pr) && pr.Status == status
}

// runDevWorkloadAPI serves the SPIFFE Workload API of ward dev's node
// agent on sock, with an agent identity of its own (spiffe://<td>/ward/agent,
// from a component bootstrap token), exactly as ward agent run
// --workload-socket does.
func (p *controlPlane) runDevWorkloadAPI(ctx context.Context, ln net.Listener) error {
	token, err := p.auth.CreateComponentToken(ctx, "agent", time.Hour)
	if err != nil {
		return fmt.Errorf("agent bootstrap token: %w", err)
	}
	dir := filepath.Join(p.cfg.DataDir, "agent-workload")
	log := p.log.With("component", "workload-api")
	var src *identity.Source
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		src, err = identity.New(ctx, identity.Config{AuthorityURL: p.cfg.Authority.PublicURL, BootstrapToken: token,
			BundleFile: bundlePath(p.cfg), Dir: dir, Logger: log})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = src.Run(ctx) }()
	node, err := workloadapi.NewNode(src, log)
	if err != nil {
		return err
	}
	return node.Run(ctx, ln)
}
