package sts

import (
	"strings"
	"testing"
)

func FuzzParseAPIKey(f *testing.F) {
	f.Add("ward_0123456789abcdef_" + strings.Repeat("A", 43) + "_00000000")
	f.Add("ward_")
	f.Add("")
	f.Fuzz(func(t *testing.T, key string) {
		id, err := ParseAPIKey(key)
		if err == nil && (len(id) != 3+apiKeyIDLen || !strings.HasPrefix(id, "wk_")) {
			t.Fatalf("accepted %q with id %q", key, id)
		}
	})
}

func FuzzParseToken(f *testing.F) {
	fx := newFixture(f)
	c, secret := fx.newClient(ClientSpec{Name: "fuzz"})
	f.Add(fx.token(c.ID, secret, nil))
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, raw string) {
		cl, err := fx.s.parseToken(raw)
		if err == nil && (cl.Issuer != testIssuer || cl.ID == "") {
			t.Fatalf("accepted %q: %+v", raw, cl)
		}
	})
}

func FuzzClientAssertion(f *testing.F) {
	fx := newFixture(f)
	f.Add("a.b.c", "")
	f.Add("eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJ3Y18ifQ.AAAA", "wc_000000000000000000000000")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, assertion, clientID string) {
		if _, err := fx.s.authenticateAssertion(t.Context(), assertion, clientID); err == nil {
			t.Fatalf("accepted assertion %q for %q", assertion, clientID)
		}
	})
}
