// Package cli is the ward command line: one cobra command tree whose leaves
// parse flags and configuration, wire components together and run them.
// Logic lives in the component packages; this package only connects them.
//
//	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X github.com/wardsec/ward/internal/cli.Version=…".
var Version = "dev"

// globals are the flags every command shares.
type globals struct {
	output     string // "text" or "json"
	configPath string
	authority  string
	caBundle   string
	adminToken string

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// usageError marks errors caused by how the command was invoked (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Main runs the ward CLI with args and returns the process exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, stdin, stdout, stderr)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintf(stderr, "ward: %s\n", msg)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "ward",
		Short:         "Zero-trust security for microservices",
		Long:          "ward is zero-trust security for microservices. This build runs the authority (private CA, short-lived\nSPIFFE certificates, revocation pushed to SDKs) and the developer environment (ward dev).\nSee docs/ for concepts, operations and reference.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch g.output {
			case "text", "json":
				return nil
			default:
				return usageError{fmt.Errorf("--output must be text or json, not %q", g.output)}
			}
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVarP(&g.output, "output", "o", "text", "output format: text or json")
	pf.StringVar(&g.configPath, "config", os.Getenv("WARD_CONFIG"), "YAML config file (env WARD_CONFIG)")
	pf.StringVar(&g.authority, "authority", os.Getenv("WARD_AUTHORITY"), "authority URL (env WARD_AUTHORITY)")
	pf.StringVar(&g.caBundle, "ca-bundle", os.Getenv("WARD_CA_BUNDLE"), "PEM trust bundle for the authority (env WARD_CA_BUNDLE)")
	pf.StringVar(&g.adminToken, "admin-token", "", "admin token (default: env WARD_ADMIN_TOKEN; prefer the env var, flags show in ps)")

	root.AddCommand(
		newVersionCmd(g),
		newDevCmd(g),
		newDemoCmd(g),
		newAuthorityCmd(g),
		newTeamCmd(g),
		newServiceCmd(g),
		newSVIDCmd(g),
		newCACmd(g),
		newAdminTokenCmd(g),
		newCatalogCmd(g),
		newPostureCmd(g),
		newAccessListCmd(g),
		newClientCmd(g),
		newAPIKeyCmd(g),
		newKeysCmd(g),
		newGatewayCmd(g),
		newRouteCmd(g),
		newPolicyCmd(g),
		newVaultCmd(g),
		newSidecarCmd(g),
		newAuditCmd(g),
		newAgentCmd(g),
		newComponentCmd(g),
		newWhoamiCmd(g),
		newCallCmd(g),
	)
	return root
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print ward's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.print(map[string]string{"version": Version}, func(w io.Writer) {
				fmt.Fprintln(w, "ward", Version)
			})
		},
	}
}
