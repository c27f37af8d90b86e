package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"strings"

	"github.com/wardsec/ward/internal/wardheader"
)

// internalHeader and stripInternal are wardheader's, shared with the
// sidecar.
var (
	internalHeader = wardheader.Internal
	stripInternal  = wardheader.Strip
)

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
