package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/wardsec/ward/internal/policy"
)

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Cedar policies: test locally, push to a domain, inspect, roll back, explain, see the fleet",
		Long: `A policy domain is a service name (its instances enforce it in their embedded PDP)
or "edge" (the gateway's route-level check). A policy directory holds *.cedar files,
an optional schema.cedarschema and tests/*.yaml; a push is validated against the
schema and every test must pass, or nothing changes.`,
	}
	cmd.AddCommand(newPolicyTestCmd(g), newPolicyPushCmd(g), newPolicyHistoryCmd(g), newPolicyDiffCmd(g),
		newPolicyRollbackCmd(g), newPolicyCheckCmd(g), newPolicyStatusCmd(g), newPolicyDropShadowCmd(g))
	return cmd
}

func requireDomain(domain string) error {
	if domain == "" {
		return usageError{errors.New("--domain is required (a service name, or edge)")}
	}
	return nil
}

func newPolicyTestCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "test --dir DIR",
		Short: "Validate a policy directory against its schema and run its tests (no authority needed)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			src, err := policy.LoadDir(dir)
			if err != nil {
				return err
			}
			r, err := policy.Check(src)
			if err != nil {
				return err
			}
			if err := g.print(r, func(w io.Writer) { printReport(w, r) }); err != nil {
				return err
			}
			if !r.OK() {
				return fmt.Errorf("policy test: %s", r.Summary())
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "policy directory (*.cedar, schema.cedarschema, tests/*.yaml)")
	return cmd
}

func printReport(w io.Writer, r *policy.Report) {
	for _, e := range r.Errors {
		fmt.Fprintf(w, "ERROR %s\n", e)
	}
	for _, c := range r.Cases {
		if c.Passed {
			fmt.Fprintf(w, "PASS  %s: %s\n", c.File, c.Name)
		} else {
			fmt.Fprintf(w, "FAIL  %s: %s: %s\n", c.File, c.Name, c.Problem)
		}
	}
	fmt.Fprintln(w, r.Summary())
}

func newPolicyPushCmd(g *globals) *cobra.Command {
	var domain, dir string
	var shadow bool
	cmd := &cobra.Command{
		Use:   "push --domain D --dir DIR [--shadow]",
		Short: "Publish a policy directory as the domain's next version (refused unless valid and all tests pass)",
		Long: `ward policy push validates the policies against the schema and runs every test in the
authority; a version that fails is refused and changes nothing. An accepted version is
enforced by every instance of the domain within about a second. With --shadow the
version is evaluated beside the active one without being enforced: instances count
and log where the two disagree. A team token may push only its own services' domains;
edge needs an admin or security token.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDomain(domain); err != nil {
				return err
			}
			src, err := policy.LoadDir(dir)
			if err != nil {
				return err
			}
			body := struct {
				policy.Source
				Shadow bool `json:"shadow"`
			}{src, shadow}
			_, err = g.send(cmd, http.MethodPost, "/v1/policy/domains/"+pathEscape(domain)+"/versions", body,
				"domain", "version", "kind", "active", "shadow", "digest")
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&domain, "domain", "", "policy domain: a service name, or edge")
	f.StringVar(&dir, "dir", ".", "policy directory")
	f.BoolVar(&shadow, "shadow", false, "publish as a shadow candidate (evaluated, not enforced)")
	return cmd
}

func newPolicyHistoryCmd(g *globals) *cobra.Command {
	var domain string
	cmd := &cobra.Command{
		Use:   "history --domain D",
		Short: "List a domain's versions, newest first",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDomain(domain); err != nil {
				return err
			}
			return g.getList(cmd, "/v1/policy/domains/"+pathEscape(domain)+"/versions", "version", "kind", "active", "shadow", "rollback_of", "digest", "created_by", "created_at")
		},
	}
	cmd.Flags().StringVar(&domain, "domain", "", "policy domain")
	return cmd
}

// versionSource is GET .../versions/{n}.
type versionSource struct {
	Version int64          `json:"version"`
	Source  *policy.Source `json:"source"`
}

func newPolicyDiffCmd(g *globals) *cobra.Command {
	var domain string
	var from, to int64
	cmd := &cobra.Command{
		Use:   "diff --domain D [--from N] [--to M]",
		Short: "Show what changed between two versions (default: the active one and the one before it)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDomain(domain); err != nil {
				return err
			}
			c, err := g.adminClient()
			if err != nil {
				return err
			}
			base := "/v1/policy/domains/" + pathEscape(domain) + "/versions"
			if to == 0 {
				var h struct {
					Active int64 `json:"active"`
				}
				if err := c.do(cmd.Context(), "GET", base, nil, &h); err != nil {
					return err
				}
				if to = h.Active; to == 0 {
					return fmt.Errorf("domain %s has no active version", domain)
				}
			}
			if from == 0 {
				from = to - 1
			}
			if from < 1 {
				return fmt.Errorf("version %d has no predecessor: pass --from", to)
			}
			var a, b versionSource
			if err := c.do(cmd.Context(), "GET", base+"/"+strconv.FormatInt(from, 10), nil, &a); err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "GET", base+"/"+strconv.FormatInt(to, 10), nil, &b); err != nil {
				return err
			}
			d := diffSources(*a.Source, *b.Source)
			return g.print(map[string]any{"from": from, "to": to, "diff": d}, func(w io.Writer) {
				fmt.Fprintf(w, "--- version %d\n+++ version %d\n", from, to)
				if d == "" {
					fmt.Fprintln(w, "(no difference)")
				}
				fmt.Fprint(w, d)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&domain, "domain", "", "policy domain")
	f.Int64Var(&from, "from", 0, "older version (default: the one before --to)")
	f.Int64Var(&to, "to", 0, "newer version (default: the active one)")
	return cmd
}

// diffSources is a line diff of two versions, file by file.
func diffSources(a, b policy.Source) string {
	files := map[string][2]string{}
	for _, f := range a.Policies {
		v := files[f.Name]
		v[0] = f.Text
		files[f.Name] = v
	}
	for _, f := range b.Policies {
		v := files[f.Name]
		v[1] = f.Text
		files[f.Name] = v
	}
	v := files[policy.SchemaFile]
	v[0], v[1] = a.Schema, b.Schema
	files[policy.SchemaFile] = v
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var out strings.Builder
	for _, n := range names {
		if files[n][0] == files[n][1] {
			continue
		}
		fmt.Fprintf(&out, "@@ %s\n", n)
		out.WriteString(lineDiff(files[n][0], files[n][1]))
	}
	return out.String()
}

// lineDiff marks removed lines "-" and added ones "+" (longest common
// subsequence; files too large for it are shown whole).
func lineDiff(a, b string) string {
	x, y := splitLines(a), splitLines(b)
	var out strings.Builder
	if len(x)*len(y) > 4_000_000 {
		for _, l := range x {
			out.WriteString("-" + l + "\n")
		}
		for _, l := range y {
			out.WriteString("+" + l + "\n")
		}
		return out.String()
	}
	lcs := make([][]int32, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int32, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			i, j = i+1, j+1
		case j < len(y) && (i == len(x) || lcs[i][j+1] >= lcs[i+1][j]):
			out.WriteString("+" + y[j] + "\n")
			j++
		default:
			out.WriteString("-" + x[i] + "\n")
			i++
		}
	}
	return out.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func newPolicyRollbackCmd(g *globals) *cobra.Command {
	var domain string
	var to int64
	cmd := &cobra.Command{
		Use:   "rollback --domain D --to N",
		Short: "Republish version N's content as the domain's next version",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDomain(domain); err != nil {
				return err
			}
			if to < 1 {
				return usageError{errors.New("--to VERSION is required")}
			}
			_, err := g.send(cmd, http.MethodPost, "/v1/policy/domains/"+pathEscape(domain)+"/rollback", map[string]int64{"to": to},
				"domain", "version", "kind", "rollback_of", "active", "digest")
			return err
		},
	}
	cmd.Flags().StringVar(&domain, "domain", "", "policy domain")
	cmd.Flags().Int64Var(&to, "to", 0, "version whose content to republish")
	return cmd
}

func newPolicyDropShadowCmd(g *globals) *cobra.Command {
	var domain string
	cmd := &cobra.Command{
		Use:   "drop-shadow --domain D",
		Short: "Stop evaluating the domain's shadow candidate",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDomain(domain); err != nil {
				return err
			}
			_, err := g.send(cmd, http.MethodDelete, "/v1/policy/domains/"+pathEscape(domain)+"/shadow", nil, "domain", "active", "revision")
			return err
		},
	}
	cmd.Flags().StringVar(&domain, "domain", "", "policy domain")
	return cmd
}

// cedarUID accepts Type::"id" and the shell-friendly Type::id.
func cedarUID(s string) string {
	i := strings.LastIndex(s, "::")
	if i < 0 || strings.HasPrefix(s[i+2:], `"`) {
		return s
	}
	id, _ := json.Marshal(s[i+2:])
	return s[:i+2] + string(id)
}

func newPolicyCheckCmd(g *globals) *cobra.Command {
	var domain, principal, action, resource, ctxJSON, entitiesFile string
	var version int64
	cmd := &cobra.Command{
		Use:   "check --domain D --principal P --action A --resource R [--context JSON] [--entities FILE]",
		Short: "Evaluate a request against the active version and show which policies decided",
		Example: `  ward policy check --domain whoami --principal 'User::"alice"' --action 'Action::"read"' \
    --resource 'whoami::"/whoami"' --context '{"auth_method":"apikey"}' --entities entities.yaml`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDomain(domain); err != nil {
				return err
			}
			if principal == "" || action == "" || resource == "" {
				return usageError{errors.New("--principal, --action and --resource are required")}
			}
			c := policy.Case{Principal: cedarUID(principal), Action: cedarUID(action), Resource: cedarUID(resource)}
			if ctxJSON != "" {
				if err := json.Unmarshal([]byte(ctxJSON), &c.Context); err != nil {
					return usageError{fmt.Errorf("--context: not a JSON object: %v", err)}
				}
			}
			if entitiesFile != "" {
				data, err := readBounded(entitiesFile, policy.MaxTestBytes)
				if err != nil {
					return err
				}
				if c.Entities, err = policy.ParseEntities(data); err != nil {
					return err
				}
			}
			cl, err := g.adminClient()
			if err != nil {
				return err
			}
			var ex policy.Explanation
			body := struct {
				policy.Case
				Version int64 `json:"version,omitempty"`
			}{c, version}
			if err := cl.do(cmd.Context(), http.MethodPost, "/v1/policy/domains/"+pathEscape(domain)+"/check", body, &ex); err != nil {
				return err
			}
			return g.print(ex, func(w io.Writer) {
				verdict := "DENY"
				if ex.Allowed {
					verdict = "ALLOW"
				}
				fmt.Fprintf(w, "%s (%s) by version %d\n", verdict, ex.Reason, ex.Version)
				for _, p := range ex.Decided {
					fmt.Fprintf(w, "  %s %s at %s:%d\n    %s\n", p.Effect, p.ID, p.File, p.Line, strings.ReplaceAll(strings.TrimSpace(p.Text), "\n", "\n    "))
				}
				for _, e := range ex.Errors {
					fmt.Fprintf(w, "  error: %s\n", e)
				}
				if len(ex.Decided) == 0 && !ex.Allowed && ex.Reason == "no-permit" {
					fmt.Fprintln(w, "  no policy matched: Cedar denies by default")
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&domain, "domain", "", "policy domain")
	f.StringVar(&principal, "principal", "", `principal, e.g. User::"alice"`)
	f.StringVar(&action, "action", "", `action, e.g. Action::"read"`)
	f.StringVar(&resource, "resource", "", `resource, e.g. orders::"42"`)
	f.StringVar(&ctxJSON, "context", "", "context as a JSON object")
	f.StringVar(&entitiesFile, "entities", "", "YAML or JSON list of entities (uid, parents, attrs)")
	f.Int64Var(&version, "version", 0, "evaluate this version instead of the active one")
	return cmd
}

func newPolicyStatusCmd(g *globals) *cobra.Command {
	var domain string
	cmd := &cobra.Command{
		Use:   "status --domain D",
		Short: "Show which running instances enforce which version of the domain",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDomain(domain); err != nil {
				return err
			}
			c, err := g.adminClient()
			if err != nil {
				return err
			}
			var st struct {
				Domain    string `json:"domain"`
				Active    int64  `json:"active"`
				Shadow    int64  `json:"shadow"`
				Revision  int64  `json:"revision"`
				Current   int    `json:"current"`
				Total     int    `json:"total"`
				Instances []struct {
					Instance   string `json:"instance"`
					SPIFFEID   string `json:"spiffe_id"`
					Version    int64  `json:"version"`
					Revision   int64  `json:"revision"`
					Shadow     int64  `json:"shadow_version"`
					ReportedAt string `json:"reported_at"`
					Current    bool   `json:"current"`
				} `json:"instances"`
			}
			var raw json.RawMessage
			if err := c.do(cmd.Context(), http.MethodGet, "/v1/policy/domains/"+pathEscape(domain)+"/status", nil, &raw); err != nil {
				return err
			}
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("authority answer: %w", err)
			}
			return g.print(raw, func(w io.Writer) {
				fmt.Fprintf(w, "domain %s: active version %d, revision %d", st.Domain, st.Active, st.Revision)
				if st.Shadow != 0 {
					fmt.Fprintf(w, ", shadow version %d", st.Shadow)
				}
				fmt.Fprintf(w, "\n%d of %d running instance(s) on the current revision\n", st.Current, st.Total)
				if st.Total == 0 {
					return
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "INSTANCE\tSPIFFE ID\tVERSION\tREVISION\tSHADOW\tREPORTED\tCURRENT")
				for _, in := range st.Instances {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%v\n", in.Instance, in.SPIFFEID, in.Version, in.Revision, in.Shadow, in.ReportedAt, in.Current)
				}
				_ = tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&domain, "domain", "", "policy domain")
	return cmd
}
