package guard

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestVerify(t *testing.T) {
	a := newTestAuthority(t)
	keys := a.keys()
	good := a.listFor(3, "web")
	payload, _ := json.Marshal(good)
	other := newTestAuthority(t) // same trust domain name, another CA and key
	foreign := newTestAuthorityFor(t, spiffeid.RequireTrustDomainFromString("evil.example"), "/ward/authority")

	mutate := func(f func(*AccessList)) []byte {
		l := a.listFor(3, "web")
		f(&l)
		return a.sign(l)
	}
	tamper := func(jws []byte) []byte {
		parts := strings.Split(string(jws), ".")
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		payload = []byte(strings.Replace(string(payload), "svc/web", "svc/bad", 1))
		parts[1] = base64.RawURLEncoding.EncodeToString(payload)
		return []byte(strings.Join(parts, "."))
	}
	tests := []struct {
		name string
		jws  []byte
		keys *KeySet
		want error
	}{
		{"good", a.sign(good), keys, nil},
		{"tampered payload", tamper(a.sign(good)), keys, ErrBadSignature},
		{"signed by another key", other.sign(good), keys, ErrNoTrustedKey},
		{"another key under our kid", other.signRaw(payload, JWSType, a.kid), keys, ErrBadSignature},
		{"wrong typ", a.signRaw(payload, "JWT", a.kid), keys, ErrMalformed},
		{"unknown kid", a.signRaw(payload, JWSType, "nope"), keys, ErrNoTrustedKey},
		{"alg none", []byte(base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"ward-accesslist+jws","kid":"`+a.kid+`"}`)) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."), keys, ErrMalformed},
		{"not a JWS", []byte("hello"), keys, ErrMalformed},
		{"too large", make([]byte, MaxListSize+1), keys, ErrMalformed},
		{"no keys", a.sign(good), nil, ErrNoTrustedKey},
		{"another provider", mutate(func(l *AccessList) { l.Subject = svc("orders").String() }), keys, ErrWrongProvider},
		{"foreign subject", mutate(func(l *AccessList) { l.Subject = "spiffe://evil.example/svc/whoami" }), keys, ErrForeignTrustDomain},
		{"foreign issuer", mutate(func(l *AccessList) { l.Issuer = "spiffe://evil.example/ward/authority" }), keys, ErrForeignTrustDomain},
		{"issuer not the authority", mutate(func(l *AccessList) { l.Issuer = svc("web").String() }), keys, ErrMalformed},
		{"foreign consumer", mutate(func(l *AccessList) { l.Consumers[0].ID = "spiffe://evil.example/svc/web" }), keys, ErrForeignTrustDomain},
		{"bad consumer ID", mutate(func(l *AccessList) { l.Consumers[0].ID = "https://web" }), keys, ErrMalformed},
		{"version zero", mutate(func(l *AccessList) { l.Version = 0 }), keys, ErrMalformed},
		{"empty grant", mutate(func(l *AccessList) { l.Consumers[0].Grants[0].Actions = nil }), keys, ErrMalformed},
		{"unknown field", a.signRaw([]byte(`{"iss":"spiffe://example.org/ward/authority","sub":"spiffe://example.org/svc/whoami","ver":1,"iat":1,"consumers":[],"admin":true}`), JWSType, a.kid), keys, ErrMalformed},
		{"foreign authority's own list", foreign.sign(foreign.listFor(3, "web")), keys, ErrNoTrustedKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Verify(tt.jws, tt.keys, svc("whoami"))
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if l.Version != 3 || len(l.Consumers) != 1 || l.Consumers[0].ID != svc("web").String() {
					t.Fatalf("list %+v", l)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "guard: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestParseKeySet(t *testing.T) {
	a := newTestAuthority(t)
	other := newTestAuthority(t)
	wrongID := newTestAuthorityFor(t, testTD, "/svc/web")
	withKID := func(ks []byte, kid string) []byte {
		return []byte(strings.Replace(string(ks), a.kid, kid, 1))
	}
	tests := []struct {
		name string
		jwks []byte
		at   time.Time
		ok   bool
	}{
		{"good", a.keySet(), time.Now(), true},
		{"chain from another CA", other.keySet(), time.Now(), false},
		{"certificate for a service", wrongID.keySet(), time.Now(), false},
		{"kid not the thumbprint", withKID(a.keySet(), "abc"), time.Now(), false},
		{"expired certificate", a.keySet(), time.Now().Add(48 * time.Hour), false},
		{"empty", []byte(`{"keys":[]}`), time.Now(), false},
		{"not JSON", []byte(`{`), time.Now(), false},
		{"no x5c", []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`), time.Now(), false},
		{"too large", make([]byte, MaxKeySetSize+1), time.Now(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, err := ParseKeySet(tt.jwks, a.bundle, testTD, tt.at)
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrNoTrustedKey) {
				t.Fatalf("err = %v, want ErrNoTrustedKey", err)
			}
			if tt.ok && ks.Len() != 1 {
				t.Fatalf("Len = %d", ks.Len())
			}
		})
	}
	// A key set that mixes a good key and a bad one keeps the good one.
	var a1, o1 struct {
		Keys []json.RawMessage `json:"keys"`
	}
	_ = json.Unmarshal(a.keySet(), &a1)
	_ = json.Unmarshal(other.keySet(), &o1)
	mixed, _ := json.Marshal(map[string]any{"keys": append(o1.Keys, a1.Keys...)})
	ks, err := ParseKeySet(mixed, a.bundle, testTD, time.Now())
	if err != nil || ks.Len() != 1 || !ks.has(a.kid) {
		t.Fatalf("mixed: %v, %d keys", err, ks.Len())
	}
}
