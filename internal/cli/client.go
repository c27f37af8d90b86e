package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/wardsec/ward/internal/problem"
)

// maxResponse bounds every response body the CLI reads from the authority.
const maxResponse = 4 << 20

// apiClient talks to the authority's admin API over TLS, trusting only the
// configured bundle and requiring the authority's SPIFFE ID.
type apiClient struct {
	base  string
	http  *http.Client
	token string
}

func (g *globals) authorityURL() (string, error) {
	if g.authority == "" {
		return "", usageError{errors.New("no authority URL: set --authority or WARD_AUTHORITY (source <data>/dev.env)")}
	}
	u := strings.TrimRight(g.authority, "/")
	if !strings.HasPrefix(u, "https://") {
		return "", usageError{fmt.Errorf("authority URL %q must start with https://", g.authority)}
	}
	return u, nil
}

// authorityTLS returns a client TLS config trusting the bundle file and
// accepting only a server whose certificate names a ward authority.
func (g *globals) authorityTLS() (*tls.Config, error) {
	if g.caBundle == "" {
		return nil, usageError{errors.New("no CA bundle: set --ca-bundle or WARD_CA_BUNDLE (source <data>/dev.env)")}
	}
	data, err := os.ReadFile(g.caBundle)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificates", g.caBundle)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("authority presented no certificate")
			}
			for _, u := range cs.PeerCertificates[0].URIs {
				if u.Scheme == "spiffe" && u.Path == "/ward/authority" {
					return nil
				}
			}
			return errors.New("server certificate is not a ward authority SVID")
		},
	}, nil
}

func (g *globals) adminClient() (*apiClient, error) {
	base, err := g.authorityURL()
	if err != nil {
		return nil, err
	}
	tlsConf, err := g.authorityTLS()
	if err != nil {
		return nil, err
	}
	token := g.adminToken
	if token == "" {
		token = os.Getenv("WARD_ADMIN_TOKEN")
	}
	if token == "" {
		return nil, usageError{errors.New("no admin token: set WARD_ADMIN_TOKEN (source <data>/dev.env) or --admin-token")}
	}
	return &apiClient{
		base:  base,
		token: token,
		http: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true},
		},
	}, nil
}

// do sends in (if non-nil) as JSON and decodes a 2xx JSON answer into out.
// Non-2xx answers come back as *problem.Problem errors.
func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = b
	}
	return c.doBody(ctx, method, path, "application/json", body, out)
}

// doBody sends body (if non-nil) with contentType and decodes a 2xx JSON
// answer into out.
func (c *apiClient) doBody(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("authority unreachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeProblem(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("authority answer: %w", err)
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("authority answer: %w", err)
	}
	return nil
}

// listedProblem is a problem with an "errors" extension member (a
// rejected policy version lists every error and failed test there).
type listedProblem struct {
	*problem.Problem
	Errors []string
}

func (e *listedProblem) Error() string {
	return e.Problem.Error() + "\n  " + strings.Join(e.Errors, "\n  ")
}

func (e *listedProblem) Unwrap() error { return e.Problem }

// decodeProblem decodes an unsuccessful answer, keeping its "errors" list.
func decodeProblem(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, problem.MaxBodySize))
	resp.Body = io.NopCloser(bytes.NewReader(data))
	err := problem.Decode(resp)
	var ext struct {
		Errors []string `json:"errors"`
	}
	var p *problem.Problem
	if json.Unmarshal(data, &ext) == nil && len(ext.Errors) > 0 && errors.As(err, &p) {
		if len(ext.Errors) > 100 {
			ext.Errors = ext.Errors[:100]
		}
		for i, e := range ext.Errors {
			ext.Errors[i] = strings.Map(func(r rune) rune {
				if r < 0x20 || r == 0x7f {
					return ' '
				}
				return r
			}, e)
		}
		return &listedProblem{Problem: p, Errors: ext.Errors}
	}
	return err
}
