package identity

import (
	"crypto/tls"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

// TestRotationZeroDowntime runs continuous traffic between two Sources
// whose SVIDs live 3 seconds, over new connections and kept-alive ones,
// for about 8 seconds: every request must succeed while both sides
// rotate their certificates several times.
func TestRotationZeroDowntime(t *testing.T) {
	if testing.Short() {
		t.Skip("8 s rotation test skipped in -short mode")
	}
	fa := startAuthority(t, fakeauthority.Options{SVIDTTL: 3 * time.Second})
	server := newSourceT(t, sourceConfig(t, fa, webID), defaultTuning(), true)
	client := newSourceT(t, sourceConfig(t, fa, apiID), defaultTuning(), true)

	var mu sync.Mutex
	clientSerials := map[string]bool{} // seen by the server on new connections
	serverSerials := map[string]bool{} // seen by the client on new connections
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, _ := PeerIDFromContext(r.Context()); id != apiID {
			http.Error(w, "wrong peer "+id.String(), http.StatusForbidden)
			return
		}
		mu.Lock()
		clientSerials[r.TLS.PeerCertificates[0].SerialNumber.Text(16)] = true
		mu.Unlock()
	})
	url := startServer(t, server, AuthorizeID(apiID), h)

	var requests, failures, reused atomic.Int64
	stop := time.Now().Add(8 * time.Second)
	var wg sync.WaitGroup
	// Two kept-alive clients and one opening a new connection per request;
	// the pauses keep the race-instrumented handshakes from starving the
	// renewals on a 2-core machine.
	for _, keepAlive := range []bool{true, true, false} {
		c := httpClient(client.ClientTLSConfig(AuthorizeID(webID)), keepAlive)
		wg.Go(func() {
			for time.Now().Before(stop) {
				trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
					if i.Reused {
						reused.Add(1)
					}
				}}
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, url, nil)
				resp, err := c.Do(req)
				requests.Add(1)
				if err == nil && resp.StatusCode != http.StatusOK {
					err = &AuthorityError{Status: resp.StatusCode}
				}
				if err != nil {
					failures.Add(1)
					t.Errorf("request failed (keep-alive %v) at %s: %v", keepAlive, time.Now().Format("15:04:05.000"), err)
				} else {
					mu.Lock()
					serverSerials[resp.TLS.PeerCertificates[0].SerialNumber.Text(16)] = true
					mu.Unlock()
				}
				if resp != nil {
					resp.Body.Close()
				}
				if keepAlive {
					time.Sleep(10 * time.Millisecond)
				} else {
					time.Sleep(40 * time.Millisecond) // a full handshake costs far more CPU
				}
			}
		})
	}
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d requests, %d failures, %d on reused connections; %d client and %d server certificates seen",
		requests.Load(), failures.Load(), reused.Load(), len(clientSerials), len(serverSerials))
	if failures.Load() != 0 {
		t.Fatalf("%d of %d requests failed", failures.Load(), requests.Load())
	}
	if reused.Load() == 0 {
		t.Error("no request reused a kept-alive connection")
	}
	// 8 s of traffic cannot be served by fewer than 3 certificates of at
	// most 3 s each (about 5 are used when renewing at half life).
	if len(clientSerials) < 3 || len(serverSerials) < 3 {
		t.Errorf("saw %d client and %d server certificates, want ≥ 3 each (rotation did not happen?)", len(clientSerials), len(serverSerials))
	}
}

// TestGetCertificateSwapsAtomically checks that after a renewal new
// handshakes get the new certificate.
func TestGetCertificateSwapsAtomically(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), false)
	cfg := src.ServerTLSConfig(nil)
	before, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	after, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if before.Leaf.SerialNumber.Cmp(after.Leaf.SerialNumber) == 0 {
		t.Fatal("certificate not swapped after renewal")
	}
	if after.Leaf != src.SVID().Certificates[0] {
		t.Fatal("GetCertificate does not return the current SVID")
	}
	if src.ID() != webID {
		t.Fatalf("ID changed to %s", src.ID())
	}
}
