package cli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/wardsec/ward/identity"
)

// maxCallBody bounds what `ward call` prints.
const maxCallBody = 1 << 20

func newCallCmd(g *globals) *cobra.Command {
	var dir, expect string
	cmd := &cobra.Command{
		Use:   "call --svid-dir DIR [--expect-id SPIFFE-ID] URL",
		Short: "GET a URL over mTLS with the SVID in DIR, verifying the server's SPIFFE ID (a curl for SVIDs)",
		Long: `ward call is an mTLS client for debugging: it presents the SVID in DIR and
verifies the server's certificate against DIR/bundle.pem by SPIFFE ID (SVIDs
carry no DNS names, so host-name checking tools such as curl need -k).`,
		Args: func(cmd *cobra.Command, args []string) error { return exactArgs(1)(cmd, args) },
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return usageError{errors.New("--svid-dir is required")}
			}
			svid, bundle, err := identity.LoadDir(dir)
			if err != nil {
				return err
			}
			authz := tlsconfig.AuthorizeMemberOf(svid.ID.TrustDomain())
			if expect != "" {
				id, err := spiffeid.FromString(expect)
				if err != nil {
					return usageError{fmt.Errorf("--expect-id: %v", err)}
				}
				authz = tlsconfig.AuthorizeID(id)
			}
			client := &http.Client{
				Timeout:   30 * time.Second,
				Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(svid, bundle, authz)},
			}
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, args[0], nil)
			if err != nil {
				return usageError{err}
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(g.stdout, io.LimitReader(resp.Body, maxCallBody)); err != nil {
				return err
			}
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("%s answered %s", args[0], resp.Status)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "svid-dir", "", "directory with svid.pem, svid.key, bundle.pem")
	cmd.Flags().StringVar(&expect, "expect-id", "", "require this server SPIFFE ID (default: any in the trust domain)")
	return cmd
}
