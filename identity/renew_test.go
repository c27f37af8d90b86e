package identity

import (
	"context"
	"errors"
	"math/big"
	"net/http"
	"testing"
	"time"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

// TestAuthorityDownKeepsLastGoodSVID: while renewals fail the Source keeps
// serving its last good SVID and retries with backoff; when the authority
// is back it renews.
func TestAuthorityDownKeepsLastGoodSVID(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{SVIDTTL: 8 * time.Second})
	fa.Fail("renew", http.StatusServiceUnavailable)
	src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), true)
	first := src.SVID()

	eventually(t, 12*time.Second, "three failed renewals", func() bool { return fa.Stats().RenewAttempts >= 3 })
	if src.SVID() != first {
		t.Fatal("SVID replaced although every renewal failed")
	}
	if !time.Now().Before(first.Certificates[0].NotAfter) {
		t.Fatal("test too slow: SVID expired before the authority came back")
	}
	if got := src.ServerTLSConfig(nil); got == nil {
		t.Fatal("no server config")
	}
	cert, err := src.ServerTLSConfig(nil).GetCertificate(nil)
	if err != nil || cert.Leaf != first.Certificates[0] {
		t.Fatalf("GetCertificate while down: %v", err)
	}

	fa.Fail("renew", 0)
	eventually(t, 3*time.Second, "renewal after recovery", func() bool { return src.SVID() != first })
	if got := src.SVID(); !got.Certificates[0].NotAfter.After(first.Certificates[0].NotAfter) || got.ID != webID {
		t.Fatalf("renewed SVID %s expires %s", got.ID, got.Certificates[0].NotAfter)
	}
	if n := fa.Stats().Issued; n != 1 {
		t.Errorf("bootstrap token used %d times, want 1 (renewal should use mTLS)", n)
	}
}

// TestTokenFallback covers the two ways back to the bootstrap token: the
// SVID expired while the authority could not renew it, and the authority
// refused the renewal.
func TestTokenFallback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		ttl        time.Duration
		renewFails int
	}{
		{name: "expired while renewals failed", ttl: 2 * time.Second, renewFails: http.StatusServiceUnavailable},
		{name: "renewal refused", ttl: 2 * time.Second, renewFails: http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fa := startAuthority(t, fakeauthority.Options{SVIDTTL: tc.ttl})
			fa.Fail("renew", tc.renewFails)
			src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), true)
			first := src.SVID()
			eventually(t, 5*time.Second, "a new SVID from the bootstrap token", func() bool { return fa.Stats().Issued >= 2 })
			eventually(t, time.Second, "the new SVID installed", func() bool { return src.SVID() != first })
			if src.ID() != webID {
				t.Fatalf("ID %s", src.ID())
			}
		})
	}
}

// TestRenewalWithoutTokenFailsClosed: with no token and a refused renewal
// the Source keeps its SVID and keeps trying; it never invents one.
func TestRenewalWithoutTokenFailsClosed(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{SVIDTTL: 2 * time.Second})
	cfg := sourceConfig(t, fa, webID)
	src := newSourceT(t, cfg, fastTuning(), false)
	src.cfg.BootstrapToken = "" // as if started from disk without a token
	fa.Fail("renew", http.StatusForbidden)
	first := src.SVID()
	err := src.rotate(t.Context())
	if !isAuthorityError(err, http.StatusForbidden) {
		t.Fatalf("rotate: %v, want AuthorityError 403", err)
	}
	if src.SVID() != first {
		t.Fatal("SVID replaced")
	}
}

// TestOwnRevocationTriggersRenewal: when the watch stream revokes the
// Source's own certificate it obtains a new one at once (here with the
// token, since the revoked certificate cannot authenticate a renewal).
func TestOwnRevocationTriggersRenewal(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), true)
	eventually(t, 5*time.Second, "watch stream", func() bool { return fa.Stats().Watchers == 1 })
	first := src.SVID()
	fa.Revoke(first.Certificates[0].SerialNumber)
	eventually(t, 5*time.Second, "replacement SVID", func() bool { return src.SVID() != first })
	if src.Revoked(src.SVID().Certificates[0].SerialNumber) {
		t.Fatal("replacement is revoked")
	}
}

func TestRunLifecycle(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), false)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx) }()
	eventually(t, 5*time.Second, "Run started", func() bool {
		src.lifeMu.Lock()
		defer src.lifeMu.Unlock()
		return src.runDone != nil
	})
	if err := src.Run(ctx); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second Run: %v, want ErrAlreadyRunning", err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := src.Run(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
	if src.SVID() == nil || src.ID() != webID {
		t.Error("SVID not readable after Close")
	}
}

// TestSigningKeyRotation: events signed with a new control-plane key are
// accepted after the Source re-fetches the signing certificate.
func TestSigningKeyRotation(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), true)
	eventually(t, 5*time.Second, "watch stream", func() bool { return fa.Stats().Watchers == 1 })
	if err := fa.RotateSigningKey(); err != nil {
		t.Fatal(err)
	}
	serial := big.NewInt(4242)
	fa.Revoke(serial)
	eventually(t, 5*time.Second, "revocation signed with the new key", func() bool { return src.Revoked(serial) })
}
