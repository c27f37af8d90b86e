package store

import (
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestRebind(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"none", `SELECT 1`, `SELECT 1`},
		{"several", `UPDATE t SET a = ?, b = ? WHERE c = ?`, `UPDATE t SET a = $1, b = $2 WHERE c = $3`},
		{"string literal", `SELECT '?', ? FROM t WHERE x = 'it''s ?'`, `SELECT '?', $1 FROM t WHERE x = 'it''s ?'`},
		{"quoted identifier", `SELECT "a?b" FROM t WHERE c = ?`, `SELECT "a?b" FROM t WHERE c = $1`},
		{"ten and more", `VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, `VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rebind(tt.in); got != tt.want {
				t.Errorf("rebind(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestIsPostgresDSN(t *testing.T) {
	tests := []struct {
		dsn  string
		want bool
	}{
		{"postgres://u@h/db", true},
		{"postgresql://u@h/db?sslmode=disable", true},
		{"POSTGRES://u@h/db", true},
		{"ward.db", false},
		{"sqlite://ward.db", false},
		{"file:ward.db", false},
		{"postgres.db", false},
	}
	for _, tt := range tests {
		if got := isPostgresDSN(tt.dsn); got != tt.want {
			t.Errorf("isPostgresDSN(%q) = %v, want %v", tt.dsn, got, tt.want)
		}
	}
}

func TestParseSQLiteDSN(t *testing.T) {
	tests := []struct {
		name    string
		dsn     string
		uri     bool
		path    string
		memory  bool
		wantErr bool
	}{
		{name: "relative path", dsn: "ward-data/ward.db", path: "ward-data/ward.db"},
		{name: "absolute path", dsn: "/var/lib/ward/ward.db", path: "/var/lib/ward/ward.db"},
		{name: "sqlite scheme", dsn: "sqlite:///var/lib/ward.db", path: "/var/lib/ward.db"},
		{name: "sqlite scheme relative", dsn: "sqlite://ward.db", path: "ward.db"},
		{name: "file URI", dsn: "file:ward.db?cache=private", uri: true, path: "ward.db"},
		{name: "memory", dsn: ":memory:", path: ":memory:", memory: true},
		{name: "memory URI", dsn: "file:x?mode=memory", uri: true, path: "x", memory: true},
		{name: "empty", dsn: "", wantErr: true},
		{name: "scheme only", dsn: "sqlite://", wantErr: true},
		{name: "bad query", dsn: "ward.db?%zz", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSQLiteDSN(tt.dsn)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseSQLiteDSN(%q) = %+v, want error", tt.dsn, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.uri != tt.uri || got.path != tt.path || got.memory() != tt.memory {
				t.Errorf("parseSQLiteDSN(%q) = %+v (memory %v)", tt.dsn, got, got.memory())
			}
		})
	}
}

// TestSQLitePragmas checks every connection of both pools is configured.
func TestSQLitePragmas(t *testing.T) {
	ctx := t.Context()
	st, err := Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pools := []struct {
		name      string
		db        *sql.DB
		queryOnly string
	}{
		{"writer", st.wdb, "0"},
		{"reader", st.rdb, "1"},
	}
	for _, p := range pools {
		t.Run(p.name, func(t *testing.T) {
			checks := []struct {
				pragma string
				want   string
			}{
				{"journal_mode", "wal"},
				{"busy_timeout", "5000"},
				{"foreign_keys", "1"},
				{"synchronous", "1"}, // NORMAL
				{"query_only", p.queryOnly},
			}
			for _, c := range checks {
				var got string
				if err := p.db.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(&got); err != nil {
					t.Fatal(err)
				}
				if got != c.want {
					t.Errorf("PRAGMA %s = %q, want %q", c.pragma, got, c.want)
				}
			}
		})
	}
	if _, err := st.rdb.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('k', x'00')`); err == nil {
		t.Error("reader pool accepted a write")
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "ward.db")
	ms, err := loadMigrations(BackendSQLite)
	if err != nil {
		t.Fatal(err)
	}
	pg, err := loadMigrations(BackendPostgres)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || len(ms) != len(pg) {
		t.Fatalf("%d sqlite and %d postgres migrations; every migration needs both", len(ms), len(pg))
	}
	for i := range ms {
		if ms[i].version != pg[i].version || ms[i].name != pg[i].name {
			t.Errorf("migration %d: sqlite %s, postgres %s", i, ms[i].name, pg[i].name)
		}
	}

	for range 3 {
		st, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := st.rdb.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != len(ms) {
			t.Errorf("schema_migrations has %d rows, want %d", n, len(ms))
		}
		st.Close()
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "ward.db")
	st, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.wdb.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future', 0)`); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if st, err := Open(ctx, path); err == nil {
		st.Close()
		t.Fatal("Open accepted a database from a newer ward")
	}
}

func TestWrap(t *testing.T) {
	if err := wrap(nil, "op", "x"); err != nil {
		t.Errorf("wrap(nil) = %v", err)
	}
	other := errors.New("boom")
	if err := wrap(other, "op", "x"); !errors.Is(err, other) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
		t.Errorf("wrap(other) = %v", err)
	}
}

func TestDriverDSN(t *testing.T) {
	tests := []struct {
		name        string
		dsn         string
		has, hasNot []string
		extraTxLock bool
	}{
		{name: "defaults", dsn: "ward.db",
			has: []string{"ward.db?", "busy_timeout%285000%29", "journal_mode%28WAL%29", "foreign_keys%281%29", "synchronous%28NORMAL%29"}},
		{name: "caller pragma wins", dsn: "ward.db?_pragma=synchronous(FULL)",
			has: []string{"synchronous%28FULL%29"}, hasNot: []string{"synchronous%28NORMAL%29"}},
		{name: "file URI keeps its prefix and query", dsn: "file:ward.db?cache=private",
			has: []string{"file:ward.db?", "cache=private"}},
		{name: "txlock", dsn: "ward.db", extraTxLock: true, has: []string{"_txlock=immediate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tgt, err := parseSQLiteDSN(tt.dsn)
			if err != nil {
				t.Fatal(err)
			}
			var extra map[string]string
			if tt.extraTxLock {
				extra = map[string]string{"_txlock": "immediate"}
			}
			got := tgt.driverDSN(extra)
			for _, s := range tt.has {
				if !strings.Contains(got, s) {
					t.Errorf("driverDSN = %q, missing %q", got, s)
				}
			}
			for _, s := range tt.hasNot {
				if strings.Contains(got, s) {
					t.Errorf("driverDSN = %q, has %q", got, s)
				}
			}
		})
	}
}
