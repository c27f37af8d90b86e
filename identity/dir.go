package identity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// File names in an identity directory.
const (
	svidFileName   = "svid.pem"   // leaf then intermediates, PEM
	keyFileName    = "svid.key"   // PKCS#8 PEM, mode 0600
	bundleFileName = "bundle.pem" // trust bundle roots, PEM
)

// WriteDir writes svid.pem (leaf and intermediates), svid.key (PKCS#8
// PEM, mode 0600) and bundle.pem into dir, creating dir with mode 0700 if
// needed. Each file is replaced atomically (temporary file, fsync,
// rename), so a reader sees either the old or the new file, never a torn
// one; the key is written first.
func WriteDir(dir string, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	if svid == nil || bundle == nil {
		return errors.New("identity: WriteDir needs an SVID and a bundle")
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("identity: encode SVID: %w", err)
	}
	bundlePEM, err := bundle.Marshal()
	if err != nil {
		return fmt.Errorf("identity: encode bundle: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("identity: create directory: %w", err)
	}
	if err := writeFileAtomic(dir, keyFileName, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(dir, svidFileName, certPEM, 0o644); err != nil {
		return err
	}
	if err := writeFileAtomic(dir, bundleFileName, bundlePEM, 0o644); err != nil {
		return err
	}
	return syncDir(dir)
}

// writeBundleFile replaces bundle.pem in dir.
func writeBundleFile(dir string, bundle *x509bundle.Bundle) error {
	data, err := bundle.Marshal()
	if err != nil {
		return fmt.Errorf("identity: encode bundle: %w", err)
	}
	if err := writeFileAtomic(dir, bundleFileName, data, 0o644); err != nil {
		return err
	}
	return syncDir(dir)
}

// LoadDir reads an identity directory written by WriteDir. The bundle is
// read for the trust domain of the SVID. It checks that the key matches
// the leaf and that the files are well formed; it does not check validity
// periods or that the SVID chains to the bundle (New does both). Missing
// files yield an error that matches fs.ErrNotExist.
func LoadDir(dir string) (*x509svid.SVID, *x509bundle.Bundle, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, svidFileName))
	if err != nil {
		return nil, nil, fmt.Errorf("identity: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFileName))
	if err != nil {
		return nil, nil, fmt.Errorf("identity: %w", err)
	}
	bundlePEM, err := os.ReadFile(filepath.Join(dir, bundleFileName))
	if err != nil {
		return nil, nil, fmt.Errorf("identity: %w", err)
	}
	svid, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: %s: %w", svidFileName, err)
	}
	bundle, err := parseBundlePEM(svid.ID.TrustDomain(), bundlePEM)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: %s: %w", bundleFileName, err)
	}
	return svid, bundle, nil
}

func writeFileAtomic(dir, name string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("identity: write %s: %w", name, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("identity: write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("identity: write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("identity: write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("identity: write %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		_ = os.Remove(tmp)
		ok = true
		return fmt.Errorf("identity: write %s: %w", name, err)
	}
	ok = true
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("identity: sync %s: %w", dir, err)
	}
	defer d.Close()
	// Some file systems do not support fsync on directories; the rename
	// is still atomic there.
	_ = d.Sync()
	return nil
}
