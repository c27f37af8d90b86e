package guard

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// AuthorityError is a refusal from the authority: its status and RFC 9457
// problem type and detail.
type AuthorityError struct {
	Status int
	Type   string
	Detail string
}

func (e *AuthorityError) Error() string {
	s := fmt.Sprintf("guard: authority answered %d", e.Status)
	if e.Type != "" {
		s += " " + e.Type
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Client is a Fetcher and Declarer that talks to the authority over mTLS.
type Client struct {
	base string
	http *http.Client
}

var (
	_ Fetcher  = (*Client)(nil)
	_ Declarer = (*Client)(nil)
)

// NewClient returns a client of the authority at authorityURL (https)
// using tlsConfig, which must present the service's SVID and verify the
// authority (identity's ClientTLSConfig with AuthorizeID(AuthorityID(td))).
func NewClient(authorityURL string, tlsConfig *tls.Config) (*Client, error) {
	u, err := url.Parse(authorityURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("guard: authority URL %q must be an absolute https:// URL", authorityURL)
	}
	if tlsConfig == nil {
		return nil, fmt.Errorf("guard: NewClient needs a TLS config that presents the service's SVID")
	}
	return &Client{
		base: strings.TrimRight(u.String(), "/"),
		http: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				TLSClientConfig:       tlsConfig,
				ForceAttemptHTTP2:     true,
				MaxIdleConnsPerHost:   2,
				IdleConnTimeout:       90 * time.Second,
				ResponseHeaderTimeout: 15 * time.Second,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// FetchAccessList is GET /v1/accesslist: the caller's own compact JWS.
func (c *Client) FetchAccessList(ctx context.Context) ([]byte, error) {
	return c.do(ctx, http.MethodGet, "/v1/accesslist", MediaType, "", nil, MaxListSize)
}

// FetchKeys is GET /v1/keys: the authority's JWKS.
func (c *Client) FetchKeys(ctx context.Context) ([]byte, error) {
	return c.do(ctx, http.MethodGet, "/v1/keys", KeySetMediaType, "", nil, MaxKeySetSize)
}

// Declare is POST /v1/catalog/declarations with a YAML or JSON manifest.
func (c *Client) Declare(ctx context.Context, manifest []byte) error {
	_, err := c.do(ctx, http.MethodPost, "/v1/catalog/declarations", "application/json", "application/yaml", manifest, 1<<20)
	return err
}

func (c *Client) do(ctx context.Context, method, path, accept, contentType string, body []byte, limit int64) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	req.Header.Set("Accept", accept)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("guard: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("guard: %s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, decodeProblem(resp, data)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("guard: %s %s: answer larger than %d bytes", method, path, limit)
	}
	return data, nil
}

func decodeProblem(resp *http.Response, body []byte) error {
	e := &AuthorityError{Status: resp.StatusCode}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/problem+json" {
		var p struct {
			Type   string `json:"type"`
			Detail string `json:"detail"`
		}
		if json.Unmarshal(body, &p) == nil {
			e.Type, e.Detail = clip(p.Type), clip(p.Detail)
		}
	}
	return e
}
