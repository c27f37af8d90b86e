package guard

import (
	"testing"
	"time"
)

func FuzzVerify(f *testing.F) {
	a := newTestAuthority(f)
	keys := a.keys()
	f.Add(a.sign(a.listFor(1, "web")))
	f.Add(a.sign(a.listFor(2)))
	f.Add([]byte("e30.e30."))
	f.Add([]byte("eyJhbGciOiJFZERTQSJ9.e30.AAAA"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, jws []byte) {
		l, err := Verify(jws, keys, svc("whoami"))
		if err == nil && (l == nil || l.Version < 1 || l.Subject != svc("whoami").String()) {
			t.Fatalf("accepted an invalid list: %+v", l)
		}
	})
}

func FuzzParseKeySet(f *testing.F) {
	a := newTestAuthority(f)
	f.Add(a.keySet())
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","x5c":["AAAA"]}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256"}]}`))
	now := time.Now()
	f.Fuzz(func(t *testing.T, jwks []byte) {
		ks, err := ParseKeySet(jwks, a.bundle, testTD, now)
		if err == nil && ks.Len() == 0 {
			t.Fatal("accepted an empty key set")
		}
		if err == nil && !ks.has(a.kid) {
			t.Fatalf("trusted a key that is not the authority's")
		}
	})
}
