package identity

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

func TestPeerIDAndMiddleware(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), false)
	peer, err := fa.Issuer().NewSVID(apiID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	revokedPeer, err := fa.Issuer().NewSVID(apiID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	src.revoked.Store(&revokedSet{revokedPeer.Certificates[0].SerialNumber.Text(16): {}})
	notSVID := &x509.Certificate{SerialNumber: peer.Certificates[0].SerialNumber} // no URI SAN

	h := src.Middleware(echoPeer())
	tests := []struct {
		name     string
		tls      *tls.ConnectionState
		status   int
		problem  string
		sentinel error
	}{
		{name: "valid peer", tls: &tls.ConnectionState{PeerCertificates: peer.Certificates}, status: 200},
		{name: "plain http", tls: nil, status: 401, problem: "https://ward.dev/problems/unauthenticated", sentinel: ErrNoPeerCertificate},
		{name: "no client cert", tls: &tls.ConnectionState{}, status: 401, problem: "https://ward.dev/problems/unauthenticated", sentinel: ErrNoPeerCertificate},
		{name: "revoked leaf", tls: &tls.ConnectionState{PeerCertificates: revokedPeer.Certificates}, status: 403, problem: "https://ward.dev/problems/revoked", sentinel: ErrRevoked},
		{name: "not an SVID", tls: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{notSVID}}, status: 403, problem: "https://ward.dev/problems/forbidden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := src.PeerID(tc.tls)
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Fatalf("PeerID: %v, want %v", err, tc.sentinel)
			}
			if tc.status == 200 && (err != nil || id != apiID) {
				t.Fatalf("PeerID: %s, %v", id, err)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.TLS = tc.tls
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d", w.Code, tc.status)
			}
			if tc.status == 200 {
				if w.Body.String() != apiID.String() {
					t.Fatalf("body %q", w.Body.String())
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			var p problemDoc
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatalf("body is not JSON: %v: %s", err, w.Body.String())
			}
			if p.Type != tc.problem || p.Status != tc.status || p.Title == "" {
				t.Fatalf("problem %+v", p)
			}
		})
	}
	// A revoked intermediate revokes every leaf under it.
	src.revoked.Store(&revokedSet{peer.Certificates[1].SerialNumber.Text(16): {}})
	if _, err := src.PeerID(&tls.ConnectionState{PeerCertificates: peer.Certificates}); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked intermediate: %v", err)
	}
}

// TestOCSPStaple: the server certificate carries a stapled OCSP response
// from the authority that a client can check.
func TestOCSPStaple(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{OCSPValidity: 2 * time.Second})
	server := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), true)
	eventually(t, 5*time.Second, "staple attached", func() bool { return len(server.currentCert().OCSPStaple) > 0 })
	url := startServer(t, server, AuthorizeAny(), echoPeer())

	peer, err := fa.Issuer().NewSVID(apiID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient(rawTLSConfig(peer), false).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	staple := resp.TLS.OCSPResponse
	if len(staple) == 0 {
		t.Fatal("no stapled OCSP response")
	}
	leaf := resp.TLS.PeerCertificates[0]
	parsed, err := ocsp.ParseResponseForCert(staple, leaf, resp.TLS.PeerCertificates[1])
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Status != ocsp.Good {
		t.Fatalf("status %d", parsed.Status)
	}
	// Refreshed at half of its 2 s validity (the fake backdates ThisUpdate
	// by a minute, so "half" is already past: refreshes come quickly).
	before := fa.Stats().OCSP
	eventually(t, 3*time.Second, "staple refresh", func() bool { return fa.Stats().OCSP > before })
}

func BenchmarkVerifyPeer(b *testing.B) {
	fa, err := fakeauthority.Start(fakeauthority.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer fa.Close()
	peer, err := fa.Issuer().NewSVID(apiID, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	src := &Source{now: time.Now}
	src.trust.Store(&trustState{bundle: x509bundleOf(fa.Root())})
	set := revokedSet{}
	for i := range 10000 {
		set[fmt.Sprintf("%x", 1_000_000+i)] = struct{}{}
	}
	src.revoked.Store(&set)
	cs := tls.ConnectionState{PeerCertificates: peer.Certificates}
	authz := AuthorizeID(apiID)

	// Baseline: the chain verification alone, as crypto/tls would do it
	// with static pools.
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(fa.Root().Cert)
	inters.AddCert(peer.Certificates[1])
	b.Run("baseline x509 Verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := peer.Certificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("handshake verification", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := src.verifyPeer(cs, authz); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PeerID per request", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := src.PeerID(&cs); err != nil {
				b.Fatal(err)
			}
		}
	})
}
