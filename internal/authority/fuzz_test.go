package authority

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/wardsec/ward/internal/problem"
)

// FuzzAPIBodies sends untrusted bodies to the JSON endpoints and OCSP: the
// answer is never a 5xx, and errors are problem documents.
func FuzzAPIBodies(f *testing.F) {
	k := newKMS(f)
	st, res := initStore(f, f.TempDir(), k)
	a, err := New(context.Background(), Config{Store: st, KMS: k, PublicURL: "https://127.0.0.1:8443"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = a.Close() })
	h := a.Handler()
	serve := func(method, path, token string, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		req.TLS = &tls.ConnectionState{}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := serve("POST", "/v1/teams", res.AdminToken, []byte(`{"name":"shop"}`)); rec.Code != 201 {
		f.Fatalf("team: %d %s", rec.Code, rec.Body)
	}
	rec := serve("POST", "/v1/services", res.AdminToken, []byte(`{"name":"web","team":"shop"}`))
	if rec.Code != 201 {
		f.Fatalf("service: %d %s", rec.Code, rec.Body)
	}
	bt := rec.Body.String()
	bt = bt[strings.Index(bt, bootstrapTokenPrefix):]
	bt = bt[:strings.IndexByte(bt, '"')]

	paths := []struct{ method, path, token string }{
		{"POST", "/v1/teams", res.AdminToken},
		{"POST", "/v1/services", res.AdminToken},
		{"POST", "/v1/admin-tokens", res.AdminToken},
		{"POST", "/v1/svids/abc/revoke", res.AdminToken},
		{"POST", "/v1/cas/int-x/retire", res.AdminToken},
		{"POST", "/v1/svid", bt},
		{"POST", "/ocsp", ""},
		{"GET", "/ocsp/", ""},
		{"GET", "/v1/watch?since=", ""},
	}
	for i := range paths {
		f.Add(uint8(i), []byte(`{"name":"a-1","team":"shop","level":"L3","svid_ttl":"1m"}`))
		f.Add(uint8(i), []byte(`{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----"}`))
		f.Add(uint8(i), []byte(`{"roles":["team:shop"],"name":"x"}`))
		f.Add(uint8(i), []byte(`MEIwQDA+MDwwOjAJBgUrDgMCGgUABBQ`))
		f.Add(uint8(i), []byte{0x30, 0x80, 0x00})
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		p := paths[int(which)%len(paths)]
		path := p.path
		if p.method == "GET" {
			path += url.PathEscape(string(body))
			body = nil
		}
		if _, err := url.ParseRequestURI(path); err != nil {
			return
		}
		rec := serve(p.method, path, p.token, body)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", p.method, path, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && rec.Header().Get("Content-Type") != problem.ContentType {
			t.Fatalf("%s %s: %d with content type %q", p.method, path, rec.Code, rec.Header().Get("Content-Type"))
		}
	})
}

// FuzzDecodeJSON checks the body decoder alone: it never panics and accepts
// only one well-formed object with known fields.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{"name":"x"}`, `{"name":"x"}{}`, `{"name":1}`, `[]`, ``, `{"other":1}`, `{"name":"x"} `, "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, _ := http.NewRequest("POST", "/", bytes.NewReader(body))
		var v struct {
			Name string `json:"name"`
		}
		err := decodeJSON(req, &v, false)
		if err == nil && !bytes.Contains(body, []byte("{")) {
			t.Fatalf("accepted %q", body)
		}
	})
}
