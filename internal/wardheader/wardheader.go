// Package wardheader recognises ward's internal HTTP headers (Ward-*,
// X-Ward-*), which only ward components may set: the gateway and the
// sidecar remove every inbound copy, whatever its case and separator.
package wardheader

import (
	"net/http"
	"strings"
)

// Internal reports whether a header name belongs to ward's internal
// namespace (Ward-*, X-Ward-*), whatever its case and whether it uses "_"
// in place of "-": every proxy or framework that maps one onto the other
// must not let a client smuggle an internal header through.
func Internal(name string) bool {
	if len(name) < 5 {
		return false
	}
	n := min(len(name), 7)
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

// Strip removes every internal header from h and reports how many names
// it removed.
func Strip(h http.Header) int {
	n := 0
	for k := range h {
		if Internal(k) {
			delete(h, k)
			n++
		}
	}
	return n
}
