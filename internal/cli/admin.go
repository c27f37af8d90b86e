package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

// obj is a JSON object answered by the authority; kept generic so that
// --output json passes the authority's fields through unchanged.
type obj map[string]any

func (o obj) str(key string) string {
	v, ok := o[key]
	if !ok || v == nil {
		return ""
	}
	switch t := v.(type) {
	case string:
		return t
	case []any:
		parts := make([]string, 0, len(t))
		for _, e := range t {
			parts = append(parts, fmt.Sprint(e))
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(t)
	}
}

// items extracts the list from a list answer: either a bare JSON array or an
// object with exactly one array field.
func items(raw json.RawMessage) ([]obj, error) {
	var list []obj
	if err := json.Unmarshal(raw, &list); err == nil {
		return list, nil
	}
	var wrapper map[string]json.RawMessage
	if err := json.Unmarshal(raw, &wrapper); err != nil {
		return nil, fmt.Errorf("authority answer is not a list: %w", err)
	}
	keys := make([]string, 0, len(wrapper))
	for k := range wrapper {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := json.Unmarshal(wrapper[k], &list); err == nil {
			return list, nil
		}
	}
	return nil, fmt.Errorf("authority answer holds no list")
}

// getList fetches a list endpoint and prints it as a table or as JSON.
func (g *globals) getList(cmd *cobra.Command, path string, cols ...string) error {
	c, err := g.adminClient()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.do(cmd.Context(), "GET", path, nil, &raw); err != nil {
		return err
	}
	list, err := items(raw)
	if err != nil {
		return err
	}
	if list == nil {
		list = []obj{}
	}
	return g.print(list, func(w io.Writer) {
		rows := make([][]string, 0, len(list))
		for _, it := range list {
			row := make([]string, len(cols))
			for i, c := range cols {
				row[i] = it.str(c)
			}
			rows = append(rows, row)
		}
		header := make([]string, len(cols))
		for i, c := range cols {
			header[i] = strings.ToUpper(c)
		}
		table(w, header, rows)
	})
}

// send posts (or deletes) and prints the answer; text prints key: value lines
// for the named keys.
func (g *globals) send(cmd *cobra.Command, method, path string, in any, keys ...string) (obj, error) {
	c, err := g.adminClient()
	if err != nil {
		return nil, err
	}
	out := obj{}
	if err := c.do(cmd.Context(), method, path, in, &out); err != nil {
		return nil, err
	}
	return out, g.print(out, func(w io.Writer) {
		for _, k := range keys {
			if v := out.str(k); v != "" {
				fmt.Fprintf(w, "%-20s %s\n", k+":", v)
			}
		}
	})
}

func pathEscape(s string) string { return url.PathEscape(s) }

func newTeamCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "team", Short: "Manage teams (each has its own intermediate CA)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "create NAME",
		Short: "Create a team and its intermediate CA",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.send(cmd, "POST", "/v1/teams", obj{"name": args[0]}, "name", "ca_id", "created_at")
			return err
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List teams",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.getList(cmd, "/v1/teams", "name", "ca_id", "created_at")
		},
	})
	return cmd
}

func newServiceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "service", Short: "Register services and manage their bootstrap tokens"}
	var team, level, ttl, tokenTTL string
	create := &cobra.Command{
		Use:   "create NAME --team TEAM --level L1|L2|L3",
		Short: "Register a service; prints its bootstrap token once",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if team == "" {
				return usageError{fmt.Errorf("--team is required")}
			}
			body := obj{"name": args[0], "team": team, "level": level}
			if ttl != "" {
				body["svid_ttl"] = ttl
			}
			if tokenTTL != "" {
				body["bootstrap_token_ttl"] = tokenTTL
			}
			_, err := g.send(cmd, "POST", "/v1/services", body, "name", "team", "level", "svid_ttl", "spiffe_id", "bootstrap_token", "bootstrap_token_expires_at")
			return err
		},
	}
	create.Flags().StringVar(&team, "team", "", "owning team (required)")
	create.Flags().StringVar(&level, "level", "L2", "security level: L1, L2 or L3")
	create.Flags().StringVar(&ttl, "svid-ttl", "", "SVID lifetime (default by level: L1/L2 1h, L3 15m; at most 24h)")
	create.Flags().StringVar(&tokenTTL, "token-ttl", "", "bootstrap token lifetime, e.g. 720h (default: valid until revoked)")
	var extraTTL string
	token := &cobra.Command{
		Use:   "token NAME",
		Short: "Issue an additional bootstrap token for a service (shown once)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var body any
			if extraTTL != "" {
				body = obj{"ttl": extraTTL}
			}
			_, err := g.send(cmd, "POST", "/v1/services/"+pathEscape(args[0])+"/bootstrap-token", body, "bootstrap_token", "expires_at")
			return err
		},
	}
	token.Flags().StringVar(&extraTTL, "ttl", "", "token lifetime, e.g. 720h (default: valid until revoked)")
	cmd.AddCommand(create, &cobra.Command{
		Use:   "list",
		Short: "List services",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.getList(cmd, "/v1/services", "name", "team", "level", "svid_ttl", "spiffe_id", "revoked_at")
		},
	}, &cobra.Command{
		Use:   "show NAME",
		Short: "Show one service",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.send(cmd, "GET", "/v1/services/"+pathEscape(args[0]), nil, "name", "team", "level", "svid_ttl", "spiffe_id", "created_at", "revoked_at")
			return err
		},
	}, token, &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a service: all its certificates and bootstrap tokens",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.send(cmd, "POST", "/v1/services/"+pathEscape(args[0])+"/revoke", nil, "revoked_serials")
			return err
		},
	})
	return cmd
}

func newCACmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Inspect, rotate and revoke certificate authorities"}
	var kind, team string
	rotate := &cobra.Command{
		Use:   "rotate --kind root|intermediate [--team TEAM]",
		Short: "Create a new root or intermediate in state prepared (in the bundle, not yet issuing)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := obj{"kind": kind}
			if kind == "intermediate" {
				body["team"] = team
			}
			_, err := g.send(cmd, "POST", "/v1/cas/rotate", body, "id", "kind", "team", "state", "not_after")
			return err
		},
	}
	rotate.Flags().StringVar(&kind, "kind", "root", "root or intermediate")
	rotate.Flags().StringVar(&team, "team", "", "team of the intermediate (empty: the authority's own)")
	var force bool
	retire := &cobra.Command{
		Use:   "retire ID",
		Short: "Remove a CA from the bundle (refused while unexpired certificates chain to it, unless --force)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.send(cmd, "POST", "/v1/cas/"+pathEscape(args[0])+"/retire", obj{"force": force}, "id", "state")
			return err
		},
	}
	retire.Flags().BoolVar(&force, "force", false, "retire even though unexpired certificates chain to it")
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List CAs",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.getList(cmd, "/v1/cas", "id", "kind", "team", "parent_id", "state", "not_after")
		},
	}, rotate, &cobra.Command{
		Use:   "activate ID",
		Short: "Start issuing from a prepared CA; the one it replaces becomes retiring",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.send(cmd, "POST", "/v1/cas/"+pathEscape(args[0])+"/activate", nil, "id", "state")
			return err
		},
	}, retire, &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a team intermediate and every certificate it issued",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.send(cmd, "POST", "/v1/cas/"+pathEscape(args[0])+"/revoke", nil, "id", "state", "revoked_serials")
			return err
		},
	})
	return cmd
}

func newAdminTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "admin-token", Short: "Manage admin tokens and their roles"}
	var name string
	var roles []string
	create := &cobra.Command{
		Use:   "create --name NAME --role ROLE [--role ROLE…]",
		Short: "Create an admin token (shown once); roles: admin, security, operator, team:<name>",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" || len(roles) == 0 {
				return usageError{fmt.Errorf("--name and at least one --role are required")}
			}
			_, err := g.send(cmd, "POST", "/v1/admin-tokens", obj{"name": name, "roles": roles}, "id", "name", "roles", "token")
			return err
		},
	}
	create.Flags().StringVar(&name, "name", "", "who or what holds the token")
	create.Flags().StringSliceVar(&roles, "role", nil, "role to grant (repeatable)")
	cmd.AddCommand(create, &cobra.Command{
		Use:   "list",
		Short: "List admin tokens (never their values)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.getList(cmd, "/v1/admin-tokens", "id", "name", "roles", "created_at", "revoked_at")
		},
	}, &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an admin token",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.send(cmd, "DELETE", "/v1/admin-tokens/"+pathEscape(args[0]), nil, "id", "revoked_at")
			return err
		},
	})
	return cmd
}

// exactArgs is cobra.ExactArgs with a usage-error exit status.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
