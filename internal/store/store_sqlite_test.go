package store_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/internal/store/storetest"
)

func openSQLite(t testing.TB, dsn string) *store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open(%q): %v", dsn, err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return st
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.Store {
		return openSQLite(t, filepath.Join(t.TempDir(), "ward.db"))
	})
}

func TestSQLiteMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.Store {
		return openSQLite(t, ":memory:")
	})
}

func TestSQLiteDSNForms(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		dsn  string
		file string // the database file the DSN names
	}{
		{"plain path", filepath.Join(dir, "a.db"), filepath.Join(dir, "a.db")},
		{"sqlite scheme", "sqlite://" + filepath.Join(dir, "b.db"), filepath.Join(dir, "b.db")},
		{"file URI", "file:" + filepath.Join(dir, "c.db") + "?cache=private", filepath.Join(dir, "c.db")},
		{"missing directory", filepath.Join(dir, "new", "sub", "d.db"), filepath.Join(dir, "new", "sub", "d.db")},
		{"own pragma wins", filepath.Join(dir, "e.db") + "?_pragma=synchronous(FULL)", filepath.Join(dir, "e.db")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := openSQLite(t, tt.dsn)
			if err := st.PutMeta(t.Context(), "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("database file mode = %v, want 0600", fi.Mode().Perm())
			}
		})
	}
}

func TestSQLiteBadDSN(t *testing.T) {
	for _, dsn := range []string{"", "sqlite://", "file:?mode=rwc"} {
		if st, err := store.Open(t.Context(), dsn); err == nil {
			st.Close()
			t.Errorf("Open(%q) succeeded", dsn)
		}
	}
}

// TestSQLiteReopen: migrations apply once, data survives, a second process
// (here a second Store) can open the same file at once.
func TestSQLiteReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ward.db")
	ctx := t.Context()
	a := openSQLite(t, path)
	if err := a.PutMeta(ctx, "trust_domain", []byte("ward.test")); err != nil {
		t.Fatal(err)
	}
	b := openSQLite(t, path)
	got, err := b.GetMeta(ctx, "trust_domain")
	if err != nil || string(got) != "ward.test" {
		t.Fatalf("second store reads %q, %v", got, err)
	}
	if err := b.PutMeta(ctx, "x", []byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetMeta(ctx, "x"); err != nil {
		t.Fatalf("first store does not see the second's write: %v", err)
	}
	va, _ := a.SchemaVersion(ctx)
	vb, _ := b.SchemaVersion(ctx)
	if va != vb || va < 1 {
		t.Errorf("schema versions %d, %d", va, vb)
	}
}

// TestSQLiteConcurrentOpen: processes starting at once on a new file each
// run the migrations; BEGIN IMMEDIATE and busy_timeout make that safe.
func TestSQLiteConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ward.db")
	const n = 4
	stores := make([]*store.Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = store.Open(t.Context(), path) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Open %d: %v", i, errs[i])
			continue
		}
		if err := stores[i].PutMeta(t.Context(), "k", []byte{byte(i)}); err != nil {
			t.Errorf("PutMeta via store %d: %v", i, err)
		}
		stores[i].Close()
	}
}
