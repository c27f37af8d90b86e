package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptrace"
	"testing"
	"time"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

// TestRevocationRefusesNewAndKeptAliveConnections: a revocation pushed on
// the watch stream makes the server refuse new handshakes from the revoked
// client within a second, and Middleware refuses the next request on a
// connection that was established before the revocation.
func TestRevocationRefusesNewAndKeptAliveConnections(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	server := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), true)
	client := newSourceT(t, sourceConfig(t, fa, apiID), fastTuning(), true)
	url := startServer(t, server, AuthorizeID(apiID), echoPeer())
	eventually(t, 5*time.Second, "both watch streams", func() bool { return fa.Stats().Watchers == 2 })

	keep := httpClient(client.ClientTLSConfig(AuthorizeID(webID)), true)
	fresh := httpClient(client.ClientTLSConfig(AuthorizeID(webID)), false)
	if body, _, err := get(keep, url); err != nil || body != apiID.String() {
		t.Fatalf("before revocation: %q, %v", body, err)
	}
	if _, _, err := get(fresh, url); err != nil {
		t.Fatalf("before revocation, new connection: %v", err)
	}

	revokedSerial := client.SVID().Certificates[0].SerialNumber
	start := time.Now()
	fa.RevokeID(apiID) // certificates and bootstrap tokens, like revoking a service
	for {
		_, _, err := get(fresh, url)
		if err != nil {
			t.Logf("new handshake refused after %s: %v", time.Since(start), err)
			break
		}
		if time.Since(start) > time.Second {
			t.Fatal("new handshakes from the revoked client still accepted after 1 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !server.Revoked(revokedSerial) {
		t.Fatal("server does not report the serial as revoked")
	}

	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, url, nil)
	resp, err := keep.Do(req)
	if err != nil {
		t.Fatalf("kept-alive request: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !reused {
		t.Fatal("request did not reuse the kept-alive connection; test is void")
	}
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("kept-alive request after revocation: status %d, want 403", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q", ct)
	}
	var p problemDoc
	if err := json.Unmarshal(body, &p); err != nil || p.Type != "https://ward.dev/problems/revoked" || p.Status != 403 {
		t.Errorf("problem body %s (%v)", body, err)
	}
}

// TestWatchIgnoresForgedAndRolledBackEvents injects lines signed with a
// foreign key, tampered lines and validly signed but old lines; none may
// change the revoked set or the bundle, and the stream keeps working.
func TestWatchIgnoresForgedAndRolledBackEvents(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), true)

	marker := func() *big.Int { return big.NewInt(time.Now().UnixNano()) }
	m0 := marker()
	fa.Revoke(m0)
	eventually(t, 5*time.Second, "first revocation", func() bool { return src.Revoked(m0) })
	version := fa.Version()

	_, foreign, _ := ed25519.GenerateKey(rand.Reader)
	evil, err := fakeauthority.NewRoot(td)
	if err != nil {
		t.Fatal(err)
	}
	victim := big.NewInt(0xbad1)
	rolled := big.NewInt(0xbad2)
	revocation := func(serial *big.Int, v int64) []byte {
		p, _ := json.Marshal(map[string]any{"serials": []string{serial.Text(16)}, "reason": "x", "at": "2026-01-01T00:00:00Z", "version": v})
		return p
	}
	bundleEvent := func(v, bv int64) []byte {
		p, _ := json.Marshal(map[string]any{"bundle_pem": string(fakeauthority.EncodePEM(evil.Cert)), "bundle_version": bv, "version": v})
		return p
	}
	// A genuine signature over another payload.
	tampered, _ := json.Marshal(map[string]any{
		"seq": version + 1, "kind": "revocation", "payload": revocation(big.NewInt(1), version+1),
		"sig": ed25519.Sign(fa.SigningKey(), revocation(big.NewInt(2), version+1)),
	})
	lines := [][]byte{
		fakeauthority.SignLine(foreign, version+1, "revocation", revocation(victim, version+1)),
		fakeauthority.SignLine(foreign, version+1, "bundle", bundleEvent(version+1, 99)),
		fakeauthority.SignLine(foreign, version+1, "snapshot", []byte(`{"version":99,"revoked_serials":[]}`)),
		append(tampered, '\n'),
		fakeauthority.SignLine(fa.SigningKey(), version, "revocation", revocation(rolled, version)),        // replayed version
		fakeauthority.SignLine(fa.SigningKey(), 1, "bundle", bundleEvent(1, 99)),                           // old version
		fakeauthority.SignLine(fa.SigningKey(), 0, "snapshot", []byte(`{"version":0,"bundle_version":1}`)), // rollback of the snapshot
		[]byte("not json\n"),
		[]byte(`{"seq":5,"kind":"revocation","payload":"e30=","sig":"short"}` + "\n"),
	}
	for _, l := range lines {
		fa.Inject(l)
	}
	m1 := marker()
	fa.Revoke(m1) // lines are processed in order: once m1 is applied, all above were seen
	eventually(t, 5*time.Second, "revocation after the forged lines", func() bool { return src.Revoked(m1) })

	for _, s := range []*big.Int{victim, rolled, big.NewInt(1)} {
		if src.Revoked(s) {
			t.Errorf("serial %s revoked by a forged or replayed event", s.Text(16))
		}
	}
	if !src.Revoked(m0) {
		t.Error("rolled-back snapshot cleared the revoked set")
	}
	if b := src.Bundle(); len(b.X509Authorities()) != 1 || !b.HasX509Authority(fa.Root().Cert) {
		t.Error("bundle changed by a forged or replayed event")
	}
}
