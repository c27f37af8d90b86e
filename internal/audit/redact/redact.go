// Package redact removes sensitive data from audit lines before they leave
// the host (seed 002, rule 6): card numbers (validated by Luhn, so an
// order number of 16 digits survives), national ID numbers (US SSN
// pattern), e-mail addresses, bearer tokens and JWTs, ward API keys and
// tokens, the values of sensitive field names (password, secret, token,
// authorization, api_key, …) and configured field names and patterns.
//
// Redaction works on the decoded JSON of an event, every string at any
// depth, so that an escaped value cannot slip past a pattern; a line that
// is not JSON is redacted as text.
package redact

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/valyala/fastjson"

	"github.com/wardsec/ward/audit"
)

// Markers that replace what was removed.
const (
	MarkPAN        = "[REDACTED:pan]"
	MarkNationalID = "[REDACTED:national-id]"
	MarkEmail      = "[REDACTED:email]"
	MarkToken      = "[REDACTED:token]"
	MarkField      = "[REDACTED]"
	MarkPattern    = "[REDACTED:pattern]"
)

// Config adds to the built-in rules.
type Config struct {
	// Fields are extra field names whose values are removed entirely
	// (compared case-insensitively, "-" and "_" alike).
	Fields []string
	// Patterns are extra regular expressions whose matches are removed.
	Patterns []string
}

// Redactor applies the rules. It is safe for concurrent use.
type Redactor struct {
	fields   map[string]bool
	patterns []*regexp.Regexp
}

var defaultFields = []string{"password", "passwd", "secret", "client_secret", "token", "access_token", "refresh_token",
	"id_token", "authorization", "proxy_authorization", "api_key", "apikey", "x_api_key", "cookie", "set_cookie",
	"private_key", "ssn", "card_number", "pan", "cvv", "cvc", "ward_passport"}

var (
	// 13–19 digits, optionally separated by single spaces or dashes.
	panRE   = regexp.MustCompile(`\b\d(?:[ -]?\d){12,18}\b`)
	ssnRE   = regexp.MustCompile(`\b\d{3}-\d{2}-\d{4}\b`)
	emailRE = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`)
	// Bearer tokens, JWTs (three base64url parts, the first two JSON),
	// ward API keys and ward secret tokens.
	bearerRE = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/=]{8,}`)
	jwtRE    = regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`)
	wardRE   = regexp.MustCompile(`\b(ward_[0-9a-f]{16}_[A-Za-z0-9_-]{43}_[0-9a-f]{8}|ward(bt|adm)_[A-Za-z0-9_-]{43})`)
)

// New returns a Redactor with the built-in rules and cfg's additions.
func New(cfg Config) (*Redactor, error) {
	r := &Redactor{fields: map[string]bool{}}
	for _, f := range append(defaultFields, cfg.Fields...) {
		r.fields[normField(f)] = true
	}
	for _, p := range cfg.Patterns {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("redact: pattern %q: %w", p, err)
		}
		r.patterns = append(r.patterns, re)
	}
	return r, nil
}

func normField(f string) string { return strings.ReplaceAll(strings.ToLower(f), "-", "_") }

// Line redacts one line: a JSON object is decoded, redacted value by
// value and re-encoded; anything else is redacted as text. changed
// reports whether anything was removed.
func (r *Redactor) Line(line []byte) (out []byte, changed bool) {
	trimmed := bytes.TrimSpace(line)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var v map[string]any
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber()
		if dec.Decode(&v) == nil && !dec.More() {
			nv, ch := r.value("", v)
			if !ch {
				return line, false
			}
			b, err := json.Marshal(nv)
			if err == nil {
				return b, true
			}
		}
	}
	s, ch := r.String(string(line))
	if !ch {
		return line, false
	}
	return []byte(s), true
}

// Event redacts an event's string fields and extras in place and reports
// whether anything was removed; it spares the agent a JSON round trip.
func (r *Redactor) Event(e *audit.Event) bool {
	changed := false
	for _, f := range []*string{&e.Service, &e.Instance, &e.Host, &e.CorrelationID, &e.Kind, &e.Caller, &e.User,
		&e.Action, &e.Resource, &e.Decision, &e.Reason, &e.PolicyVersion, &e.CredentialFP} {
		if *f == "" {
			continue
		}
		if ns, ch := r.String(*f); ch {
			*f, changed = ns, true
		}
	}
	if len(e.Extra) > 0 {
		if _, ch := r.value("", map[string]any(e.Extra)); ch {
			changed = true
		}
	}
	return changed
}

// value redacts v, the value of field key.
func (r *Redactor) value(key string, v any) (any, bool) {
	if key != "" && r.fields[normField(key)] {
		if s, ok := v.(string); ok && s == "" {
			return v, false
		}
		return MarkField, true
	}
	switch t := v.(type) {
	case string:
		return r.String(t)
	case map[string]any:
		changed := false
		for k, x := range t {
			nx, ch := r.value(k, x)
			if ch {
				t[k], changed = nx, true
			}
		}
		return t, changed
	case []any:
		changed := false
		for i, x := range t {
			nx, ch := r.value("", x)
			if ch {
				t[i], changed = nx, true
			}
		}
		return t, changed
	case json.Number:
		s, ch := r.String(t.String())
		if ch {
			return s, true
		}
		return t, false
	case float64:
		if s, ch := r.String(strconv.FormatFloat(t, 'f', -1, 64)); ch {
			return s, true
		}
		return t, false
	}
	return v, false
}

// String redacts free text. Each rule runs only when the text holds what
// it needs (an "@", enough digits, "eyJ", "ward", "bearer"/"basic"), so
// ordinary strings cost one scan.
func (r *Redactor) String(s string) (string, bool) {
	orig := s
	digits, at, lowerHasWard, hasScheme := 0, false, false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '@':
			at = true
		case c == 'w' || c == 'W':
			lowerHasWard = lowerHasWard || (i+4 <= len(s) && strings.EqualFold(s[i:i+4], "ward"))
		case c == 'b' || c == 'B':
			hasScheme = hasScheme || (i+6 <= len(s) && (strings.EqualFold(s[i:i+6], "bearer") || strings.EqualFold(s[i:i+5], "basic")))
		}
	}
	if lowerHasWard {
		s = wardRE.ReplaceAllString(s, MarkToken)
	}
	if strings.Contains(s, "eyJ") {
		s = jwtRE.ReplaceAllString(s, MarkToken)
	}
	if hasScheme {
		s = bearerRE.ReplaceAllStringFunc(s, func(m string) string {
			scheme, _, _ := strings.Cut(m, " ")
			return scheme + " " + MarkToken
		})
	}
	if at {
		s = emailRE.ReplaceAllString(s, MarkEmail)
	}
	if digits >= 9 {
		s = ssnRE.ReplaceAllString(s, MarkNationalID)
	}
	if digits >= 13 {
		s = panRE.ReplaceAllStringFunc(s, func(m string) string {
			if luhn(m) {
				return MarkPAN
			}
			return m
		})
	}
	for _, re := range r.patterns {
		s = re.ReplaceAllString(s, MarkPattern)
	}
	return s, s != orig
}

// luhn reports whether the digits of s pass the Luhn check.
func luhn(s string) bool {
	sum, n, double := 0, 0, false
	for i := len(s) - 1; i >= 0; i-- {
		c := s[i]
		if c < '0' || c > '9' {
			continue
		}
		d := int(c - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
		n++
	}
	return n >= 13 && sum%10 == 0
}

// JSON redacts a parsed JSON value (the value of field key, "" at the
// top) with the rules Line applies to decoded JSON: every string at any
// depth, number texts (a card number written as a number), and the whole
// value of a sensitive field unless it is an empty string. Objects and
// arrays are changed in place; a replaced scalar is returned (nil when
// v stays). New values come from ar.
func (r *Redactor) JSON(key []byte, v *fastjson.Value, ar *fastjson.Arena) (repl *fastjson.Value, changed bool) {
	if len(key) > 0 && r.sensitive(key) {
		if v.Type() == fastjson.TypeString && len(v.GetStringBytes()) == 0 {
			return nil, false
		}
		return ar.NewString(MarkField), true
	}
	switch v.Type() {
	case fastjson.TypeString:
		s := v.GetStringBytes()
		if ns, ch := r.String(string(s)); ch {
			return ar.NewString(ns), true
		}
	case fastjson.TypeNumber:
		if ns, ch := r.String(v.String()); ch {
			return ar.NewString(ns), true
		}
	case fastjson.TypeObject:
		o, _ := v.Object()
		var keys []string
		var vals []*fastjson.Value
		o.Visit(func(k []byte, x *fastjson.Value) {
			if nx, ch := r.JSON(k, x, ar); ch {
				changed = true
				if nx != nil {
					keys, vals = append(keys, string(k)), append(vals, nx)
				}
			}
		})
		for i, k := range keys {
			o.Set(k, vals[i])
		}
		return nil, changed
	case fastjson.TypeArray:
		items, _ := v.Array()
		for i, x := range items {
			if nx, ch := r.JSON(nil, x, ar); ch {
				changed = true
				if nx != nil {
					v.SetArrayItem(i, nx)
				}
			}
		}
		return nil, changed
	}
	return nil, false
}

// sensitive reports whether a field name is one whose value is removed,
// without allocating for the usual short names.
func (r *Redactor) sensitive(key []byte) bool {
	if len(key) > 64 {
		return r.fields[normField(string(key))]
	}
	var buf [64]byte
	for i, c := range key {
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c == '-':
			c = '_'
		}
		buf[i] = c
	}
	return r.fields[string(buf[:len(key)])]
}
