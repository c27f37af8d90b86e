package sts

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// BenchmarkTokenEndpoint measures POST /oauth2/token (client credentials,
// client_secret_basic) and POST /oauth2/introspect over real HTTPS with
// keep-alive, client and server in one process on the same cores,
// against a bare handler over the same transport. Ops/s = 1e9 / ns/op.
func BenchmarkTokenEndpoint(b *testing.B) {
	f := newFixture(b)
	c, secret := f.newClient(ClientSpec{Name: "bench", Scopes: []string{"orders:read"}})
	tok := f.token(c.ID, secret, nil)
	bare := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"active":true}`)
	}))
	defer bare.Close()
	run := func(b *testing.B, srv *httptest.Server, path, body string) {
		tr := srv.Client().Transport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		hc := &http.Client{Transport: tr}
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(secret))
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
	b.Run("client-credentials", func(b *testing.B) { run(b, f.srv, "/oauth2/token", "grant_type=client_credentials") })
	b.Run("introspect", func(b *testing.B) { run(b, f.srv, "/oauth2/introspect", url.Values{"token": {tok}}.Encode()) })
	b.Run("baseline-bare-handler", func(b *testing.B) { run(b, bare, "/", "grant_type=client_credentials") })
}
