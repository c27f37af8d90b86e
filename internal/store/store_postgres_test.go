package store_test

import (
	"sync"
	"testing"

	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/internal/store/storetest"
)

// postgresDSN returns a DSN for a fresh, self-dropping schema, or skips.
func postgresDSN(t testing.TB) string { return storetest.PostgresDSN(t) }

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
