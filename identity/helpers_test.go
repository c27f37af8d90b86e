package identity

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

var (
	td    = spiffeid.RequireTrustDomainFromString("ward.test")
	webID = spiffeid.RequireFromString("spiffe://ward.test/svc/web")
	apiID = spiffeid.RequireFromString("spiffe://ward.test/svc/api")
)

// fastTuning shortens the background loops for tests.
func fastTuning() tuning {
	t := defaultTuning()
	t.backoffMin = 100 * time.Millisecond
	t.backoffMax = 500 * time.Millisecond
	t.signerRefresh = 200 * time.Millisecond
	t.stapleRetry = 200 * time.Millisecond
	t.watchMinInterval = 200 * time.Millisecond
	return t
}

// testLogger logs to t until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(w.stop) // registered first, runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *tWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

func startAuthority(t *testing.T, opts fakeauthority.Options) *fakeauthority.Authority {
	t.Helper()
	fa, err := fakeauthority.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fa.Close)
	return fa
}

// bundleFile writes the authority's bundle to a file.
func bundleFile(t *testing.T, fa *fakeauthority.Authority) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(p, fa.BundlePEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// sourceConfig registers a bootstrap token for id and returns a config
// trusting fa through a bundle file.
func sourceConfig(t *testing.T, fa *fakeauthority.Authority, id spiffeid.ID) Config {
	t.Helper()
	token := "wardbt_" + strings.ReplaceAll(id.Path(), "/", "_")
	fa.AddToken(token, id)
	return Config{
		AuthorityURL:   fa.URL(),
		BootstrapToken: token,
		BundleFile:     bundleFile(t, fa),
		Logger:         testLogger(t),
	}
}

// newSourceT creates a Source; with run, Run is started and stopped at
// cleanup.
func newSourceT(t *testing.T, cfg Config, tune tuning, run bool) *Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := newSource(ctx, cfg, tune)
	if err != nil {
		t.Fatalf("newSource: %v", err)
	}
	t.Cleanup(func() { _ = src.Close() })
	if run {
		errc := make(chan error, 1)
		go func() { errc <- src.Run(context.Background()) }()
		t.Cleanup(func() {
			_ = src.Close()
			if err := <-errc; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	return src
}

// startServer serves h over mTLS with src's ServerTLSConfig and Middleware
// and returns the base URL.
func startServer(t *testing.T, src *Source, authz Authorizer, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           src.Middleware(h),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.Serve(tls.NewListener(ln, src.ServerTLSConfig(authz))) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

// echoPeer answers with the peer ID from the context.
func echoPeer() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := PeerIDFromContext(r.Context())
		if !ok {
			http.Error(w, "no peer", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, id.String())
	})
}

func httpClient(cfg *tls.Config, keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   cfg,
			DisableKeepAlives: !keepAlive,
			ForceAttemptHTTP2: false,
		},
	}
}

// get does one request and returns the body of a 200 answer.
func get(c *http.Client, url string) (string, *http.Response, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", resp, err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), resp, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return string(body), resp, nil
}

// rawTLSConfig is a test peer that does not use the SDK: it presents svid
// (if any) and does not verify the server (which is under test).
func rawTLSConfig(svid *x509svid.SVID) *tls.Config {
	cfg := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test peer
	if svid != nil {
		cert := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
		for _, c := range svid.Certificates {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

// eventually polls cond every 10 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func serialOf(src *Source) string { return src.SVID().Certificates[0].SerialNumber.Text(16) }

func isAuthorityError(err error, status int) bool {
	var ae *AuthorityError
	return errors.As(err, &ae) && ae.Status == status
}

func x509bundleOf(roots ...*fakeauthority.CA) *x509bundle.Bundle {
	b := x509bundle.New(td)
	for _, r := range roots {
		b.AddX509Authority(r.Cert)
	}
	return b
}
