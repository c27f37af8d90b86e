package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/credential"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/passport"
)

// ServeHTTP handles one external request: hygiene, correlation, routing,
// rate limits, authentication, scopes, policy, passport, forwarding.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Hygiene first, on every path: no internal header from a client goes
	// anywhere, none from an upstream reaches the client.
	stripInternal(r.Header)
	if r.Trailer != nil {
		stripInternal(r.Trailer)
	}
	hw := &hygieneWriter{ResponseWriter: w}
	defer hw.finish()
	w = hw

	tc, ok := parseTraceparent(r.Header.Get("Traceparent"))
	if !ok {
		tc = newTrace()
	}
	w.Header().Set("X-Correlation-ID", tc.traceID)

	switch r.URL.Path {
	case "/healthz", "/readyz":
		g.telemetry.ServeHTTP(w, r)
		return
	case "/metrics":
		if isLoopback(r) {
			g.telemetry.ServeHTTP(w, r)
			return
		}
	}
	if !cleanPath(r.URL.Path) {
		g.refuse(w, r, nil, http.StatusBadRequest, "bad-path", "Bad request path", "the path must be absolute and hold no empty, . or .. segments", "bad-path")
		return
	}
	tbl := g.routes.Load()
	if tbl == nil {
		w.Header().Set("Retry-After", "5")
		g.refuse(w, r, nil, http.StatusServiceUnavailable, "not-ready", "Gateway not ready", "the gateway has not loaded its route table yet", "not-ready")
		return
	}
	rt := tbl.match(r.Host, r.URL.Path)
	if rt == nil {
		g.refuse(w, r, nil, http.StatusNotFound, "no-route", "No route", "no route matches this host and path", "no-route")
		return
	}
	if ok, wait := g.preAuth.allow(clientAddr(r)); !ok {
		retryAfter(w.Header(), wait)
		g.refuse(w, r, rt, http.StatusTooManyRequests, "rate-limited", "Too many requests", "too many requests from this address; retry later", "rate-limited-address")
		return
	}
	if r.ContentLength > g.cfg.MaxBodyBytes {
		g.refuse(w, r, rt, http.StatusRequestEntityTooLarge, "payload-too-large", "Payload too large", fmt.Sprintf("request bodies are limited to %d bytes", g.cfg.MaxBodyBytes), "body-too-large")
		return
	}
	p, err := g.authenticate(r, rt)
	if err != nil {
		g.authError(w, r, rt, err)
		return
	}
	if ok, wait := g.perUser.allowRate(rt.Name+"\x00"+p.Method+"\x00"+p.rateKey(), rt.perSecond, rt.burst); !ok {
		retryAfter(w.Header(), wait)
		g.refuse(w, r, rt, http.StatusTooManyRequests, "rate-limited", "Too many requests", "this caller exceeded the route's rate limit; retry later", "rate-limited-caller")
		return
	}
	if g.cfg.Policy != nil {
		if err := g.cfg.Policy.Authorize(context.WithValue(r.Context(), correlationKey{}, tc.traceID), &rt.Route, p, r); err != nil {
			g.refuse(w, r, rt, http.StatusForbidden, "forbidden", "Forbidden", err.Error(), "policy")
			return
		}
	}
	pp, err := g.mint(p, rt, tc.traceID)
	if err != nil {
		w.Header().Set("Retry-After", "5")
		g.log.Error("passport not minted", "route", rt.Name, "error", err)
		g.refuse(w, r, rt, http.StatusServiceUnavailable, "passport-unavailable", "Service unavailable", "the gateway cannot sign passports right now", "passport-unavailable")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes)
	ctx := context.WithValue(r.Context(), forwardKey{}, &forward{passport: pp, traceparent: tc.child(), route: rt})
	g.m.forwarded.Inc()
	rt.proxy.ServeHTTP(w, r.WithContext(ctx))
	if g.cfg.Audit != nil {
		g.cfg.Audit.Write(audit.Event{Kind: audit.KindGateway, CorrelationID: tc.traceID, User: p.Subject, Action: r.Method,
			Resource: rt.Service, Decision: audit.Allow, Reason: "forwarded", CredentialFP: p.Fingerprint,
			Extra: map[string]any{"route": rt.Name, "status": hw.status, "auth_method": p.Method, "client": clientAddr(r), "upstream": rt.serviceID.String()}})
	}
}

// rateKey identifies a caller for the per-route limit.
func (p *Principal) rateKey() string {
	switch {
	case p.keyID != "":
		return p.keyID
	case p.ClientID != "" && p.Method != CredOIDC:
		return p.ClientID
	}
	return p.Issuer + "\x00" + p.Subject
}

// cleanPath refuses paths a prefix match could be fooled by.
func cleanPath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return !strings.Contains(p, "//")
}

// authenticate runs the credential chain for a route: the request's
// bearer token or API key (cached with the route's scopes), else a
// partner client certificate, else anonymous when the route allows it.
func (g *Gateway) authenticate(r *http.Request, rt *route) (*Principal, error) {
	pr, err := extract(r, g.issuer, func(iss string) bool { return g.external[iss] })
	switch {
	case errors.Is(err, errNoCredential):
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && g.cfg.PartnerCAs != nil {
			if !rt.creds[CredMTLS] {
				return nil, errNotAccepted
			}
			p := mtlsPrincipal(r.TLS.PeerCertificates[0])
			return p, g.checkScopes(p, rt)
		}
		if rt.Anonymous {
			return &Principal{Subject: "anonymous", Issuer: g.self, Method: credAnonymous}, nil
		}
		return nil, err
	case err != nil:
		return nil, err
	}
	if !rt.creds[pr.kind] {
		return nil, errNotAccepted
	}
	key := cacheKey(pr.token, rt.Scopes)
	return g.cache.get(key, func() (*Principal, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
		defer cancel()
		p, err := verify(ctx, g.verifier, pr, r.TLS, g.issuer)
		if err != nil {
			return nil, err
		}
		return p, g.checkScopes(p, rt)
	})
}

// insufficientScope: the credential is valid but lacks a route scope.
type insufficientScope struct{ missing string }

func (e *insufficientScope) Error() string { return "the credential lacks the scope " + e.missing }

func (g *Gateway) checkScopes(p *Principal, rt *route) error {
	for _, s := range rt.Scopes {
		if !p.hasScope(s) {
			return &insufficientScope{missing: s}
		}
	}
	return nil
}

// authError answers a failed authentication: 401 with a Bearer challenge
// for a missing or bad credential, 403 for missing scopes, 502 when the
// authority could not be asked.
func (g *Gateway) authError(w http.ResponseWriter, r *http.Request, rt *route, err error) {
	var scope *insufficientScope
	switch {
	case errors.As(err, &scope):
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="ward", error="insufficient_scope", scope=%q`, strings.Join(rt.Scopes, " ")))
		g.refuse(w, r, rt, http.StatusForbidden, "insufficient-scope", "Insufficient scope", err.Error(), "insufficient-scope")
	case errors.Is(err, credential.ErrUnavailable):
		w.Header().Set("Retry-After", "5")
		g.refuse(w, r, rt, http.StatusServiceUnavailable, "authority-unavailable", "Credential check unavailable", "the credential could not be checked right now; retry shortly", "authority-unavailable")
	default:
		detail, reason := "the request carries no credential", "no-credential"
		switch {
		case errors.Is(err, errNoCredential):
		case errors.Is(err, errNotAccepted):
			detail, reason = "this kind of credential is not accepted on this route", "kind-not-accepted"
		case errors.Is(err, errCredentialSize):
			detail, reason = fmt.Sprintf("the credential exceeds %d bytes", maxCredential), "too-large"
		case errors.Is(err, errMalformed), errors.Is(err, errUnknownIssuer):
			detail, reason = err.Error(), "malformed"
		case errors.Is(err, credential.ErrRevoked):
			detail, reason = "the credential has been revoked", "revoked"
		case errors.Is(err, credential.ErrBindingMismatch):
			detail, reason = "the token is bound to a client certificate this connection did not present", "binding"
		default:
			detail, reason = "the credential is invalid, expired or revoked", "invalid"
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="ward"`)
		g.refuse(w, r, rt, http.StatusUnauthorized, "unauthorized", "Unauthorized", detail, reason)
	}
}

// refuse logs and answers a request the gateway does not forward.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, rt *route, status int, slug, title, detail, reason string) {
	name := ""
	if rt != nil {
		name = rt.Name
	}
	g.m.refused.WithLabelValues(reason).Inc()
	if g.cfg.Audit != nil {
		g.cfg.Audit.Write(audit.Event{Kind: audit.KindGateway, CorrelationID: w.Header().Get("X-Correlation-ID"), Action: r.Method,
			Decision: audit.Deny, Reason: reason, Extra: map[string]any{"route": name, "status": status, "client": clientAddr(r)}})
	}
	g.log.Info("gateway: request refused", "status", status, "reason", reason, "route", name, "method", r.Method,
		"remote", clientAddr(r), "cid", w.Header().Get("X-Correlation-ID"))
	problem.Write(w, problem.New(status, slug, title, detail))
}

// mint signs the passport of one forwarded request.
func (g *Gateway) mint(p *Principal, rt *route, cid string) (string, error) {
	k, err := g.keys.current(g.cfg.PassportTTL)
	if err != nil {
		return "", err
	}
	now := g.now().Unix()
	c := passport.Claims{
		Subject: p.Subject, Issuer: p.Issuer, Tenant: p.Tenant, Scope: p.Scope, Roles: p.Roles, ClientID: p.ClientID,
		AuthMethod: p.Method, AuthTime: p.AuthTime, ID: passport.NewID(), CorrelationID: cid, Audience: g.td.Name(),
		IssuedAt: now, Expiry: now + int64(g.cfg.PassportTTL/time.Second), TokenFingerprint: p.Fingerprint,
		Gateway: g.self, Route: rt.Name,
	}
	tok, err := k.signer.Mint(&c)
	if err == nil {
		g.m.minted.Inc()
	}
	return tok, err
}

// forward is what Rewrite adds to the outbound request.
type forward struct {
	passport, traceparent string
	route                 *route
}

type forwardKey struct{}

// newProxy is the reverse proxy of one route: mTLS with the gateway's
// SVID to the upstream, which must present the route service's ID.
func (g *Gateway) newProxy(rt *route) http.Handler {
	return &httputil.ReverseProxy{
		Transport: g.transport(rt),
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(rt.upstream)
			pr.SetXForwarded()
			for _, h := range credentialHeaders {
				pr.Out.Header.Del(h)
			}
			if f, ok := pr.In.Context().Value(forwardKey{}).(*forward); ok {
				pr.Out.Header.Set(passport.Header, f.passport)
				pr.Out.Header.Set("Traceparent", f.traceparent)
			}
			pr.Out.Header.Del("Tracestate")
		},
		ModifyResponse: func(resp *http.Response) error {
			stripInternal(resp.Header)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			g.upstreamError(w, r, rt, err)
		},
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
}

// upstreamIdentityError: the upstream did not present the route
// service's SPIFFE ID (or a valid SVID at all).
type upstreamIdentityError struct{ err error }

func (e *upstreamIdentityError) Error() string { return "upstream identity: " + e.err.Error() }
func (e *upstreamIdentityError) Unwrap() error { return e.err }

func (g *Gateway) upstreamError(w http.ResponseWriter, r *http.Request, rt *route, err error) {
	var tooBig *http.MaxBytesError
	var ident *upstreamIdentityError
	var nerr net.Error
	switch {
	case errors.As(err, &tooBig):
		g.refuse(w, r, rt, http.StatusRequestEntityTooLarge, "payload-too-large", "Payload too large", fmt.Sprintf("request bodies are limited to %d bytes", g.cfg.MaxBodyBytes), "body-too-large")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		g.m.refused.WithLabelValues("client-gone").Inc() // nobody reads an answer
		w.WriteHeader(499)
	case errors.As(err, &ident):
		g.log.Error("upstream presented the wrong identity", "route", rt.Name, "want", rt.serviceID.String(), "error", err)
		g.refuse(w, r, rt, http.StatusBadGateway, "upstream-identity", "Bad gateway", "the upstream did not prove the identity of service "+rt.Service, "upstream-identity")
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout(), strings.Contains(err.Error(), "timeout awaiting response headers"):
		g.refuse(w, r, rt, http.StatusGatewayTimeout, "upstream-timeout", "Gateway timeout", fmt.Sprintf("the upstream did not answer within %s", rt.timeout), "upstream-timeout")
	default:
		g.log.Warn("upstream unavailable", "route", rt.Name, "error", err)
		g.refuse(w, r, rt, http.StatusBadGateway, "upstream-unavailable", "Bad gateway", "the upstream service could not be reached", "upstream-unavailable")
	}
}

type transportKey struct {
	host, id string
	timeout  time.Duration
}

// transport returns the shared mTLS transport for a route's upstream.
func (g *Gateway) transport(rt *route) *http.Transport {
	k := transportKey{host: rt.upstream.Host, id: rt.serviceID.String(), timeout: rt.timeout}
	g.transMu.Lock()
	defer g.transMu.Unlock()
	if t, ok := g.transports[k]; ok {
		return t
	}
	tc := g.src.ClientTLSConfig(identity.AuthorizeID(rt.serviceID))
	verify := tc.VerifyConnection
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return &upstreamIdentityError{err: err}
		}
		return nil
	}
	t := &http.Transport{
		TLSClientConfig:        tc,
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  rt.timeout,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        90 * time.Second,
		ForceAttemptHTTP2:      false,
		MaxResponseHeaderBytes: 64 << 10,
	}
	g.transports[k] = t
	return t
}

// pruneTransports closes the transports no route uses any more.
func (g *Gateway) pruneTransports(routes []*route) {
	used := map[transportKey]bool{}
	for _, rt := range routes {
		used[transportKey{host: rt.upstream.Host, id: rt.serviceID.String(), timeout: rt.timeout}] = true
	}
	g.transMu.Lock()
	defer g.transMu.Unlock()
	for k, t := range g.transports {
		if !used[k] {
			t.CloseIdleConnections()
			delete(g.transports, k)
		}
	}
}

// hygieneWriter removes internal headers from every response before they
// are sent, and trailers after the handler returned (the server sends
// trailers only then).
type hygieneWriter struct {
	http.ResponseWriter
	wrote  bool
	status int
}

func (h *hygieneWriter) WriteHeader(code int) {
	if !h.wrote {
		h.wrote, h.status = true, code
		clean(h.ResponseWriter.Header())
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *hygieneWriter) Write(b []byte) (int, error) {
	if !h.wrote {
		h.WriteHeader(http.StatusOK)
	}
	return h.ResponseWriter.Write(b)
}

func (h *hygieneWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (h *hygieneWriter) Flush() {
	if !h.wrote {
		h.WriteHeader(http.StatusOK)
	}
	if f, ok := h.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (h *hygieneWriter) finish() { clean(h.ResponseWriter.Header()) }

// clean removes internal headers, announced trailers of internal names and
// unannounced ones (http.TrailerPrefix).
func clean(hdr http.Header) {
	for k := range hdr {
		if internalHeader(strings.TrimPrefix(k, http.TrailerPrefix)) {
			delete(hdr, k)
		}
	}
	if tr := hdr.Values("Trailer"); len(tr) > 0 {
		var keep []string
		for _, v := range tr {
			for _, name := range strings.Split(v, ",") {
				if name = strings.TrimSpace(name); name != "" && !internalHeader(name) {
					keep = append(keep, name)
				}
			}
		}
		hdr.Del("Trailer")
		if len(keep) > 0 {
			hdr.Set("Trailer", strings.Join(keep, ", "))
		}
	}
}

// jsonUnmarshalBounded decodes a watch-stream payload of at most 64 KiB.
func jsonUnmarshalBounded(data []byte, v any) error {
	if len(data) > 64<<10 {
		return errors.New("payload too large")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	return dec.Decode(v)
}
