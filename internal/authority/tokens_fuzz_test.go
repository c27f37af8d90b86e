package authority

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzTokenParsing feeds untrusted Authorization headers through the bearer
// extraction and the token shape check: no panic, and only tokens of the
// exact issued shape are accepted for a lookup.
func FuzzTokenParsing(f *testing.F) {
	good, _, err := newToken(bootstrapTokenPrefix)
	if err != nil {
		f.Fatal(err)
	}
	adm, _, err := newToken(adminTokenPrefix)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"Bearer " + good, "bearer " + adm, "Basic abc", "Bearer", "Bearer  wardbt_", "Bearer wardbt_" + strings.Repeat("A", 43) + "=", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		req := httptest.NewRequest("POST", "/v1/svid", nil)
		req.Header.Set("Authorization", header)
		tok, ok := bearer(req)
		if !ok {
			return
		}
		for _, prefix := range []string{bootstrapTokenPrefix, adminTokenPrefix} {
			if wellFormedToken(tok, prefix) {
				if len(tok) != len(prefix)+tokenBodyLen || !strings.HasPrefix(tok, prefix) {
					t.Fatalf("accepted malformed token %q", tok)
				}
			}
		}
		if fp := tokenFingerprint(tok); len(fp) != 8 {
			t.Fatalf("fingerprint %q", fp)
		}
	})
}
