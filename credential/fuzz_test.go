package credential_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/wardsec/ward/credential"
	"github.com/wardsec/ward/internal/sts"
)

func FuzzVerifyAccessToken(f *testing.F) {
	a := newAuthority(f)
	c, secret, err := a.s.CreateClient(context.Background(), sts.ClientSpec{Name: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(a.token(a.client(nil), url.Values{"grant_type": {"client_credentials"}}, c.ID, secret))
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	v, err := credential.New(credential.Config{Issuer: a.url, HTTPClient: a.client(nil)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		claims, err := v.VerifyAccessToken(context.Background(), raw, nil)
		if err == nil && (claims.Issuer != a.url || claims.ID == "") {
			t.Fatalf("accepted %q: %+v", raw, claims)
		}
	})
}
