package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
)

// internalHeader reports whether a header name belongs to ward's internal
// namespace (Ward-*, X-Ward-*), whatever its case and whether it uses "_"
// in place of "-": every proxy or framework that maps one onto the other
// must not let a client smuggle an internal header through.
func internalHeader(name string) bool {
	if len(name) < 5 {
		return false
	}
	n := len(name)
	if n > 7 {
		n = 7
	}
	var b [7]byte
	for i := range n {
		c := name[i]
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		}
		b[i] = c
	}
	s := string(b[:n])
	return strings.HasPrefix(s, "ward-") || s == "x-ward-"
}

// stripInternal removes every internal header from h and reports how many
// names it removed.
func stripInternal(h http.Header) int {
	n := 0
	for k := range h {
		if internalHeader(k) {
			delete(h, k)
			n++
		}
	}
	return n
}

// Credential headers never travel past the gateway.
var credentialHeaders = []string{"Authorization", "Proxy-Authorization", "X-Api-Key"}

// traceContext is the W3C trace context of one request.
type traceContext struct {
	traceID string // 32 lower-case hex: the correlation ID
	flags   string // 2 hex
}

// parseTraceparent accepts a version-00 traceparent header
// ("00-<32 hex>-<16 hex>-<2 hex>") with non-zero IDs.
func parseTraceparent(v string) (traceContext, bool) {
	if len(v) != 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || v[:2] != "00" {
		return traceContext{}, false
	}
	trace, span, flags := v[3:35], v[36:52], v[53:55]
	if !lowerHex(trace) || !lowerHex(span) || !lowerHex(flags) || allZero(trace) || allZero(span) {
		return traceContext{}, false
	}
	return traceContext{traceID: trace, flags: flags}, true
}

// newTrace starts a trace (sampled flag off).
func newTrace() traceContext {
	return traceContext{traceID: randomHex(16), flags: "00"}
}

// child is the traceparent the gateway sends upstream: the same trace, a
// new span (the gateway's).
func (t traceContext) child() string {
	return "00-" + t.traceID + "-" + randomHex(8) + "-" + t.flags
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool { return strings.Trim(s, "0") == "" }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b)
}
