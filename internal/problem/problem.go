// Package problem writes and reads RFC 9457 problem details, the error body of
// every ward HTTP API.
//
// A server maps an error to a problem in one place and writes it:
//
//	problem.Write(w, problem.New(http.StatusForbidden, "forbidden-identity",
//		"Forbidden identity", "the CSR names another service"))
//
// A client turns an unexpected response back into an error:
//
//	if resp.StatusCode != http.StatusCreated {
//		err := problem.Decode(resp) // *problem.Problem, use errors.As
//	}
package problem

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// ContentType is the media type of a problem body (RFC 9457 §3).
	ContentType = "application/problem+json"

	// TypeBase prefixes every ward problem type: TypeBase + slug.
	TypeBase = "https://ward.dev/problems/"

	// TypeBlank is the RFC 9457 type of a problem that means nothing beyond
	// its HTTP status code. FromStatus and Decode's fallback use it.
	TypeBlank = "about:blank"

	// MaxBodySize bounds how much of a response body Decode reads.
	MaxBodySize = 64 << 10
)

// Limits applied to the strings of a decoded problem so that a hostile or
// broken server cannot flood a terminal or a log line.
const (
	maxTitleLen  = 256
	maxDetailLen = 2048
	maxURILen    = 512
	maxSnippet   = 256
)

// ErrNoResponse is returned by Decode when it is given no response at all.
var ErrNoResponse = errors.New("problem: no response")

// Problem is an RFC 9457 problem details object. It implements error, so a
// client can return the decoded body and callers branch with errors.As.
type Problem struct {
	// Type identifies the kind of problem: TypeBase + slug, or TypeBlank.
	Type string `json:"type"`
	// Title is a short, human-readable summary of the problem type.
	Title string `json:"title"`
	// Status is the HTTP status code.
	Status int `json:"status"`
	// Detail explains this occurrence. It is shown to clients: never put
	// internal details (SQL, paths, stack traces) or secrets here.
	Detail string `json:"detail,omitempty"`
	// Instance optionally identifies this occurrence (a URI reference).
	Instance string `json:"instance,omitempty"`
}

// New returns a ward problem of type TypeBase + slug. An empty slug yields
// TypeBlank, an empty title the status text of status.
func New(status int, slug, title, detail string) *Problem {
	typ := TypeBlank
	if slug != "" {
		typ = TypeBase + slug
	}
	if title == "" {
		title = http.StatusText(status)
	}
	return &Problem{Type: typ, Title: title, Status: status, Detail: detail}
}

// FromStatus returns a problem that carries no more meaning than its HTTP
// status: type about:blank and the standard status text as title (RFC 9457
// §4.2.1). Use it for generic conditions such as 404 or 405.
func FromStatus(status int, detail string) *Problem {
	return New(status, "", "", detail)
}

// Error implements error: "problem: 403 Forbidden identity: the CSR names
// another service".
func (p *Problem) Error() string {
	if p == nil {
		return "problem: <nil>"
	}
	var b strings.Builder
	b.WriteString("problem: ")
	b.WriteString(strconv.Itoa(p.Status))
	if p.Title != "" {
		b.WriteByte(' ')
		b.WriteString(p.Title)
	}
	if p.Detail != "" {
		b.WriteString(": ")
		b.WriteString(p.Detail)
	}
	return b.String()
}

// Slug returns the part of Type after TypeBase ("bad-csr"), or "" when the
// type is not a ward problem type.
func (p *Problem) Slug() string {
	if p == nil {
		return ""
	}
	slug, ok := strings.CutPrefix(p.Type, TypeBase)
	if !ok {
		return ""
	}
	return slug
}

// Write sends p with its status code and Content-Type
// application/problem+json. A nil problem or one whose status is not an error
// status (4xx or 5xx) is sent as a 500.
func Write(w http.ResponseWriter, p *Problem) {
	if p == nil {
		p = FromStatus(http.StatusInternalServerError, "")
	}
	if p.Status < 400 || p.Status > 599 {
		q := *p
		q.Status = http.StatusInternalServerError
		p = &q
	}
	body, err := json.Marshal(p)
	if err != nil { // only strings and an int: cannot happen
		body = []byte(`{"type":"about:blank","title":"Internal Server Error","status":500}`)
		p = FromStatus(http.StatusInternalServerError, "")
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
}

// Decode reads the body of an unsuccessful response (at most MaxBodySize
// bytes) and returns it as an error. It never returns nil.
//
// A valid application/problem+json body yields that *Problem, with Status set
// to the response's status code (the authoritative one). Any other body yields
// a *Problem of type about:blank whose Detail holds a short, sanitized snippet
// of the body, so errors.As(err, &p) always works and p.Status is always set.
// Strings from the body are stripped of control characters and truncated.
// Decode does not close the body.
func Decode(resp *http.Response) error {
	if resp == nil {
		return ErrNoResponse
	}
	var body []byte
	truncated := false
	if resp.Body != nil {
		b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodySize+1))
		if err != nil {
			return fmt.Errorf("problem: reading %d response: %w", resp.StatusCode, err)
		}
		if len(b) > MaxBodySize {
			b, truncated = b[:MaxBodySize], true
		}
		body = b
	}
	if !truncated && isProblemType(resp.Header.Get("Content-Type")) {
		if p, ok := parse(body); ok {
			p.Status = resp.StatusCode
			return p
		}
	}
	return fallback(resp.StatusCode, body, truncated)
}

func isProblemType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == ContentType
}

// parse decodes a problem body. It requires a JSON object; every member is
// optional (RFC 9457 §3.1), a missing type means about:blank.
func parse(body []byte) (*Problem, bool) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, false
	}
	// Decode into loosely typed members: RFC 9457 §3.1 says a member of the
	// wrong type is to be ignored, not to fail the whole body.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, false
	}
	str := func(key string, max int) string {
		var s string
		if v, ok := raw[key]; ok && json.Unmarshal(v, &s) == nil {
			return clean(s, max)
		}
		return ""
	}
	p := &Problem{
		Type:     str("type", maxURILen),
		Title:    str("title", maxTitleLen),
		Detail:   str("detail", maxDetailLen),
		Instance: str("instance", maxURILen),
	}
	if p.Type == "" {
		p.Type = TypeBlank
	}
	return p, true
}

func fallback(status int, body []byte, truncated bool) *Problem {
	p := FromStatus(status, "")
	if p.Title == "" {
		p.Title = "HTTP " + strconv.Itoa(status)
	}
	snippet := clean(string(body), maxSnippet)
	if truncated && snippet != "" {
		snippet += "…"
	}
	p.Detail = snippet
	return p
}

// clean makes s safe to print: invalid UTF-8 and control characters (which
// could drive a terminal) are removed, runs of white space collapse to one
// space, and the result is cut to at most max bytes on a rune boundary.
func clean(s string, max int) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			continue
		case unicode.IsSpace(r):
			space = b.Len() > 0
			continue
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			continue
		}
		n := utf8.RuneLen(r)
		if space {
			n++
		}
		if b.Len()+n > max {
			break
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
