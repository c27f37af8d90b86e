package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/wardsec/ward/examples/whoami"
)

func newWhoamiCmd(g *globals) *cobra.Command {
	var dir, listen string
	var unguarded bool
	cmd := &cobra.Command{
		Use:   "whoami --svid-dir DIR --listen ADDR",
		Short: "Serve an mTLS echo service that reports the verified caller (built on the public SDK)",
		Long: `ward whoami serves an mTLS echo service built only on the public SDK. It
declares the manifest "provides whoami: read" under the service name of its
SVID, enforces its signed access list (callers without a grant get 403), and
answers granted callers with what it verified, including the guard's decision
as "access". --unguarded serves every caller of the trust domain instead.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usageError{errors.New("--svid-dir is required (fetch one with `ward svid fetch`)")}
			}
			base, err := g.authorityURL()
			if err != nil {
				return err
			}
			_, log, err := g.serverConfig()
			if err != nil {
				return err
			}
			return whoami.Run(cmd.Context(), whoami.Config{AuthorityURL: base, SVIDDir: dir, Listen: listen, Unguarded: unguarded, Logger: log})
		},
	}
	cmd.Flags().StringVar(&dir, "svid-dir", "", "directory with svid.pem, svid.key, bundle.pem")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8444", "HTTPS listen address")
	cmd.Flags().BoolVar(&unguarded, "unguarded", false, "serve every caller of the trust domain: no manifest, no access list")
	return cmd
}
