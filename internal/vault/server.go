package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/problem"
	"github.com/wardsec/ward/passport"
	"github.com/wardsec/ward/pep"
)

// Actions of the vault's resources (one resource per token type).
const (
	ActTokenize   = "tokenize"
	ActDetokenize = "detokenize"
	ActMetadata   = "metadata"
	ActDelete     = "delete"
	ActErase      = "erase"
	ActExport     = "export"
)

// Actions are all actions, as the manifest declares them.
var Actions = []string{ActTokenize, ActDetokenize, ActMetadata, ActDelete, ActErase, ActExport}

// maxBody bounds a request body (1,000 values of at most 4 KiB, in JSON).
const maxBody = 8 << 20

// Routes is the vault's route table: the token type is in every path, so
// that access lists and policies see it as the resource.
func Routes() []pep.Route {
	var rs []pep.Route
	for _, t := range Types {
		rs = append(rs,
			pep.Route{Pattern: "POST /v1/tokenize/" + t, Resource: t, Action: ActTokenize},
			pep.Route{Pattern: "POST /v1/detokenize/" + t, Resource: t, Action: ActDetokenize},
			pep.Route{Pattern: "GET /v1/tokens/" + t + "/{token}/metadata", Resource: t, Action: ActMetadata, IDParam: "token"},
			pep.Route{Pattern: "DELETE /v1/tokens/" + t + "/{token}", Resource: t, Action: ActDelete, IDParam: "token"},
			pep.Route{Pattern: "POST /v1/subjects/{subject}/" + t + "/erase", Resource: t, Action: ActErase, IDParam: "subject"},
			pep.Route{Pattern: "GET /v1/subjects/{subject}/" + t + "/export", Resource: t, Action: ActExport, IDParam: "subject"},
		)
	}
	return rs
}

// Manifest is the vault's catalogue declaration: provider "vault", one
// resource per token type, every action.
func Manifest(version string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "service: vault\nversion: %s\nprovides:\n", version)
	for _, t := range Types {
		fmt.Fprintf(&b, "  - resource: %s\n    actions: [tokenize, detokenize, metadata, delete, erase, export]\n", t)
	}
	return b.Bytes()
}

// Recorder records audit events (*audit.Writer).
type Recorder interface {
	Write(e audit.Event)
}

// Handler serves the vault's API behind a PEP's middleware (which
// decides and audits every request first). rec, if set, receives a
// vault.detokenize event for every reveal and an admin-style event for
// erasures and exports.
func (v *Vault) Handler(rec Recorder, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{v: v, rec: rec, log: log}
	mux := http.NewServeMux()
	for _, t := range Types {
		mux.HandleFunc("POST /v1/tokenize/"+t, h.wrap(t, h.tokenize))
		mux.HandleFunc("POST /v1/detokenize/"+t, h.wrap(t, h.detokenize))
		mux.HandleFunc("GET /v1/tokens/"+t+"/{token}/metadata", h.wrap(t, h.metadata))
		mux.HandleFunc("DELETE /v1/tokens/"+t+"/{token}", h.wrap(t, h.delete))
		mux.HandleFunc("POST /v1/subjects/{subject}/"+t+"/erase", h.wrap(t, h.erase))
		mux.HandleFunc("GET /v1/subjects/{subject}/"+t+"/export", h.wrap(t, h.export))
	}
	return mux
}

type handler struct {
	v   *Vault
	rec Recorder
	log *slog.Logger
}

func (h *handler) wrap(typ string, fn func(w http.ResponseWriter, r *http.Request, typ string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if err := fn(w, r, typ); err != nil {
			h.fail(w, r, err)
		}
	}
}

// fail maps an error to a problem answer; nothing about stored values.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		problem.Write(w, problem.New(http.StatusRequestEntityTooLarge, "payload-too-large", "Payload too large", fmt.Sprintf("request bodies are limited to %d bytes", maxBody)))
	case errors.Is(err, ErrInvalidValue), errors.Is(err, ErrInvalidToken), errors.Is(err, ErrUnknownType), errors.Is(err, errBadJSON):
		problem.Write(w, problem.New(http.StatusBadRequest, "invalid-request", "Invalid request", err.Error()))
	case errors.Is(err, ErrTooMany):
		problem.Write(w, problem.New(http.StatusBadRequest, "batch-too-large", "Batch too large", err.Error()))
	case errors.Is(err, ErrNotFound):
		problem.Write(w, problem.New(http.StatusNotFound, "not-found", "Not found", "unknown, expired, deleted or erased token"))
	default:
		h.log.ErrorContext(r.Context(), "vault: request failed", "method", r.Method, "path", r.Pattern, "error", err)
		problem.Write(w, problem.New(http.StatusServiceUnavailable, "unavailable", "Unavailable", "the vault could not complete the request"))
	}
}

var errBadJSON = errors.New("vault: invalid JSON body")

func decode(r *http.Request, v any) error {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errBadJSON, err)
	}
	return nil
}

func reply(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// TokenizeRequest is the body of POST /v1/tokenize/{type}.
type TokenizeRequest struct {
	Values []Item `json:"values"`
	// TTL, if set, makes the tokens expire ("10m", at most 366 days).
	TTL string `json:"ttl,omitempty"`
}

func (h *handler) tokenize(w http.ResponseWriter, r *http.Request, typ string) error {
	var req TokenizeRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return fmt.Errorf("%w: ttl %q is not a positive duration", ErrInvalidValue, clip(req.TTL))
		}
		ttl = d
	}
	toks, err := h.v.Tokenize(r.Context(), typ, req.Values, ttl)
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, map[string]any{"type": typ, "tokens": toks})
}

// DetokenizeRequest is the body of POST /v1/detokenize/{type}.
type DetokenizeRequest struct {
	Tokens []string `json:"tokens"`
}

func (h *handler) detokenize(w http.ResponseWriter, r *http.Request, typ string) error {
	var req DetokenizeRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	out, err := h.v.Detokenize(r.Context(), typ, req.Tokens)
	if err != nil {
		return err
	}
	fps := make([]string, len(req.Tokens))
	revealed := 0
	for i, t := range req.Tokens {
		fps[i] = Fingerprint(t)
		if out[i].Error == "" {
			revealed++
		}
	}
	h.record(r, audit.KindDetokenize, typ, ActDetokenize, map[string]any{"token_fps": fps, "revealed": revealed, "requested": len(req.Tokens)})
	return reply(w, http.StatusOK, map[string]any{"type": typ, "values": out})
}

func (h *handler) metadata(w http.ResponseWriter, r *http.Request, typ string) error {
	md, err := h.v.Metadata(r.Context(), typ, r.PathValue("token"))
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, md)
}

func (h *handler) delete(w http.ResponseWriter, r *http.Request, typ string) error {
	tok := r.PathValue("token")
	if err := h.v.Delete(r.Context(), typ, tok); err != nil {
		return err
	}
	h.record(r, "vault.delete", typ, ActDelete, map[string]any{"token_fp": Fingerprint(tok)})
	return reply(w, http.StatusOK, map[string]any{"type": typ, "deleted": true})
}

func (h *handler) erase(w http.ResponseWriter, r *http.Request, typ string) error {
	subject := r.PathValue("subject")
	n, err := h.v.Erase(r.Context(), typ, subject)
	if err != nil {
		return err
	}
	h.record(r, "vault.erase", typ, ActErase, map[string]any{"subject_fp": Fingerprint(subject), "erased": n})
	return reply(w, http.StatusOK, map[string]any{"type": typ, "erased": n})
}

func (h *handler) export(w http.ResponseWriter, r *http.Request, typ string) error {
	subject := r.PathValue("subject")
	out, err := h.v.Export(r.Context(), typ, subject)
	if err != nil {
		return err
	}
	h.record(r, "vault.export", typ, ActExport, map[string]any{"subject_fp": Fingerprint(subject), "values": len(out)})
	return reply(w, http.StatusOK, map[string]any{"type": typ, "values": out})
}

// record writes an audit event naming the caller (the PEP's decision in
// the context) and the passport's user; never a value, token or subject,
// only their fingerprints.
func (h *handler) record(r *http.Request, kind, typ, action string, extra map[string]any) {
	if h.rec == nil {
		return
	}
	e := audit.Event{Kind: kind, Resource: typ, Action: action, Decision: audit.Allow, Extra: extra}
	if d, ok := pep.DecisionFromContext(r.Context()); ok && !d.Caller.IsZero() {
		e.Caller = d.Caller.String()
	}
	if c, ok := passport.FromContext(r.Context()); ok {
		e.User, e.CorrelationID, e.CredentialFP = c.Subject, c.CorrelationID, c.TokenFingerprint
	}
	h.rec.Write(e)
}
