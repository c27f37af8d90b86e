package cli

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/identity"
)

func newSVIDCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "svid", Short: "Fetch, renew, inspect and revoke X.509-SVIDs"}

	var token, out, fingerprint string
	fetch := &cobra.Command{
		Use:   "fetch --bootstrap-token T --out DIR",
		Short: "Get an SVID with a bootstrap token; writes svid.pem, svid.key (0600) and bundle.pem",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token == "" {
				token = os.Getenv("WARD_BOOTSTRAP_TOKEN")
			}
			if token == "" || out == "" {
				return usageError{errors.New("--bootstrap-token (or WARD_BOOTSTRAP_TOKEN) and --out are required")}
			}
			cfg, err := g.identityConfig(fingerprint)
			if err != nil {
				return err
			}
			cfg.BootstrapToken = token
			svid, bundle, err := identity.Fetch(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if err := identity.WriteDir(out, svid, bundle); err != nil {
				return err
			}
			return g.printSVID(out, svid)
		},
	}
	fetch.Flags().StringVar(&token, "bootstrap-token", "", "bootstrap token from `ward service create` (or env WARD_BOOTSTRAP_TOKEN)")
	fetch.Flags().StringVar(&out, "out", "", "directory to write the SVID into")
	fetch.Flags().StringVar(&fingerprint, "root-fingerprint", "", "trust the authority by this root's SHA-256 instead of --ca-bundle")

	var dir string
	renew := &cobra.Command{
		Use:   "renew --dir DIR",
		Short: "Renew the SVID in DIR over mTLS (no token needed) and write it back in place",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usageError{errors.New("--dir is required")}
			}
			svid, bundle, err := identity.LoadDir(dir)
			if err != nil {
				return err
			}
			base, err := g.authorityURL()
			if err != nil {
				return err
			}
			cfg := identity.Config{AuthorityURL: base, BundleFile: filepath.Join(dir, "bundle.pem")}
			nsvid, nbundle, err := identity.Renew(cmd.Context(), cfg, svid, bundle)
			if err != nil {
				return err
			}
			if err := identity.WriteDir(dir, nsvid, nbundle); err != nil {
				return err
			}
			return g.printSVID(dir, nsvid)
		},
	}
	renew.Flags().StringVar(&dir, "dir", "", "directory holding svid.pem, svid.key, bundle.pem")

	var showDir string
	show := &cobra.Command{
		Use:   "show --dir DIR",
		Short: "Show the SVID in DIR and check it against DIR/bundle.pem",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if showDir == "" {
				return usageError{errors.New("--dir is required")}
			}
			svid, bundle, err := identity.LoadDir(showDir)
			if err != nil {
				return err
			}
			if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
				return fmt.Errorf("svid in %s does not verify against its bundle: %w", showDir, err)
			}
			return g.printSVID(showDir, svid)
		},
	}
	show.Flags().StringVar(&showDir, "dir", "", "directory holding svid.pem, svid.key, bundle.pem")

	var serial, reason string
	revoke := &cobra.Command{
		Use:   "revoke --serial HEX",
		Short: "Revoke one certificate by serial (admin)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if serial == "" {
				return usageError{errors.New("--serial is required")}
			}
			var body any
			if reason != "" {
				body = obj{"reason": reason}
			}
			_, err := g.send(cmd, "POST", "/v1/svids/"+pathEscape(serial)+"/revoke", body, "serial", "revoked_at")
			return err
		},
	}
	revoke.Flags().StringVar(&serial, "serial", "", "certificate serial in hex")
	revoke.Flags().StringVar(&reason, "reason", "", "RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation")

	cmd.AddCommand(fetch, renew, show, revoke)
	return cmd
}

// identityConfig builds the SDK config for one-shot CLI calls.
func (g *globals) identityConfig(fingerprint string) (identity.Config, error) {
	base, err := g.authorityURL()
	if err != nil {
		return identity.Config{}, err
	}
	cfg := identity.Config{AuthorityURL: base, RootFingerprint: fingerprint}
	if fingerprint == "" {
		if g.caBundle == "" {
			return cfg, usageError{errors.New("no trust for the authority: set --ca-bundle / WARD_CA_BUNDLE or --root-fingerprint")}
		}
		cfg.BundleFile = g.caBundle
	}
	return cfg, nil
}

type svidInfo struct {
	Dir        string    `json:"dir"`
	SPIFFEID   string    `json:"spiffe_id"`
	Serial     string    `json:"serial"`
	InstanceID string    `json:"instance_id"`
	Issuer     string    `json:"issuer"`
	NotBefore  time.Time `json:"not_before"`
	ExpiresAt  time.Time `json:"expires_at"`
	ChainLen   int       `json:"chain_length"`
}

func (g *globals) printSVID(dir string, svid *x509svid.SVID) error {
	leaf := svid.Certificates[0]
	info := svidInfo{
		Dir:        dir,
		SPIFFEID:   svid.ID.String(),
		Serial:     leaf.SerialNumber.Text(16),
		InstanceID: leaf.Subject.SerialNumber,
		Issuer:     issuerName(leaf),
		NotBefore:  leaf.NotBefore.UTC(),
		ExpiresAt:  leaf.NotAfter.UTC(),
		ChainLen:   len(svid.Certificates),
	}
	return g.print(info, func(w io.Writer) {
		fmt.Fprintf(w, "spiffe_id:    %s\nserial:       %s\ninstance_id:  %s\nissuer:       %s\nnot_before:   %s\nexpires_at:   %s\ndir:          %s\n",
			info.SPIFFEID, info.Serial, info.InstanceID, info.Issuer, info.NotBefore.Format(time.RFC3339), info.ExpiresAt.Format(time.RFC3339), dir)
	})
}

func issuerName(c *x509.Certificate) string { return c.Issuer.CommonName }
