package cli

import (
	"errors"
	"os"

	"github.com/spf13/cobra"

	"github.com/wardsec/ward/examples/whoami"
)

func newWhoamiCmd(g *globals) *cobra.Command {
	var dir, listen string
	cmd := &cobra.Command{
		Use:   "whoami --svid-dir DIR --listen ADDR",
		Short: "Serve an mTLS echo service that reports the verified caller (built on the public SDK)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usageError{errors.New("--svid-dir is required (fetch one with `ward svid fetch`)")}
			}
			base, err := g.authorityURL()
			if err != nil {
				return err
			}
			cfg, err := LoadConfig(g.configPath, os.Getenv)
			if err != nil {
				return err
			}
			log, err := g.logger(cfg)
			if err != nil {
				return err
			}
			return whoami.Run(cmd.Context(), whoami.Config{AuthorityURL: base, SVIDDir: dir, Listen: listen, Logger: log})
		},
	}
	cmd.Flags().StringVar(&dir, "svid-dir", "", "directory with svid.pem, svid.key, bundle.pem")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8444", "HTTPS listen address")
	return cmd
}
