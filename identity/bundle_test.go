package identity

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

// TestBundleRotationViaWatch adds a second root through a watch event,
// moves issuance to it, then removes the first root: a peer with a
// certificate from the new root is accepted as soon as the root is added,
// a peer from the old root until the root is removed, and the Source's
// own SVID moves to the new root.
func TestBundleRotationViaWatch(t *testing.T) {
	t.Parallel()
	for _, embed := range []bool{false, true} {
		name := "signing cert from GET /v1/bundle"
		if embed {
			name = "signing cert in the events"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testBundleRotation(t, embed)
		})
	}
}

func testBundleRotation(t *testing.T, embedSigningCert bool) {
	fa := startAuthority(t, fakeauthority.Options{SVIDTTL: 4 * time.Second, EmbedSigningCert: embedSigningCert})
	dir := t.TempDir()
	cfg := sourceConfig(t, fa, webID)
	cfg.Dir = dir
	server := newSourceT(t, cfg, fastTuning(), true)
	url := startServer(t, server, AuthorizeID(apiID), echoPeer())
	eventually(t, 5*time.Second, "watch stream", func() bool { return fa.Stats().Watchers == 1 })

	oldRoot := fa.Root()
	newRoot, err := fakeauthority.NewRoot(td)
	if err != nil {
		t.Fatal(err)
	}
	newInter, err := newRoot.NewIntermediate("rotated")
	if err != nil {
		t.Fatal(err)
	}
	oldPeer, err := fa.Issuer().NewSVID(apiID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	newPeer, err := newInter.NewSVID(apiID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	oldClient := httpClient(rawTLSConfig(oldPeer), false)
	newClient := httpClient(rawTLSConfig(newPeer), false)
	if _, _, err := get(newClient, url); err == nil {
		t.Fatal("peer from a root not yet in the bundle accepted")
	}

	fa.PublishBundle(oldRoot.Cert, newRoot.Cert)
	eventually(t, 2*time.Second, "bundle with two roots", func() bool { return len(server.Bundle().X509Authorities()) == 2 })
	if _, _, err := get(newClient, url); err != nil {
		t.Fatalf("peer from the added root refused: %v", err)
	}
	if _, _, err := get(oldClient, url); err != nil {
		t.Fatalf("peer from the old root refused while it is still in the bundle: %v", err)
	}

	// Issuance moves to the new root; the Source renews into it.
	if err := fa.SetIssuer(newInter); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "own SVID under the new root", func() bool {
		return server.SVID().Certificates[1].Equal(newInter.Cert)
	})

	fa.PublishBundle(newRoot.Cert)
	eventually(t, 2*time.Second, "bundle with the new root only", func() bool {
		b := server.Bundle()
		return len(b.X509Authorities()) == 1 && b.HasX509Authority(newRoot.Cert)
	})
	if _, _, err := get(oldClient, url); err == nil {
		t.Fatal("peer from the removed root accepted")
	}
	if _, _, err := get(newClient, url); err != nil {
		t.Fatalf("peer from the new root refused: %v", err)
	}

	// The stream still verifies events: the signing certificate moved too.
	revoked := newPeer.Certificates[0].SerialNumber
	fa.Revoke(revoked)
	eventually(t, 2*time.Second, "revocation after the rotation", func() bool { return server.Revoked(revoked) })

	// The persisted bundle followed.
	_, b, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.X509Authorities()) != 1 || !b.HasX509Authority(newRoot.Cert) {
		t.Error("bundle.pem not updated")
	}
}

func TestBootstrapTrust(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	impostor := startAuthority(t, fakeauthority.Options{})
	// The impostor pads its bundle with the genuine root; its own
	// certificate chains to its own root.
	impostor.PublishBundle(impostor.Root().Cert, fa.Root().Cert)
	impostor.AddToken("wardbt_web", webID)
	fa.AddToken("wardbt_web", webID)

	writePEM := func(data []byte) string {
		p := filepath.Join(t.TempDir(), "roots.pem")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr error
	}{
		{name: "bundle file", cfg: Config{AuthorityURL: fa.URL(), BundleFile: writePEM(fa.BundlePEM())}},
		{name: "fingerprint", cfg: Config{AuthorityURL: fa.URL(), RootFingerprint: fa.RootFingerprint()}},
		{name: "fingerprint with colons and upper case", cfg: Config{AuthorityURL: fa.URL(), RootFingerprint: colons(strings.ToUpper(fa.RootFingerprint()))}},
		{name: "bundle file of another CA", cfg: Config{AuthorityURL: fa.URL(), BundleFile: writePEM(fakeauthority.EncodePEM(impostor.Root().Cert))}, wantErr: ErrUntrustedAuthority},
		{name: "unknown fingerprint", cfg: Config{AuthorityURL: fa.URL(), RootFingerprint: impostor.RootFingerprint()}, wantErr: ErrUntrustedAuthority},
		{name: "impostor padding its bundle with the pinned root", cfg: Config{AuthorityURL: impostor.URL(), RootFingerprint: fa.RootFingerprint()}, wantErr: ErrUntrustedAuthority},
		{name: "impostor with the genuine bundle file", cfg: Config{AuthorityURL: impostor.URL(), BundleFile: writePEM(fa.BundlePEM())}, wantErr: ErrUntrustedAuthority},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.BootstrapToken = "wardbt_web"
			tc.cfg.Logger = testLogger(t)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			src, err := New(ctx, tc.cfg)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if src.ID() != webID {
				t.Fatalf("ID %s", src.ID())
			}
			if !src.Bundle().HasX509Authority(fa.Root().Cert) {
				t.Fatal("bundle lacks the root")
			}
		})
	}
}

func colons(hex string) string {
	var b strings.Builder
	for i := 0; i < len(hex); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(hex[i : i+2])
	}
	return b.String()
}
