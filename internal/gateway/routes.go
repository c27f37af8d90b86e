package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"

	wire "github.com/wardsec/ward/internal/route"
)

// The route wire types, shared with the authority.
type (
	Route     = wire.Route
	RouteRate = wire.Rate
	Exposure  = wire.Exposure
)

// Credential kinds a route may accept.
const (
	CredAPIKey        = wire.CredAPIKey
	CredJWT           = wire.CredJWT
	CredOIDC          = wire.CredOIDC
	CredIntrospection = wire.CredIntrospection
	CredMTLS          = wire.CredMTLS
	credAnonymous     = "anonymous"
)

// route is a compiled Route.
type route struct {
	Route
	upstream  *url.URL
	serviceID spiffeid.ID
	creds     map[string]bool
	timeout   time.Duration
	perSecond rate.Limit
	burst     int
	proxy     http.Handler
}

// table is an immutable set of compiled routes, longest prefix first.
type table struct {
	version int64
	routes  []*route
}

// match returns the route for host and path: routes for exactly this host
// first, then host-less ones; within each, the longest prefix that ends at
// a segment boundary.
func (t *table) match(host, path string) *route {
	if t == nil {
		return nil
	}
	host = strings.ToLower(host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var fallback *route
	for _, rt := range t.routes {
		if !prefixMatch(rt.Prefix, path) {
			continue
		}
		if rt.Host == host {
			return rt
		}
		if rt.Host == "" && fallback == nil {
			fallback = rt
		}
	}
	return fallback
}

// prefixMatch reports whether path lies under prefix: "/orders" matches
// "/orders" and "/orders/1" but not "/ordersx"; "/orders/" matches
// "/orders/…".
func prefixMatch(prefix, path string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// compile checks a route from the authority and prepares it. The
// authority validated it already; the gateway checks again what it
// relies on, so that a bad entry is skipped rather than trusted.
func compile(td spiffeid.TrustDomain, r Route, defRate float64, defBurst int) (*route, error) {
	u, err := url.Parse(r.Upstream)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Port() == "" || u.User != nil || u.RawQuery != "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("route %q: upstream %q must be https://host:port", r.Name, r.Upstream)
	}
	u.Path = ""
	if !strings.HasPrefix(r.Prefix, "/") {
		return nil, fmt.Errorf("route %q: prefix %q must start with /", r.Name, r.Prefix)
	}
	id, err := spiffeid.FromSegments(td, "svc", r.Service)
	if err != nil {
		return nil, fmt.Errorf("route %q: service %q: %w", r.Name, r.Service, err)
	}
	timeout := 30 * time.Second
	if r.Timeout != "" {
		if timeout, err = time.ParseDuration(r.Timeout); err != nil || timeout <= 0 {
			return nil, fmt.Errorf("route %q: timeout %q", r.Name, r.Timeout)
		}
	}
	rt := &route{Route: r, upstream: u, serviceID: id, creds: map[string]bool{}, timeout: timeout,
		perSecond: rate.Limit(defRate), burst: defBurst}
	for _, c := range r.Credentials {
		switch c {
		case CredAPIKey, CredJWT, CredOIDC, CredIntrospection, CredMTLS:
			rt.creds[c] = true
		default:
			return nil, fmt.Errorf("route %q: unknown credential kind %q", r.Name, c)
		}
	}
	if r.Rate.PerSecond > 0 {
		rt.perSecond = rate.Limit(r.Rate.PerSecond)
		rt.burst = max(1, int(r.Rate.PerSecond))
	}
	if r.Rate.Burst > 0 {
		rt.burst = r.Rate.Burst
	}
	rt.Host = strings.ToLower(r.Host)
	return rt, nil
}

// newTable orders compiled routes for match.
func newTable(version int64, routes []*route) *table {
	slices.SortStableFunc(routes, func(a, b *route) int {
		if d := len(b.Prefix) - len(a.Prefix); d != 0 {
			return d
		}
		return strings.Compare(a.Name, b.Name)
	})
	return &table{version: version, routes: routes}
}

// maxRouteTable bounds the route table response.
const maxRouteTable = 8 << 20

// fetchRoutes reads the route table from the authority over mTLS.
func fetchRoutes(ctx context.Context, hc *http.Client, authorityURL string) (wire.Table, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authorityURL+"/v1/gateway/routes", nil)
	if err != nil {
		return wire.Table{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return wire.Table{}, fmt.Errorf("gateway: fetch routes: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRouteTable+1))
	if err != nil {
		return wire.Table{}, fmt.Errorf("gateway: fetch routes: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return wire.Table{}, fmt.Errorf("gateway: fetch routes: authority answered %d: %s", resp.StatusCode, clip(string(body)))
	}
	if len(body) > maxRouteTable {
		return wire.Table{}, errors.New("gateway: fetch routes: route table too large")
	}
	var t wire.Table
	if err := json.Unmarshal(body, &t); err != nil {
		return wire.Table{}, fmt.Errorf("gateway: fetch routes: %w", err)
	}
	return t, nil
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
