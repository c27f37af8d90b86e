package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// splitScopes accepts "a b", "a,b" or repeated flags.
func splitScopes(vals []string) []string {
	var out []string
	for _, v := range vals {
		out = append(out, strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' })...)
	}
	return out
}

func newAPIKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apikey",
		Short: "Opaque API keys for external API consumers",
	}
	var subject, tenant, ttl string
	var scopes, meta []string
	create := &cobra.Command{
		Use:   "create --subject S --scope \"a b\" [--ttl D] [--tenant T] [--meta k=v]",
		Short: "Create an API key (printed once; only its hash is stored)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if subject == "" {
				return usageError{errors.New("--subject is required")}
			}
			md := map[string]string{}
			for _, kv := range meta {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageError{fmt.Errorf("--meta %q: want key=value", kv)}
				}
				md[k] = v
			}
			body := map[string]any{"subject": subject, "tenant": tenant, "scopes": splitScopes(scopes), "ttl": ttl, "metadata": md}
			_, err := g.send(cmd, http.MethodPost, "/v1/api-keys", body, "id", "api_key", "subject", "tenant", "scopes", "expires_at")
			return err
		},
	}
	create.Flags().StringVar(&subject, "subject", "", "who the key acts for")
	create.Flags().StringVar(&tenant, "tenant", "", "tenant of the subject")
	create.Flags().StringArrayVar(&scopes, "scope", nil, "scopes (space or comma separated; repeatable)")
	create.Flags().StringVar(&ttl, "ttl", "", "lifetime, e.g. 720h (default: until revoked)")
	create.Flags().StringArrayVar(&meta, "meta", nil, "metadata key=value (repeatable)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List API keys (never their values)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.getList(cmd, "/v1/api-keys", "id", "subject", "tenant", "scopes", "expires_at", "revoked_at")
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key; verifiers learn it within a second",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.send(cmd, http.MethodPost, "/v1/api-keys/"+pathEscape(args[0])+"/revoke", nil, "id", "revoked_at")
			return err
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newClientCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "client",
		Short: "OAuth 2.0 clients of the token service",
	}
	var grants, scopes, audiences []string
	var auth, tlsSubject, alg, ttl, jwksFile string
	create := &cobra.Command{
		Use:   "create NAME --grant client_credentials --scope \"a b\" [--auth METHOD] [--tls-subject SPIFFE-ID]",
		Short: "Register a client (its secret, if any, is printed once)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if auth == "tls_client_auth" && tlsSubject == "" {
				return usageError{errors.New("--auth tls_client_auth needs --tls-subject (the SPIFFE ID of the client's certificate)")}
			}
			if (auth == "private_key_jwt") != (jwksFile != "") {
				return usageError{errors.New("--auth private_key_jwt and --jwks FILE go together")}
			}
			var jwks json.RawMessage
			if jwksFile != "" {
				data, err := os.ReadFile(jwksFile)
				if err != nil {
					return fmt.Errorf("read --jwks: %w", err)
				}
				if !json.Valid(data) {
					return usageError{fmt.Errorf("--jwks %s is not JSON", jwksFile)}
				}
				jwks = data
			}
			body := map[string]any{
				"name": args[0], "grant_types": splitScopes(grants), "scopes": splitScopes(scopes), "audiences": splitScopes(audiences),
				"token_endpoint_auth_method": auth, "tls_client_auth_subject": tlsSubject, "token_alg": alg, "token_ttl": ttl,
			}
			if jwks != nil {
				body["jwks"] = jwks
			}
			_, err := g.send(cmd, http.MethodPost, "/v1/oauth-clients", body, "client_id", "client_secret", "name", "grant_types", "scopes", "token_endpoint_auth_method", "token_alg")
			return err
		},
	}
	create.Flags().StringArrayVar(&grants, "grant", []string{"client_credentials"}, "grant types (repeatable)")
	create.Flags().StringArrayVar(&scopes, "scope", nil, "scopes the client may ask for")
	create.Flags().StringArrayVar(&audiences, "audience", nil, "audiences the client may ask for (default: the default audience only)")
	create.Flags().StringVar(&auth, "auth", "client_secret_basic", "client_secret_basic, client_secret_post, private_key_jwt or tls_client_auth")
	create.Flags().StringVar(&jwksFile, "jwks", "", "private_key_jwt: file with the client's public keys (JWKS)")
	create.Flags().StringVar(&tlsSubject, "tls-subject", "", "tls_client_auth: SPIFFE ID the client certificate must carry")
	create.Flags().StringVar(&alg, "alg", "", "access-token signature: EdDSA (default) or ES256")
	create.Flags().StringVar(&ttl, "token-ttl", "", "access-token lifetime (default 10m)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List OAuth clients (never their secrets)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.getList(cmd, "/v1/oauth-clients", "client_id", "name", "grant_types", "scopes", "token_endpoint_auth_method", "revoked_at")
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke CLIENT_ID",
		Short: "Revoke a client: it gets no new tokens and its tokens are refused",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := g.send(cmd, http.MethodPost, "/v1/oauth-clients/"+pathEscape(args[0])+"/revoke", nil, "client_id", "revoked_at")
			return err
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newKeysCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "The token service's signing keys",
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List token-signing keys and their states (next, active, retiring, retired)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.getList(cmd, "/v1/token-keys", "kid", "alg", "state", "created_at", "activated_at", "retired_at")
		},
	}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Activate new token-signing keys now (old keys keep verifying until their tokens expire)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.adminClient()
			if err != nil {
				return err
			}
			var keys []obj
			if err := c.do(cmd.Context(), http.MethodPost, "/v1/token-keys/rotate", nil, &keys); err != nil {
				return err
			}
			return g.print(keys, func(w io.Writer) {
				rows := make([][]string, 0, len(keys))
				for _, k := range keys {
					rows = append(rows, []string{k.str("kid"), k.str("alg"), k.str("state"), k.str("activated_at")})
				}
				table(w, []string{"KID", "ALG", "STATE", "ACTIVATED_AT"}, rows)
			})
		},
	}
	cmd.AddCommand(list, rotate)
	return cmd
}
