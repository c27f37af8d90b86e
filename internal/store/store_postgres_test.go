package store_test

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/internal/store/storetest"
)

// postgresDSN returns a DSN for a fresh schema of the WARD_TEST_POSTGRES_DSN
// database (search_path set to it), dropped when the test ends; it skips the
// test when the variable is unset.
func postgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if base == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN not set; e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	schema := "ward_test_" + hex.EncodeToString(func() []byte { b := make([]byte, 6); rand.Read(b); return b }())
	if _, err := admin.ExecContext(t.Context(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	// Registered after the store's Close (t.Cleanup runs last-in first-out).
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema) // pgx sends unknown parameters as runtime parameters
	u.RawQuery = q.Encode()
	return u.String()
}

func openPostgres(t testing.TB, dsn string) *store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return st
}

func TestPostgres(t *testing.T) {
	postgresDSN(t) // skip early when unset
	storetest.Run(t, func(t *testing.T) *store.Store {
		return openPostgres(t, postgresDSN(t))
	})
}

// TestPostgresConcurrentOpen: replicas starting at once each run the
// migrations; the advisory lock makes that safe.
func TestPostgresConcurrentOpen(t *testing.T) {
	dsn := postgresDSN(t)
	const n = 4
	stores := make([]*store.Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = store.Open(t.Context(), dsn) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Open %d: %v", i, errs[i])
			continue
		}
		if stores[i].Backend() != store.BackendPostgres {
			t.Errorf("Backend = %q", stores[i].Backend())
		}
		v, err := stores[i].SchemaVersion(t.Context())
		if err != nil || v < 1 {
			t.Errorf("SchemaVersion = %d, %v", v, err)
		}
		stores[i].Close()
	}
}
