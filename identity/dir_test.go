package identity

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

func TestDirPersistence(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	dir := filepath.Join(t.TempDir(), "id")
	cfg := sourceConfig(t, fa, webID)
	cfg.Dir = dir

	first := newSourceT(t, cfg, fastTuning(), false)
	for name, mode := range map[string]os.FileMode{svidFileName: 0o644, keyFileName: 0o600, bundleFileName: 0o644} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", name, st.Mode().Perm(), mode)
		}
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", st.Mode().Perm())
	}
	if err := first.rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	_ = first.Close()

	// Restart without a token: the SVID on disk is used, no issuance.
	issued := fa.Stats().Issued
	cfg2 := cfg
	cfg2.BootstrapToken = ""
	cfg2.BundleFile = ""
	second := newSourceT(t, cfg2, fastTuning(), false)
	if serialOf(second) != serialOf(first) {
		t.Fatalf("loaded serial %s, want the renewed %s", serialOf(second), serialOf(first))
	}
	if fa.Stats().Issued != issued {
		t.Fatal("bootstrap token used although a valid SVID was on disk")
	}

	// A tampered bundle (the SVID no longer chains to it) is not used;
	// with a token the Source bootstraps again through BundleFile.
	other, err := fakeauthority.NewRoot(td)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, bundleFileName), fakeauthority.EncodePEM(other.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	third := newSourceT(t, cfg, fastTuning(), false)
	if serialOf(third) == serialOf(first) {
		t.Fatal("SVID used although it does not chain to the bundle on disk")
	}
	if fa.Stats().Issued != issued+1 {
		t.Fatal("no new issuance")
	}
	// Without a token that is an error.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := os.WriteFile(filepath.Join(dir, bundleFileName), fakeauthority.EncodePEM(other.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, cfg2); !errors.Is(err, ErrNoSVID) {
		t.Fatalf("got %v, want ErrNoSVID", err)
	}
}

func TestWriteLoadDir(t *testing.T) {
	t.Parallel()
	root, err := fakeauthority.NewRoot(td)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("x")
	if err != nil {
		t.Fatal(err)
	}
	svid, err := inter.NewSVID(webID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bundle := x509bundleOf(root)
	dir := t.TempDir()
	if err := WriteDir(dir, svid, bundle); err != nil {
		t.Fatal(err)
	}
	// Rewriting replaces atomically and leaves no temporary files.
	if err := WriteDir(dir, svid, bundle); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("%d files in dir, want 3", len(entries))
	}
	gotSVID, gotBundle, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if gotSVID.ID != webID || len(gotSVID.Certificates) != 2 || !gotSVID.Certificates[1].Equal(inter.Cert) {
		t.Fatal("SVID did not round-trip")
	}
	if !gotBundle.Equal(bundle) {
		t.Fatal("bundle did not round-trip")
	}

	tests := []struct {
		name   string
		mutate func(t *testing.T, dir string)
		is     error
	}{
		{name: "missing key", mutate: func(t *testing.T, dir string) { _ = os.Remove(filepath.Join(dir, keyFileName)) }, is: fs.ErrNotExist},
		{name: "missing bundle", mutate: func(t *testing.T, dir string) { _ = os.Remove(filepath.Join(dir, bundleFileName)) }, is: fs.ErrNotExist},
		{name: "key of another SVID", mutate: func(t *testing.T, dir string) {
			other, _ := inter.NewSVID(webID, time.Hour)
			_, key, _ := other.Marshal()
			_ = os.WriteFile(filepath.Join(dir, keyFileName), key, 0o600)
		}},
		{name: "garbage bundle", mutate: func(t *testing.T, dir string) {
			_ = os.WriteFile(filepath.Join(dir, bundleFileName), []byte("junk"), 0o644)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			if err := WriteDir(d, svid, bundle); err != nil {
				t.Fatal(err)
			}
			tc.mutate(t, d)
			_, _, err := LoadDir(d)
			if err == nil {
				t.Fatal("loaded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("got %v, want %v", err, tc.is)
			}
		})
	}
}
