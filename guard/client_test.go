package guard

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAuthorityServer serves a's list and keys over TLS the way ward's
// authority does, and records declared manifests.
func fakeAuthorityServer(t *testing.T, a *testAuthority) (*httptest.Server, *tls.Config, *[]string) {
	t.Helper()
	var mu sync.Mutex
	declared := []string{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/accesslist", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") != MediaType {
			http.Error(w, "accept", http.StatusNotAcceptable)
			return
		}
		jws, err := a.FetchAccessList(r.Context())
		if err != nil {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"type":"https://ward.dev/problems/unavailable","title":"Unavailable","status":503,"detail":"store down"}`)
			return
		}
		w.Header().Set("Content-Type", MediaType)
		_, _ = w.Write(jws)
	})
	mux.HandleFunc("GET /v1/keys", func(w http.ResponseWriter, r *http.Request) {
		ks, _ := a.FetchKeys(r.Context())
		w.Header().Set("Content-Type", KeySetMediaType)
		_, _ = w.Write(ks)
	})
	mux.HandleFunc("POST /v1/catalog/declarations", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "application/yaml" || !strings.HasPrefix(string(body), "service:") {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"type":"https://ward.dev/problems/invalid-manifest","status":400,"detail":"service: required"}`)
			return
		}
		mu.Lock()
		declared = append(declared, string(body))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	})
	mux.HandleFunc("GET /v1/big", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(make([]byte, MaxListSize+10))
	})
	mux.HandleFunc("GET /redirect/v1/accesslist", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://example.com/", http.StatusFound)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted-server case fails handshakes on purpose
	srv.StartTLS()
	t.Cleanup(srv.Close)
	conf := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	return srv, conf, &declared
}

func TestNewClientValidates(t *testing.T) {
	tests := []struct {
		name string
		url  string
		conf *tls.Config
	}{
		{"plain http", "http://authority.example", &tls.Config{}},
		{"relative", "/v1", &tls.Config{}},
		{"not a URL", "https://[::1", &tls.Config{}},
		{"no TLS config", "https://authority.example", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewClient(tt.url, tt.conf); err == nil || !strings.HasPrefix(err.Error(), "guard: ") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestClient(t *testing.T) {
	a := newTestAuthority(t)
	a.setList(4, []string{"web"})
	srv, conf, declared := fakeAuthorityServer(t, a)
	c, err := NewClient(srv.URL+"/", conf)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("list and keys verify", func(t *testing.T) {
		jws, err := c.FetchAccessList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := c.FetchKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ks, err := ParseKeySet(raw, a.bundle, testTD, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if l, err := Verify(jws, ks, svc("whoami")); err != nil || l.Version != 4 {
			t.Fatalf("verify: %v", err)
		}
	})
	t.Run("problem answer", func(t *testing.T) {
		a.setDown(true)
		defer a.setDown(false)
		_, err := c.FetchAccessList(ctx)
		var ae *AuthorityError
		if !errors.As(err, &ae) || ae.Status != 503 || ae.Type != "https://ward.dev/problems/unavailable" || ae.Detail != "store down" {
			t.Fatalf("err = %#v", err)
		}
		if !strings.HasPrefix(err.Error(), "guard: authority answered 503") {
			t.Fatalf("message %q", err)
		}
	})
	t.Run("declare", func(t *testing.T) {
		if err := c.Declare(ctx, []byte("service: whoami\n")); err != nil {
			t.Fatal(err)
		}
		if len(*declared) != 1 || (*declared)[0] != "service: whoami\n" {
			t.Fatalf("declared %q", *declared)
		}
		err := c.Declare(ctx, []byte("nope"))
		var ae *AuthorityError
		if !errors.As(err, &ae) || ae.Status != 400 || ae.Detail != "service: required" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("answer too large", func(t *testing.T) {
		if _, err := c.do(ctx, http.MethodGet, "/v1/big", MediaType, "", nil, MaxListSize); err == nil {
			t.Fatal("accepted an answer larger than the bound")
		}
	})
	t.Run("redirects are not followed", func(t *testing.T) {
		rc, err := NewClient(srv.URL+"/redirect", conf)
		if err != nil {
			t.Fatal(err)
		}
		var ae *AuthorityError
		if _, err := rc.FetchAccessList(ctx); !errors.As(err, &ae) || ae.Status != http.StatusFound {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("guard over the client", func(t *testing.T) {
		g := newTestGuard(t, a, func(cfg *Config) { cfg.Fetcher = c })
		if err := g.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if g.Version() != 4 || g.Check(ctx, svc("web"), "whoami", "read") != nil {
			t.Fatalf("version %d", g.Version())
		}
	})
	t.Run("untrusted server", func(t *testing.T) {
		uc, err := NewClient(srv.URL, &tls.Config{MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := uc.FetchAccessList(ctx); err == nil {
			t.Fatal("fetched from a server whose certificate is not trusted")
		}
	})
}
