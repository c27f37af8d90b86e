package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wardsec/ward/internal/catalog"
)

func newPostureCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "posture",
		Short: "Report every service with its level, grants, and the rules they break",
		Long: `ward posture lists every registered service with its security level, the
version it last declared, the grants it holds as provider and consumer, and
every catalogue rule that a grant or a declaration breaks (for example an L3
provider's grant approved without the security role). Use -o json for the
full report; the exit status is 0 either way.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.adminClient()
			if err != nil {
				return err
			}
			var rep catalog.Report
			if err := c.do(cmd.Context(), "GET", "/v1/posture", nil, &rep); err != nil {
				return err
			}
			return g.print(rep, func(w io.Writer) { writePosture(w, rep) })
		},
	}
}

func writePosture(w io.Writer, rep catalog.Report) {
	rows := make([][]string, 0, len(rep.Services))
	for _, s := range rep.Services {
		state := "active"
		if s.Revoked {
			state = "revoked"
		}
		declared := s.Declared
		if declared == "" {
			declared = "-"
		}
		rows = append(rows, []string{s.Name, s.Team, s.Level, state, declared,
			fmt.Sprint(len(s.GrantsIn)), fmt.Sprint(len(s.GrantsOut)), fmt.Sprint(s.Pending), fmt.Sprint(len(s.Violations))})
	}
	table(w, []string{"SERVICE", "TEAM", "LEVEL", "STATE", "DECLARED", "CALLERS", "CALLS", "PENDING", "VIOLATIONS"}, rows)
	fmt.Fprintln(w)
	var grants [][]string
	for _, s := range rep.Services {
		for _, gr := range s.GrantsIn {
			by := gr.ApprovedBy
			if gr.Auto {
				by = "auto"
			}
			grants = append(grants, []string{gr.ID, gr.Consumer, gr.Provider, gr.Resource, strings.Join(gr.Actions, ","), by, gr.Role})
		}
	}
	if len(grants) == 0 {
		fmt.Fprintln(w, "No grants.")
	} else {
		table(w, []string{"GRANT", "CONSUMER", "PROVIDER", "RESOURCE", "ACTIONS", "APPROVED BY", "ROLE"}, grants)
	}
	fmt.Fprintln(w)
	if len(rep.Violations) == 0 {
		fmt.Fprintln(w, "No violations.")
		return
	}
	vrows := make([][]string, 0, len(rep.Violations))
	for _, v := range rep.Violations {
		grant := v.GrantID
		if grant == "" {
			grant = "-"
		}
		vrows = append(vrows, []string{strings.ToUpper(v.Severity), v.Rule, v.Service, grant, v.Detail})
	}
	table(w, []string{"SEVERITY", "RULE", "SERVICE", "GRANT", "DETAIL"}, vrows)
}

func newAccessListCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "accesslist",
		Short: "Inspect a provider's signed access list",
	}
	var dir string
	show := &cobra.Command{
		Use:   "show --svid-dir DIR",
		Short: "Fetch the service's own access list over mTLS, verify it against /v1/keys and print it",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.svidSession(dir)
			if err != nil {
				return err
			}
			list, err := s.verifiedList(cmd.Context())
			if err != nil {
				return err
			}
			return g.print(list, func(w io.Writer) {
				fmt.Fprintf(w, "provider:  %s\nversion:   %d\nissued:    %s\nsigned by: %s (signature verified)\n\n",
					list.Subject, list.Version, time.Unix(list.IssuedAt, 0).UTC().Format(time.RFC3339), list.Issuer)
				if len(list.Consumers) == 0 {
					fmt.Fprintln(w, "No consumer may call this service.")
					return
				}
				var rows [][]string
				for _, c := range list.Consumers {
					for _, gr := range c.Grants {
						rows = append(rows, []string{c.ID, gr.Resource, strings.Join(gr.Actions, ",")})
					}
				}
				table(w, []string{"CONSUMER", "RESOURCE", "ACTIONS"}, rows)
			})
		},
	}
	show.Flags().StringVar(&dir, "svid-dir", "", "directory with the provider's svid.pem, svid.key, bundle.pem")
	cmd.AddCommand(show)
	return cmd
}
