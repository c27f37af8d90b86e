package authority

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/internal/telemetry"
)

// maxBodySize bounds every request body.
const maxBodySize = 64 << 10

// nameRE is the shape of team and service names.
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// Handler returns the authority's HTTP API: admin, workload, watch, OCSP,
// CRL, bundle, and /metrics, /healthz, /readyz. Serve it over
// ServerTLSConfig: renewal and watch need the TLS client certificate.
func (a *Authority) Handler() http.Handler {
	a.handlerOnce.Do(func() { a.handler = a.routes() })
	return a.handler
}

func (a *Authority) routes() http.Handler {
	mux := http.NewServeMux()

	// Public.
	mux.Handle("GET /v1/bundle", a.api(a.handleBundle))
	mux.HandleFunc("POST /ocsp", a.handleOCSPPost)
	mux.HandleFunc("GET /crl/{file}", a.handleCRL)
	telemetry.Mount(mux, a.reg, a.ready)

	// OAuth 2.0 token service (RFC 6749, 7662, 7009, 8414, 7517, 8705).
	oauth := a.sts.Handler(a.stsPeer)
	for _, pattern := range []string{"POST /oauth2/token", "POST /oauth2/introspect", "POST /oauth2/revoke",
		"GET /.well-known/oauth-authorization-server", "GET /.well-known/jwks.json"} {
		mux.Handle(pattern, oauth)
	}

	// Workloads.
	mux.Handle("POST /v1/svid", a.api(a.handleSVID))
	mux.Handle("POST /v1/svid/renew", a.api(a.handleRenew))
	mux.Handle("GET /v1/watch", a.api(a.handleWatch))
	mux.Handle("POST /v1/catalog/declarations", a.api(a.handleDeclare))
	mux.Handle("GET /v1/accesslist", a.api(a.handleAccessList))
	mux.Handle("GET /v1/keys", a.api(a.handleKeys))
	mux.Handle("GET /v1/passport/keys", a.api(a.handlePassportKeys))
	mux.Handle("POST /v1/passport/keys", a.api(a.handleRegisterPassportKey))
	mux.Handle("GET /v1/gateway/routes", a.api(a.handleGatewayRoutes))
	mux.Handle("GET /v1/policy/bundle", a.api(a.handlePolicyBundle))
	mux.Handle("POST /v1/policy/status", a.api(a.handleReportPolicyStatus))
	mux.Handle("GET /v1/agent/workload-entries", a.api(a.handleAgentEntries))
	mux.Handle("POST /v1/agent/svid", a.api(a.handleAgentSVID))
	mux.Handle("POST /v1/agent/jwt-svid", a.api(a.handleAgentJWTSVID))
	mux.Handle("GET /v1/jwt-svid/keys", a.api(a.handleJWTSVIDKeys))

	// Admin.
	mux.Handle("POST /v1/teams", a.admin(actCreate, a.handleCreateTeam))
	mux.Handle("GET /v1/teams", a.adminTeam(actRead, a.handleListTeams))
	mux.Handle("POST /v1/services", a.adminTeam(actCreate, a.handleCreateService))
	mux.Handle("GET /v1/services", a.adminTeam(actRead, a.handleListServices))
	mux.Handle("GET /v1/services/{name}", a.adminTeam(actRead, a.handleGetService))
	mux.Handle("POST /v1/services/{name}/bootstrap-token", a.adminTeam(actCreate, a.handleBootstrapToken))
	mux.Handle("POST /v1/services/{name}/revoke", a.admin(actRevoke, a.handleRevokeService))
	mux.Handle("GET /v1/svids/{serial}", a.adminTeam(actRead, a.handleGetSVID))
	mux.Handle("POST /v1/svids/{serial}/revoke", a.admin(actRevoke, a.handleRevokeSVID))
	mux.Handle("GET /v1/cas", a.adminTeam(actRead, a.handleListCAs))
	mux.Handle("POST /v1/cas/rotate", a.admin(actManageCAs, a.handleRotate))
	mux.Handle("POST /v1/cas/{id}/activate", a.admin(actManageCAs, a.handleActivate))
	mux.Handle("POST /v1/cas/{id}/retire", a.admin(actManageCAs, a.handleRetire))
	mux.Handle("POST /v1/cas/{id}/revoke", a.admin(actRevoke, a.handleRevokeCA))
	mux.Handle("POST /v1/admin-tokens", a.admin(actManageAuth, a.handleCreateAdminToken))
	mux.Handle("GET /v1/admin-tokens", a.admin(actRead, a.handleListAdminTokens))
	mux.Handle("DELETE /v1/admin-tokens/{id}", a.admin(actManageAuth, a.handleRevokeAdminToken))
	mux.Handle("POST /v1/oauth-clients", a.admin(actManageAuth, a.handleCreateClient))
	mux.Handle("GET /v1/oauth-clients", a.admin(actRead, a.handleListClients))
	mux.Handle("POST /v1/oauth-clients/{id}/revoke", a.admin(actRevoke, a.handleRevokeClient))
	mux.Handle("GET /v1/token-keys", a.admin(actRead, a.handleListTokenKeys))
	mux.Handle("POST /v1/token-keys/rotate", a.admin(actManageAuth, a.handleRotateTokenKeys))
	mux.Handle("POST /v1/api-keys", a.admin(actManageAuth, a.handleCreateAPIKey))
	mux.Handle("GET /v1/api-keys", a.admin(actRead, a.handleListAPIKeys))
	mux.Handle("POST /v1/api-keys/{id}/revoke", a.admin(actRevoke, a.handleRevokeAPIKey))

	mux.Handle("POST /v1/components/{component}/bootstrap-token", a.admin(actManageAuth, a.handleCreateComponentToken))
	mux.Handle("GET /v1/components/bootstrap-tokens", a.admin(actRead, a.handleListComponentTokens))
	mux.Handle("POST /v1/components/bootstrap-tokens/{id}/revoke", a.admin(actRevoke, a.handleRevokeComponentToken))
	mux.Handle("PUT /v1/routes/{name}", a.admin(actReview, a.handlePutRoute))
	mux.Handle("DELETE /v1/routes/{name}", a.admin(actReview, a.handleDeleteRoute))
	mux.Handle("GET /v1/routes", a.admin(actRead, a.handleListRoutes))

	// Catalogue review. Team tokens pass the gate; the handlers check the
	// role each decision needs.
	mux.Handle("GET /v1/catalog/requests", a.adminTeam(actRead, a.handleListRequests))
	mux.Handle("GET /v1/catalog/requests/{id}", a.adminTeam(actRead, a.handleGetRequest))
	mux.Handle("POST /v1/catalog/requests/{id}/approve", a.adminTeam(actReview, a.handleApprove))
	mux.Handle("POST /v1/catalog/requests/{id}/deny", a.adminTeam(actReview, a.handleDeny))
	mux.Handle("GET /v1/catalog/grants", a.adminTeam(actRead, a.handleListGrants))
	mux.Handle("POST /v1/catalog/grants/{id}/revoke", a.adminTeam(actReview, a.handleRevokeGrant))
	mux.Handle("GET /v1/catalog/graph", a.admin(actRead, a.handleGraph))
	mux.Handle("GET /v1/posture", a.admin(actRead, a.handlePosture))

	// Workload registration entries for node agents.
	mux.Handle("POST /v1/agent/entries", a.adminTeam(actCreate, a.handleCreateAgentEntry))
	mux.Handle("GET /v1/agent/entries", a.adminTeam(actRead, a.handleListAgentEntries))
	mux.Handle("DELETE /v1/agent/entries/{id}", a.adminTeam(actCreate, a.handleDeleteAgentEntry))

	// Policy administration. Team tokens pass the gate; authorizeDomain
	// checks the domain's team.
	mux.Handle("GET /v1/policy/domains", a.admin(actRead, a.handleListPolicyDomains))
	mux.Handle("POST /v1/policy/domains/{domain}/versions", a.adminTeam(actReview, a.handlePushPolicy))
	mux.Handle("GET /v1/policy/domains/{domain}/versions", a.adminTeam(actRead, a.handlePolicyHistory))
	mux.Handle("GET /v1/policy/domains/{domain}/versions/{version}", a.adminTeam(actRead, a.handleGetPolicyVersion))
	mux.Handle("POST /v1/policy/domains/{domain}/rollback", a.adminTeam(actReview, a.handleRollbackPolicy))
	mux.Handle("DELETE /v1/policy/domains/{domain}/shadow", a.adminTeam(actReview, a.handleClearShadow))
	mux.Handle("POST /v1/policy/domains/{domain}/check", a.adminTeam(actRead, a.handleCheckPolicy))
	mux.Handle("GET /v1/policy/domains/{domain}/status", a.adminTeam(actRead, a.handlePolicyStatus))

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := int64(maxBodySize)
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/policy/domains/") {
			limit = maxPolicyBody
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		// GET /ocsp/{base64}: base64 may hold "//", which the mux would
		// "clean" into a redirect, so it is routed by hand.
		if strings.HasPrefix(r.URL.Path, "/ocsp/") && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			a.handleOCSPGet(w, r)
			return
		}
		if _, pattern := mux.Handler(r); pattern == "" {
			notRouted(w, r, mux)
			return
		}
		mux.ServeHTTP(w, r)
	})
	return telemetry.HTTPMetrics(a.reg, "authority", a.recoverer(h))
}

// recoverer turns a handler panic into a logged 500 problem instead of a
// dropped connection.
func (a *Authority) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.log.ErrorContext(r.Context(), "handler panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				problem.Write(w, problem.FromStatus(http.StatusInternalServerError, ""))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// notRouted answers a request no pattern matches: the mux's own 404, 405 or
// path-cleaning redirect, with 404 and 405 as problem documents.
func notRouted(w http.ResponseWriter, r *http.Request, mux *http.ServeMux) {
	rec := &captureWriter{header: http.Header{}}
	mux.ServeHTTP(rec, r)
	switch rec.status {
	case http.StatusNotFound:
		problem.Write(w, problem.FromStatus(http.StatusNotFound, "no such endpoint"))
	case http.StatusMethodNotAllowed:
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		problem.Write(w, problem.FromStatus(http.StatusMethodNotAllowed, "method not allowed on this endpoint"))
	default:
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body.Bytes())
	}
}

type captureWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) WriteHeader(s int) {
	if c.status == 0 {
		c.status = s
	}
}
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.body.Len() < 4096 {
		c.body.Write(b)
	}
	return len(b), nil
}

// ready backs /readyz: the store answers and the CA state is loaded.
func (a *Authority) ready(ctx context.Context) error {
	if err := a.st.Ping(ctx); err != nil {
		return err
	}
	if a.cas.Load() == nil {
		return errors.New("authority: CA state not loaded")
	}
	return nil
}

// apiHandler handles one API request; a returned error becomes a problem
// response (writeError is the one place errors map to HTTP).
type apiHandler func(w http.ResponseWriter, r *http.Request) error

func (a *Authority) api(h apiHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if a.failures.exhausted(r) {
			a.metrics.authFailuresLimited.Inc()
			a.failures.refuse(w)
			return
		}
		if err := h(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// Problem slugs (type https://ward.dev/problems/<slug>).
const (
	slugInvalidRequest    = "invalid-request"
	slugBadCSR            = "bad-csr"
	slugUnauthorized      = "unauthorized"
	slugForbidden         = "forbidden"
	slugForbiddenIdentity = "forbidden-identity"
	slugRevoked           = "revoked"
	slugNotFound          = "not-found"
	slugConflict          = "conflict"
	slugTooLarge          = "payload-too-large"
	slugTooManyWatchers   = "too-many-watchers"
	slugUnavailable       = "unavailable"
	slugInternal          = "internal"
)

func errBadRequest(detail string) error {
	return problem.New(http.StatusBadRequest, slugInvalidRequest, "Invalid request", detail)
}
func errUnauthorized(detail string) error {
	return problem.New(http.StatusUnauthorized, slugUnauthorized, "Unauthorized", detail)
}
func errForbidden(detail string) error {
	return problem.New(http.StatusForbidden, slugForbidden, "Forbidden", detail)
}
func errRevoked(detail string) error {
	return problem.New(http.StatusForbidden, slugRevoked, "Revoked", detail)
}
func errNotFound(detail string) error {
	return problem.New(http.StatusNotFound, slugNotFound, "Not found", detail)
}
func errConflict(detail string) error {
	return problem.New(http.StatusConflict, slugConflict, "Conflict", detail)
}

// writeError maps err to a problem response. Problems pass through;
// sentinel errors of this package, internal/ca and internal/store map to
// their status; anything else is logged and answered with a bare 500.
func (a *Authority) writeError(w http.ResponseWriter, r *http.Request, err error) {
	p := a.toProblem(r, err)
	if p.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ward"`)
		a.failures.charge(r)
	}
	if p.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	if p.Status == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "10")
	}
	problem.Write(w, p)
}

func (a *Authority) toProblem(r *http.Request, err error) *problem.Problem {
	var p *problem.Problem
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &p):
		return p
	case errors.As(err, &tooBig), errors.Is(err, ca.ErrCSRTooLarge):
		return problem.New(http.StatusRequestEntityTooLarge, slugTooLarge, "Payload too large",
			fmt.Sprintf("request bodies are limited to %d bytes (policy pushes to %d) and CSRs to %d bytes", maxBodySize, maxPolicyBody, ca.MaxCSRSize))
	case errors.Is(err, ca.ErrCSRRequestsCA), errors.Is(err, ca.ErrCSRIdentity):
		return problem.New(http.StatusForbidden, slugForbiddenIdentity, "Forbidden identity", clientText(err))
	case errors.Is(err, ca.ErrCSRMalformed), errors.Is(err, ca.ErrCSRSignature), errors.Is(err, ca.ErrCSRKey):
		return problem.New(http.StatusBadRequest, slugBadCSR, "Bad CSR", clientText(err))
	case errors.Is(err, ErrUnknownService):
		return problem.New(http.StatusNotFound, slugNotFound, "Not found", "no such service")
	case errors.Is(err, ErrServiceRevoked):
		return problem.New(http.StatusForbidden, slugRevoked, "Revoked", "the service has been revoked")
	case errors.Is(err, ErrNoActiveCA), errors.Is(err, ca.ErrIssuerExpired), errors.Is(err, ErrClosed):
		a.log.ErrorContext(r.Context(), "cannot issue", "method", r.Method, "path", r.URL.Path, "error", err)
		return problem.New(http.StatusServiceUnavailable, slugUnavailable, "Unavailable", "no CA can issue right now; an operator must check the CA state")
	case errors.Is(err, store.ErrNotFound):
		return problem.New(http.StatusNotFound, slugNotFound, "Not found", "")
	case errors.Is(err, store.ErrConflict):
		return problem.New(http.StatusConflict, slugConflict, "Conflict", "")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads this.
		return problem.New(http.StatusServiceUnavailable, slugUnavailable, "Unavailable", "request canceled")
	default:
		a.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		return problem.New(http.StatusInternalServerError, slugInternal, "Internal error", "")
	}
}

// clientText is an error's message for clients, without the package prefix.
func clientText(err error) string {
	s := err.Error()
	if _, rest, ok := strings.Cut(s, "ca: "); ok {
		s = rest
	}
	return s
}

// decodeJSON reads a JSON object body (at most maxBodySize, enforced by the
// MaxBytesReader set in routes) into v: unknown fields, trailing data and
// type mismatches are 400; an empty body is allowed only when allowEmpty.
func decodeJSON(r *http.Request, v any, allowEmpty bool) error {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return err
		}
		return errBadRequest("could not read the request body")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if allowEmpty {
			return nil
		}
		return errBadRequest("a JSON request body is required")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errBadRequest("invalid JSON body: " + jsonErrorText(err))
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return errBadRequest("invalid JSON body: trailing data after the object")
	}
	return nil
}

// jsonErrorText describes a decoding error without echoing input bytes.
func jsonErrorText(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at offset %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("field %s must be %s", quote(typ.Field), typ.Type.String())
		}
		return "the body must be a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	}
	if s, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return "unknown field " + quote(strings.Trim(s, `"`))
	}
	return "malformed"
}

// writeJSON sends v as a JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("authority: encode response: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// quote renders untrusted input for an error message: quoted, printable,
// and cut to 64 bytes.
func quote(s string) string {
	if len(s) > 64 {
		cut := 64
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%q…", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}

func checkName(field, s string) error {
	if !nameRE.MatchString(s) {
		return errBadRequest(fmt.Sprintf("%s %s is invalid: it must match ^[a-z][a-z0-9-]{0,62}$", field, quote(s)))
	}
	return nil
}

// validID reports whether s looks like an ID this authority generates (CA,
// token); anything else cannot exist and is not looked up.
func validID(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
