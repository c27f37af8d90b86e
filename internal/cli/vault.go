package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/internal/vault"
)

func newVaultCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vault",
		Short: "The PII vault: run it, tokenize and reveal values, erase and export data subjects",
		Long: `The vault is the one service that holds real card numbers, national IDs, e-mail
addresses and passport numbers; every other service holds tokens. It is the catalogue
provider "vault" with one resource per token type (pan, ssn, email, passport_id,
generic) and the actions tokenize, detokenize, metadata, delete, erase and export:
consumers declare what they need and are approved like for any other provider.
Client commands authenticate with the caller's SVID directory; the vault's address
comes from --vault or WARD_VAULT (ward dev writes it into dev.env).`,
	}
	cmd.AddCommand(newVaultRunCmd(g), newVaultTokenizeCmd(g), newVaultDetokenizeCmd(g), newVaultEraseCmd(g),
		newVaultExportCmd(g), newVaultReportCmd(g))
	return cmd
}

// vaultRunFlags are the flags of ward vault run.
type vaultRunFlags struct {
	dir, listen, db, kekFile string
	deterministic            []string
	keepDomain               bool
	rotateEvery              time.Duration
}

func newVaultRunCmd(g *globals) *cobra.Command {
	var f vaultRunFlags
	cmd := &cobra.Command{
		Use:   "run --svid-dir DIR [--db FILE|URL] [--kek-file FILE]",
		Short: "Serve the vault (mTLS, access list, passports, policy domain \"vault\", audit)",
		Long: `ward vault run serves the vault with the SVID in DIR, which must be
spiffe://<td>/svc/vault (register it as an L3 service: ward service create vault --team T
--level L3). It declares its manifest, enforces its access list and Cedar policies,
verifies passports, and audits every decision and every reveal. Values are encrypted
under per-record data keys wrapped by a key-encryption key that is sealed with the key
in --kek-file (created on first use, mode 0600) and rotated every --rotate-every.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.dir == "" {
				return usageError{errors.New("--svid-dir is required")}
			}
			base, err := g.authorityURL()
			if err != nil {
				return err
			}
			_, log, err := g.serverConfig()
			if err != nil {
				return err
			}
			return runVault(cmd.Context(), base, f, log, nil)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "svid-dir", "", "the vault's SVID directory (svid.pem, svid.key, bundle.pem)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8445", "HTTPS listen address")
	fl.StringVar(&f.db, "db", "", "SQLite file or postgres:// URL (default <svid-dir>/../vault.db)")
	fl.StringVar(&f.kekFile, "kek-file", "", "key file sealing the vault's key-encryption keys (default <svid-dir>/../vault.kek)")
	fl.StringSliceVar(&f.deterministic, "deterministic", nil, "token types whose equal values get equal tokens (keyed HMAC index)")
	fl.BoolVar(&f.keepDomain, "keep-email-domain", false, "e-mail tokens keep the address's domain (tok_…@example.com)")
	fl.DurationVar(&f.rotateEvery, "rotate-every", 30*24*time.Hour, "key-encryption key rotation period (0: never)")
	return cmd
}

// runVault runs the vault until ctx ends; ready, if set, gets its URL.
func runVault(ctx context.Context, authority string, f vaultRunFlags, log *slog.Logger, ready func(string)) error {
	parent := filepath.Dir(filepath.Clean(f.dir))
	if f.db == "" {
		f.db = filepath.Join(parent, "vault.db")
	}
	if f.kekFile == "" {
		f.kekFile = filepath.Join(parent, "vault.kek")
	}
	k, err := vault.LocalKMS(f.kekFile)
	if err != nil {
		return err
	}
	rc := vault.RunConfig{AuthorityURL: authority, SVIDDir: f.dir, Listen: f.listen, RotateEvery: f.rotateEvery, Logger: log,
		Vault: vault.Config{DB: f.db, KMS: k, Deterministic: f.deterministic, KeepEmailDomain: f.keepDomain}}
	if ready != nil {
		rc.Ready = func(a net.Addr) { ready("https://" + a.String()) }
	}
	return vault.Run(ctx, rc)
}

// vaultClient calls the vault with the caller's SVID.
type vaultClient struct {
	base string
	hc   *http.Client
}

func (g *globals) vaultClient(dir, base string) (*vaultClient, error) {
	if dir == "" {
		return nil, usageError{errors.New("--svid-dir is required: the vault knows callers by their SVID")}
	}
	if base == "" {
		base = os.Getenv("WARD_VAULT")
	}
	if !strings.HasPrefix(base, "https://") {
		return nil, usageError{errors.New("no vault address: set --vault or WARD_VAULT (source <data>/dev.env)")}
	}
	svid, bundle, err := identity.LoadDir(dir)
	if err != nil {
		return nil, err
	}
	id, err := spiffeid.FromSegments(svid.ID.TrustDomain(), "svc", "vault")
	if err != nil {
		return nil, err
	}
	return &vaultClient{base: strings.TrimRight(base, "/"), hc: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(id))}}}, nil
}

func (c *vaultClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("vault unreachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return problem.Decode(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	return json.Unmarshal(data, out)
}

func checkType(t string) error {
	if !vault.KnownType(t) {
		return usageError{fmt.Errorf("--type %q: want one of %s", t, strings.Join(vault.Types, ", "))}
	}
	return nil
}

func newVaultTokenizeCmd(g *globals) *cobra.Command {
	var dir, base, typ, subject, ttl string
	var values []string
	cmd := &cobra.Command{
		Use:   "tokenize --svid-dir DIR --type T --value V [--value V…] [--subject S] [--ttl 10m]",
		Short: "Store values in the vault and print their tokens",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkType(typ); err != nil {
				return err
			}
			if len(values) == 0 {
				return usageError{errors.New("--value is required")}
			}
			c, err := g.vaultClient(dir, base)
			if err != nil {
				return err
			}
			req := vault.TokenizeRequest{TTL: ttl}
			for _, v := range values {
				req.Values = append(req.Values, vault.Item{Value: v, Subject: subject})
			}
			var out struct {
				Tokens []string `json:"tokens"`
			}
			if err := c.do(cmd.Context(), http.MethodPost, "/v1/tokenize/"+typ, req, &out); err != nil {
				return err
			}
			var v any = map[string]any{"type": typ, "tokens": out.Tokens}
			if len(out.Tokens) == 1 {
				v = map[string]any{"type": typ, "token": out.Tokens[0]}
			}
			return g.print(v, func(w io.Writer) {
				for _, t := range out.Tokens {
					fmt.Fprintln(w, t)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "svid-dir", "", "the caller's SVID directory")
	f.StringVar(&base, "vault", "", "vault URL (default WARD_VAULT)")
	f.StringVar(&typ, "type", "", "token type: "+strings.Join(vault.Types, ", "))
	f.StringArrayVar(&values, "value", nil, "value to tokenize (repeatable, at most 1,000)")
	f.StringVar(&subject, "subject", "", "data subject the values belong to (for erase and export)")
	f.StringVar(&ttl, "ttl", "", "token lifetime, e.g. 10m (default: until deleted or erased)")
	return cmd
}

func newVaultDetokenizeCmd(g *globals) *cobra.Command {
	var dir, base, typ string
	var tokens []string
	cmd := &cobra.Command{
		Use:   "detokenize --svid-dir DIR --token T [--token T…] [--type T]",
		Short: "Reveal values (needs the detokenize grant; every reveal is audited)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(tokens) == 0 {
				return usageError{errors.New("--token is required")}
			}
			if typ == "" { // inferred from the tokens' shape
				for _, tk := range tokens {
					t, ok := vault.TypeOf(tk)
					if !ok || (typ != "" && t != typ) {
						return usageError{errors.New("--type is required: the tokens' type cannot be told from their shape (or they differ)")}
					}
					typ = t
				}
			}
			if err := checkType(typ); err != nil {
				return err
			}
			c, err := g.vaultClient(dir, base)
			if err != nil {
				return err
			}
			var out struct {
				Values []vault.Revealed `json:"values"`
			}
			if err := c.do(cmd.Context(), http.MethodPost, "/v1/detokenize/"+typ, vault.DetokenizeRequest{Tokens: tokens}, &out); err != nil {
				return err
			}
			var v any = out
			if len(out.Values) == 1 {
				v = out.Values[0]
			}
			if err := g.print(v, func(w io.Writer) {
				for _, r := range out.Values {
					if r.Error != "" {
						fmt.Fprintf(w, "%s\t(%s)\n", r.Token, r.Error)
					} else {
						fmt.Fprintln(w, r.Value)
					}
				}
			}); err != nil {
				return err
			}
			for _, r := range out.Values {
				if r.Error != "" {
					return fmt.Errorf("token %s: %s", vault.Fingerprint(r.Token), r.Error)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "svid-dir", "", "the caller's SVID directory")
	f.StringVar(&base, "vault", "", "vault URL (default WARD_VAULT)")
	f.StringVar(&typ, "type", "", "token type (default: told from the tokens): "+strings.Join(vault.Types, ", "))
	f.StringArrayVar(&tokens, "token", nil, "token to reveal (repeatable, at most 1,000)")
	return cmd
}

// subjectCmd runs erase or export for each type.
func subjectCmd(g *globals, verb, short string) *cobra.Command {
	var dir, base, subject string
	var types []string
	cmd := &cobra.Command{
		Use:   verb + " --svid-dir DIR --subject S [--type T…]",
		Short: short,
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if subject == "" {
				return usageError{errors.New("--subject is required")}
			}
			if len(types) == 0 {
				types = vault.Types
			}
			for _, t := range types {
				if err := checkType(t); err != nil {
					return err
				}
			}
			c, err := g.vaultClient(dir, base)
			if err != nil {
				return err
			}
			result := map[string]any{}
			for _, t := range types {
				var out map[string]any
				method := http.MethodPost
				if verb == "export" {
					method = http.MethodGet
				}
				if err := c.do(cmd.Context(), method, "/v1/subjects/"+url.PathEscape(subject)+"/"+t+"/"+verb, nil, &out); err != nil {
					return fmt.Errorf("%s %s: %w", verb, t, err)
				}
				if verb == "erase" {
					result[t] = out["erased"]
				} else {
					result[t] = out["values"]
				}
			}
			return g.print(map[string]any{"subject": subject, verb: result}, func(w io.Writer) {
				keys := make([]string, 0, len(result))
				for k := range result {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					b, _ := json.Marshal(result[k])
					fmt.Fprintf(w, "%-12s %s\n", k+":", b)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "svid-dir", "", "the caller's SVID directory")
	f.StringVar(&base, "vault", "", "vault URL (default WARD_VAULT)")
	f.StringVar(&subject, "subject", "", "the data subject")
	f.StringSliceVar(&types, "type", nil, "token types (default all; each needs the grant)")
	return cmd
}

func newVaultEraseCmd(g *globals) *cobra.Command {
	return subjectCmd(g, "erase", "Crypto-shred a data subject's values: their data keys are destroyed (GDPR Art. 17)")
}

func newVaultExportCmd(g *globals) *cobra.Command {
	return subjectCmd(g, "export", "Return a data subject's values (GDPR Art. 15 and 20)")
}

func newVaultReportCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Which services may tokenize or reveal which data types (raw material of a GDPR Art. 30 record)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.adminClient()
			if err != nil {
				return err
			}
			var grants []struct {
				Consumer string   `json:"consumer"`
				Resource string   `json:"resource"`
				Actions  []string `json:"actions"`
			}
			if err := c.do(cmd.Context(), http.MethodGet, "/v1/catalog/grants?provider=vault", nil, &grants); err != nil {
				return err
			}
			type row struct {
				Service  string   `json:"service"`
				DataType string   `json:"data_type"`
				Actions  []string `json:"actions"`
			}
			rows := []row{}
			for _, gr := range grants {
				rows = append(rows, row{Service: gr.Consumer, DataType: gr.Resource, Actions: gr.Actions})
			}
			sort.Slice(rows, func(i, j int) bool {
				if rows[i].DataType != rows[j].DataType {
					return rows[i].DataType < rows[j].DataType
				}
				return rows[i].Service < rows[j].Service
			})
			var pol struct {
				Active int64 `json:"active"`
			}
			polErr := c.do(cmd.Context(), http.MethodGet, "/v1/policy/domains/vault/versions", nil, &pol)
			out := map[string]any{"grants": rows, "policy_version": pol.Active}
			return g.print(out, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DATA TYPE\tSERVICE\tMAY")
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", r.DataType, r.Service, strings.Join(r.Actions, ", "))
				}
				_ = tw.Flush()
				switch {
				case polErr != nil:
					fmt.Fprintf(w, "policy domain vault: not readable (%v)\n", polErr)
				case pol.Active == 0:
					fmt.Fprintln(w, "policy domain vault: no version; the access list alone decides")
				default:
					fmt.Fprintf(w, "policy domain vault: version %d also decides (ward policy history --domain vault)\n", pol.Active)
				}
			})
		},
	}
	return cmd
}
