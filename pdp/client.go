package pdp

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/identity"
)

// AuthorityError is a refusal from the authority: its status and RFC 9457
// problem type and detail.
type AuthorityError struct {
	Status       int
	Type, Detail string
}

func (e *AuthorityError) Error() string {
	s := fmt.Sprintf("pdp: authority answered %d", e.Status)
	if e.Type != "" {
		s += " " + e.Type
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Client is a Fetcher that talks to the authority over mTLS.
type Client struct {
	base string
	http *http.Client
}

var _ Fetcher = (*Client)(nil)

// NewClient returns a client of the authority at authorityURL (https)
// using tlsConfig, which must present the workload's SVID and verify the
// authority.
func NewClient(authorityURL string, tlsConfig *tls.Config) (*Client, error) {
	u, err := url.Parse(authorityURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("pdp: authority URL %q must be an absolute https:// URL", authorityURL)
	}
	if tlsConfig == nil {
		return nil, errors.New("pdp: NewClient needs a TLS config that presents the workload's SVID")
	}
	return &Client{base: strings.TrimRight(u.String(), "/"), http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsConfig, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 2,
			IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 15 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// FetchBundle is GET /v1/policy/bundle with If-None-Match.
func (c *Client) FetchBundle(ctx context.Context, etag string) ([]byte, string, error) {
	hdr := http.Header{"Accept": {MediaType}}
	if etag != "" {
		hdr.Set("If-None-Match", etag)
	}
	resp, data, err := c.do(ctx, http.MethodGet, "/v1/policy/bundle", hdr, nil, MaxBundleSize)
	if err != nil {
		return nil, "", err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return data, resp.Header.Get("ETag"), nil
	case http.StatusNotModified:
		return nil, etag, ErrNotModified
	}
	aerr := decodeProblem(resp, data)
	if aerr.Status == http.StatusNotFound && strings.HasSuffix(aerr.Type, "/no-policy") {
		return nil, "", ErrNoPolicy
	}
	return nil, "", aerr
}

// FetchKeys is GET /v1/keys.
func (c *Client) FetchKeys(ctx context.Context) ([]byte, error) {
	resp, data, err := c.do(ctx, http.MethodGet, "/v1/keys", http.Header{"Accept": {guard.KeySetMediaType}}, nil, guard.MaxKeySetSize)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, decodeProblem(resp, data)
	}
	return data, nil
}

// ReportStatus is POST /v1/policy/status.
func (c *Client) ReportStatus(ctx context.Context, s Status) error {
	body, _ := json.Marshal(s)
	resp, data, err := c.do(ctx, http.MethodPost, "/v1/policy/status", http.Header{"Content-Type": {"application/json"}}, body, 64<<10)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return decodeProblem(resp, data)
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, path string, hdr http.Header, body []byte, limit int64) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("pdp: %w", err)
	}
	req.Header = hdr
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("pdp: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("pdp: %s %s: %w", method, path, err)
	}
	if int64(len(data)) > limit {
		return nil, nil, fmt.Errorf("pdp: %s %s: answer larger than %d bytes", method, path, limit)
	}
	return resp, data, nil
}

func decodeProblem(resp *http.Response, body []byte) *AuthorityError {
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

// NewForSource returns a PDP for src's workload: its domain is the
// service name of the SVID (EdgeDomain for the gateway) unless cfg.Domain
// is set; bundles are fetched from src's authority over mTLS and
// announced on src's watch stream.
func NewForSource(src *identity.Source, cfg Config) (*PDP, error) {
	if src == nil {
		return nil, errors.New("pdp: NewForSource needs an identity.Source")
	}
	td := src.ID().TrustDomain()
	if cfg.Domain == "" {
		d, err := domainOf(src.ID())
		if err != nil {
			return nil, err
		}
		cfg.Domain = d
	}
	client, err := NewClient(src.AuthorityURL(), src.ClientTLSConfig(identity.AuthorizeID(guard.AuthorityID(td))))
	if err != nil {
		return nil, err
	}
	cfg.Fetcher, cfg.Bundle, cfg.TrustDomain, cfg.Events = client, src, td, src
	return New(cfg)
}
