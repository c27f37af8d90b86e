package guard

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Cache file names in Config.CacheDir.
const (
	cacheListFile = "accesslist.jws"
	cacheKeysFile = "keys.json"
)

// loadCache installs the cached list if it still verifies: keys against
// the bundle now, the list against the keys and the provider.
func (g *Guard) loadCache() error {
	jws, err := readBounded(filepath.Join(g.cfg.CacheDir, cacheListFile), MaxListSize)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	raw, err := readBounded(filepath.Join(g.cfg.CacheDir, cacheKeysFile), MaxKeySetSize)
	if err != nil {
		return err
	}
	set, err := ParseKeySet(raw, g.cfg.Bundle, g.td, g.now())
	if err != nil {
		return err
	}
	list, err := Verify(jws, set, g.cfg.Provider)
	if err != nil {
		return err
	}
	ks := &keyState{set: set, raw: raw}
	g.keys.Store(ks)
	if err := g.install(list, jws, ks, false); err != nil {
		return err
	}
	g.log.Info("guard: loaded the cached access list", "provider", g.cfg.Provider.String(), "version", list.Version)
	return nil
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("guard: %s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// saveCache writes keys first, then the list, each atomically.
func (g *Guard) saveCache(jws, keys []byte) error {
	if err := os.MkdirAll(g.cfg.CacheDir, 0o700); err != nil {
		return err
	}
	if err := writeAtomic(g.cfg.CacheDir, cacheKeysFile, keys); err != nil {
		return err
	}
	return writeAtomic(g.cfg.CacheDir, cacheListFile, jws)
}

// writeAtomic writes dir/name through a synced temporary file and a
// rename, mode 0600.
func writeAtomic(dir, name string, data []byte) error {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+name+"."+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if werr != nil || serr != nil || cerr != nil {
		os.Remove(tmp)
		return fmt.Errorf("guard: write %s: %v", name, firstErr(werr, serr, cerr))
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
