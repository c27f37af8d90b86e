package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/problem"
)

// svidSession is a workload's view of the authority: its SVID and bundle
// from a directory, and an mTLS client that accepts only the authority.
type svidSession struct {
	api    *apiClient // no admin token: the SVID authenticates
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
	td     spiffeid.TrustDomain
	guard  *guard.Client
}

func (g *globals) svidSession(dir string) (*svidSession, error) {
	if dir == "" {
		return nil, usageError{errors.New("--svid-dir is required (fetch one with `ward svid fetch`)")}
	}
	base, err := g.authorityURL()
	if err != nil {
		return nil, err
	}
	svid, bundle, err := identity.LoadDir(dir)
	if err != nil {
		return nil, err
	}
	td := svid.ID.TrustDomain()
	authID, err := spiffeid.FromSegments(td, "ward", "authority")
	if err != nil {
		return nil, err
	}
	tlsConf := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(authID))
	gc, err := guard.NewClient(base, tlsConf)
	if err != nil {
		return nil, err
	}
	return &svidSession{
		api: &apiClient{base: base, http: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true},
		}},
		svid:   svid,
		bundle: bundle,
		td:     td,
		guard:  gc,
	}, nil
}

// verifiedList fetches the session's own access list and the authority's
// keys, and verifies the list as a guard would.
func (s *svidSession) verifiedList(ctx context.Context) (*guard.AccessList, error) {
	jws, err := s.guard.FetchAccessList(ctx)
	if err != nil {
		return nil, err
	}
	jwks, err := s.guard.FetchKeys(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := guard.ParseKeySet(jwks, s.bundle, s.td, time.Now())
	if err != nil {
		return nil, err
	}
	return guard.Verify(jws, keys, s.svid.ID)
}

func newCatalogCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "catalog",
		Short: "The dependency catalogue: declarations, access requests and grants",
		Long: `A service declares what it provides and consumes (ward.yaml); a new or widened
consumption becomes an access request that security (or the provider's team,
for L1 and L2 providers) approves or denies. Approved requests are grants,
compiled into each provider's signed access list.`,
	}
	cmd.AddCommand(newCatalogDeclareCmd(g), newCatalogPendingCmd(g), newCatalogRequestsCmd(g),
		newCatalogShowCmd(g), newCatalogDecideCmd(g, "approve"), newCatalogDecideCmd(g, "deny"),
		newCatalogGrantsCmd(g), newCatalogRevokeGrantCmd(g), newCatalogGraphCmd(g))
	return cmd
}

func newCatalogDeclareCmd(g *globals) *cobra.Command {
	var dir, file string
	cmd := &cobra.Command{
		Use:   "declare --svid-dir DIR --file ward.yaml",
		Short: "Send a service's manifest, authenticated by its own SVID",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError{errors.New("--file is required (the service's ward.yaml)")}
			}
			s, err := g.svidSession(dir)
			if err != nil {
				return err
			}
			var data []byte
			if file == "-" {
				data, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("read manifest: %w", err)
			}
			var out declareAnswer
			if err := s.api.doBody(cmd.Context(), http.MethodPost, "/v1/catalog/declarations", "application/yaml", data, &out); err != nil {
				return err
			}
			return g.print(out, func(w io.Writer) {
				state := "declared"
				if out.Unchanged {
					state = "unchanged"
				}
				fmt.Fprintf(w, "%s %s: %s\n", out.Service, out.Version, state)
				if len(out.Consumes) == 0 {
					return
				}
				rows := make([][]string, 0, len(out.Consumes))
				for _, c := range out.Consumes {
					rows = append(rows, []string{c.Provider, c.Resource, strings.Join(c.Actions, ","), c.State, c.RequestID})
				}
				table(w, []string{"PROVIDER", "RESOURCE", "ACTIONS", "STATE", "REQUEST"}, rows)
			})
		},
	}
	cmd.Flags().StringVar(&dir, "svid-dir", "", "directory with the service's svid.pem, svid.key, bundle.pem")
	cmd.Flags().StringVar(&file, "file", "", "manifest file (YAML or JSON; - for stdin)")
	return cmd
}

type declareAnswer struct {
	Service    string    `json:"service"`
	Version    string    `json:"version"`
	DeclaredAt time.Time `json:"declared_at"`
	Unchanged  bool      `json:"unchanged"`
	Consumes   []struct {
		Provider  string   `json:"provider"`
		Resource  string   `json:"resource"`
		Actions   []string `json:"actions"`
		State     string   `json:"state"`
		RequestID string   `json:"request_id,omitempty"`
		Missing   []string `json:"missing,omitempty"`
		Reason    string   `json:"reason,omitempty"`
	} `json:"consumes"`
}

var requestCols = []string{"id", "consumer", "consumer_level", "provider", "provider_level", "resource", "actions", "state"}

func newCatalogPendingCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "pending",
		Short: "List access requests waiting for review, with who may approve them",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.getList(cmd, "/v1/catalog/requests?state=pending",
				"id", "consumer", "consumer_level", "provider", "provider_level", "resource", "actions", "approvers", "needs_justification")
		},
	}
}

func newCatalogRequestsCmd(g *globals) *cobra.Command {
	var state, consumer, provider string
	cmd := &cobra.Command{
		Use:   "requests [--state STATE] [--consumer NAME] [--provider NAME]",
		Short: "List access requests (pending, approved, denied, superseded, revoked or all)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{"state": {state}}
			setIf(q, "consumer", consumer)
			setIf(q, "provider", provider)
			return g.getList(cmd, "/v1/catalog/requests?"+q.Encode(), append(requestCols, "decided_by", "reason")...)
		},
	}
	cmd.Flags().StringVar(&state, "state", "all", "pending, approved, denied, superseded, revoked or all")
	cmd.Flags().StringVar(&consumer, "consumer", "", "only requests of this consumer")
	cmd.Flags().StringVar(&provider, "provider", "", "only requests to this provider")
	return cmd
}

func setIf(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

func newCatalogShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one access request or grant with its decision record",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.sendKeys(cmd, http.MethodGet, "/v1/catalog/requests/"+pathEscape(args[0]), nil)
			return err
		},
	}
}

// requestKeys are printed, in order, for one request.
var requestKeys = []string{"id", "state", "consumer", "consumer_level", "provider", "provider_level", "resource", "actions",
	"consumer_version", "requested_at", "approvers", "needs_justification", "auto", "decided_by", "decided_role", "decided_at",
	"reason", "revoked_by", "revoked_at", "revoke_reason"}

func (g *globals) sendKeys(cmd *cobra.Command, method, path string, in any) (obj, error) {
	return g.send(cmd, method, path, in, requestKeys...)
}

func newCatalogDecideCmd(g *globals, verb string) *cobra.Command {
	var reason string
	short := "Approve an access request (an L1 consumer of an L3 provider needs --reason, ≥ 10 characters)"
	if verb == "deny" {
		short = "Deny an access request (--reason is required)"
	}
	cmd := &cobra.Command{
		Use:   verb + " ID [--reason TEXT]",
		Short: short,
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if verb == "deny" && strings.TrimSpace(reason) == "" {
				return usageError{errors.New("--reason is required to deny a request")}
			}
			_, err := g.sendKeys(cmd, http.MethodPost, "/v1/catalog/requests/"+pathEscape(args[0])+"/"+verb, map[string]string{"reason": reason})
			return err
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded with the decision)")
	return cmd
}

func newCatalogGrantsCmd(g *globals) *cobra.Command {
	var consumer, provider string
	cmd := &cobra.Command{
		Use:   "grants [--consumer NAME] [--provider NAME]",
		Short: "List grants (approved access requests)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			setIf(q, "consumer", consumer)
			setIf(q, "provider", provider)
			return g.getList(cmd, "/v1/catalog/grants?"+q.Encode(),
				"id", "consumer", "provider", "resource", "actions", "decided_by", "decided_role", "decided_at")
		},
	}
	cmd.Flags().StringVar(&consumer, "consumer", "", "only grants of this consumer")
	cmd.Flags().StringVar(&provider, "provider", "", "only grants of this provider")
	return cmd
}

func newCatalogRevokeGrantCmd(g *globals) *cobra.Command {
	var reason, consumer, provider string
	cmd := &cobra.Command{
		Use:   "revoke-grant (ID | --consumer NAME --provider NAME) --reason TEXT",
		Short: "Take a grant back; the provider's access list changes at once",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError{fmt.Errorf("%s takes at most one grant ID", cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usageError{errors.New("--reason is required to revoke a grant")}
			}
			ids := args
			if len(args) == 0 {
				if consumer == "" || provider == "" {
					return usageError{errors.New("give a grant ID, or both --consumer and --provider")}
				}
				c, err := g.adminClient()
				if err != nil {
					return err
				}
				var grants []struct {
					ID string `json:"id"`
				}
				q := url.Values{"consumer": {consumer}, "provider": {provider}}
				if err := c.do(cmd.Context(), http.MethodGet, "/v1/catalog/grants?"+q.Encode(), nil, &grants); err != nil {
					return err
				}
				if len(grants) == 0 {
					return fmt.Errorf("%s holds no grant of %s", consumer, provider)
				}
				ids = nil
				for _, gr := range grants {
					ids = append(ids, gr.ID)
				}
			} else if consumer != "" || provider != "" {
				return usageError{errors.New("give a grant ID or --consumer and --provider, not both")}
			}
			sort.Strings(ids)
			for _, id := range ids {
				if _, err := g.sendKeys(cmd, http.MethodPost, "/v1/catalog/grants/"+pathEscape(id)+"/revoke", map[string]string{"reason": reason}); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded with the revocation)")
	cmd.Flags().StringVar(&consumer, "consumer", "", "revoke every grant of this consumer to --provider")
	cmd.Flags().StringVar(&provider, "provider", "", "with --consumer")
	return cmd
}

func newCatalogGraphCmd(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "graph [--format dot|mermaid]",
		Short: "Draw who may call whom (Graphviz dot or Mermaid)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "dot" && format != "mermaid" {
				return usageError{fmt.Errorf("--format must be dot or mermaid, not %q", format)}
			}
			c, err := g.adminClient()
			if err != nil {
				return err
			}
			text, err := c.text(cmd.Context(), "/v1/catalog/graph?format="+format)
			if err != nil {
				return err
			}
			_, err = io.WriteString(g.stdout, text)
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "dot", "dot or mermaid")
	return cmd
}

// text GETs a text answer.
func (c *apiClient) text(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("authority unreachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return "", problem.Decode(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	return string(data), err
}
