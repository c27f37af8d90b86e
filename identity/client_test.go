package identity

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

func TestDecodeProblem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		want        AuthorityError
	}{
		{
			name: "problem", status: 401, contentType: "application/problem+json",
			body: `{"type":"https://ward.dev/problems/unauthorized","title":"Unauthorized","status":401,"detail":"bad token"}`,
			want: AuthorityError{Status: 401, Type: "https://ward.dev/problems/unauthorized", Title: "Unauthorized", Detail: "bad token"},
		},
		{
			name: "status in body is ignored", status: 403, contentType: "application/problem+json; charset=utf-8",
			body: `{"type":"https://ward.dev/problems/forbidden-identity","status":200}`,
			want: AuthorityError{Status: 403, Type: "https://ward.dev/problems/forbidden-identity", Title: "Forbidden"},
		},
		{name: "plain text", status: 502, contentType: "text/plain", body: "bad gateway", want: AuthorityError{Status: 502, Title: "Bad Gateway"}},
		{name: "broken json", status: 500, contentType: "application/problem+json", body: `{"type":`, want: AuthorityError{Status: 500, Title: "Internal Server Error"}},
		{
			name: "long detail is clipped", status: 400, contentType: "application/json",
			body: `{"detail":"` + strings.Repeat("x", 2000) + `"}`,
			want: AuthorityError{Status: 400, Title: "Bad Request", Detail: strings.Repeat("x", 512) + "…"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := decodeProblem(tc.status, tc.contentType, []byte(tc.body))
			if *got != tc.want {
				t.Fatalf("got %+v\nwant %+v", *got, tc.want)
			}
			if !strings.HasPrefix(got.Error(), "identity: ") {
				t.Errorf("error %q does not start with the package name", got.Error())
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string
		is   error
	}{
		{name: "no url", cfg: Config{BundleFile: "x"}, want: "AuthorityURL is required"},
		{name: "http", cfg: Config{AuthorityURL: "http://a:1", BundleFile: "x"}, want: "must be https"},
		{name: "query", cfg: Config{AuthorityURL: "https://a:1/?x=1", BundleFile: "x"}, want: "query"},
		{name: "bad fingerprint", cfg: Config{AuthorityURL: "https://a:1", RootFingerprint: "abc"}, want: "RootFingerprint"},
		{name: "no trust", cfg: Config{AuthorityURL: "https://a:1", BootstrapToken: "t"}, want: "BundleFile"},
		{name: "no token no dir svid", cfg: Config{AuthorityURL: "https://a:1", BundleFile: "x"}, is: ErrNoSVID},
		{name: "missing bundle file", cfg: Config{AuthorityURL: "https://a:1", BundleFile: "/nonexistent/bundle.pem", BootstrapToken: "t"}, want: "Config.BundleFile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(t.Context(), tc.cfg)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("got %v, want %v", err, tc.is)
			}
		})
	}
}

func TestBadTokenIsAuthorityError(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	cfg := sourceConfig(t, fa, webID)
	cfg.BootstrapToken = "wardbt_wrong"
	_, err := New(t.Context(), cfg)
	var ae *AuthorityError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || ae.Type != "https://ward.dev/problems/unauthorized" {
		t.Fatalf("got %v, want AuthorityError 401 unauthorized", err)
	}
	if strings.Contains(err.Error(), "wardbt_wrong") {
		t.Fatal("error message contains the token")
	}
}

// TestBoundedResponse: an answer above 1 MiB is refused, not buffered.
func TestBoundedResponse(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		big := bytes.Repeat([]byte(" "), maxResponseBytes)
		_, _ = w.Write(append([]byte(`{"trust_domain":"ward.test",`), big...))
		_, _ = w.Write([]byte(`"bundle_pem":""}`))
	}))
	defer srv.Close()
	c := newAuthorityClient(srv.URL, func(tls.ConnectionState) error { return nil }, noCert)
	defer c.close()
	_, _, err := c.fetchBundle(t.Context())
	if !errors.Is(err, ErrResponseTooLarge) {
		t.Fatalf("got %v, want ErrResponseTooLarge", err)
	}
}

// TestAuthorityMustPresentAuthorityID: a server whose certificate chains
// to the bundle but carries a service ID is not the authority.
func TestAuthorityMustPresentAuthorityID(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	svc, err := fa.Issuer().NewSVID(webID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := rawTLSConfig(svc).Certificates[0]
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	cfg := Config{AuthorityURL: srv.URL, BundleFile: bundleFile(t, fa), BootstrapToken: "wardbt_x"}
	if _, err := New(t.Context(), cfg); !errors.Is(err, ErrUntrustedAuthority) {
		t.Fatalf("got %v, want ErrUntrustedAuthority", err)
	}
}

func TestFetchAndRenew(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	cfg := sourceConfig(t, fa, webID)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	svid, bundle, err := Fetch(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != webID || !bundle.HasX509Authority(fa.Root().Cert) {
		t.Fatalf("Fetch: %s", svid.ID)
	}
	renewed, bundle2, err := Renew(ctx, Config{AuthorityURL: fa.URL()}, svid, bundle)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.ID != webID || renewed.Certificates[0].SerialNumber.Cmp(svid.Certificates[0].SerialNumber) == 0 {
		t.Fatal("Renew returned the same certificate")
	}
	if !bundle2.HasX509Authority(fa.Root().Cert) {
		t.Fatal("Renew bundle")
	}
	if st := fa.Stats(); st.Issued != 1 || st.Renewed != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Fetch can trust the bundle in Dir.
	dir := t.TempDir()
	if err := WriteDir(dir, svid, bundle); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Fetch(ctx, Config{AuthorityURL: fa.URL(), Dir: dir, BootstrapToken: cfg.BootstrapToken}); err != nil {
		t.Fatalf("Fetch with Dir trust: %v", err)
	}
	// Renew against the wrong bundle fails closed.
	other, _ := fakeauthority.NewRoot(td)
	if _, _, err := Renew(ctx, Config{AuthorityURL: fa.URL()}, svid, x509bundleOf(other)); !errors.Is(err, ErrUntrustedAuthority) {
		t.Fatalf("Renew with a foreign bundle: %v", err)
	}
}

func FuzzParseBundleResponse(f *testing.F) {
	root, err := fakeauthority.NewRoot(td)
	if err != nil {
		f.Fatal(err)
	}
	pemRoot := string(fakeauthority.EncodePEM(root.Cert))
	f.Add([]byte(`{"trust_domain":"ward.test","bundle_pem":` + jsonString(pemRoot) + `,"version":3,"signing_cert_pem":` + jsonString(pemRoot) + `}`))
	f.Add([]byte(`{"trust_domain":"ward.test","bundle_pem":"","version":1}`))
	f.Add([]byte(`{"trust_domain":"WARD.TEST","bundle_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}`))
	f.Add([]byte(`{"trust_domain":"ward.test","version":-1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ab, err := parseBundleResponse(data)
		if err != nil {
			return
		}
		if ab.bundle.Empty() || ab.version < 0 || ab.td.IsZero() {
			t.Fatalf("accepted an invalid bundle response: %+v", ab)
		}
		for _, c := range ab.bundle.X509Authorities() {
			if !c.IsCA {
				t.Fatal("accepted a non-CA root")
			}
		}
	})
}

func FuzzParseSVIDResponse(f *testing.F) {
	root, err := fakeauthority.NewRoot(td)
	if err != nil {
		f.Fatal(err)
	}
	svid, err := root.NewSVID(webID, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	pemSVID := string(fakeauthority.EncodePEM(svid.Certificates...))
	f.Add([]byte(`{"spiffe_id":"spiffe://ward.test/svc/web","svid_pem":` + jsonString(pemSVID) + `,"bundle_pem":` + jsonString(string(fakeauthority.EncodePEM(root.Cert))) + `}`))
	f.Add([]byte(`{"svid_pem":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Any key: the fuzzer only checks that parsing never panics and
		// never accepts a leaf for another key.
		iss, err := parseSVIDResponse(data, svid.PrivateKey)
		if err != nil {
			return
		}
		if !iss.svid.Certificates[0].Equal(svid.Certificates[0]) {
			t.Fatal("accepted a certificate for another key")
		}
	})
}

func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '\n':
			b.WriteString(`\n`)
		case '"':
			b.WriteString(`\"`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
