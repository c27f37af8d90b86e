package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"               // also registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

// Backend names returned by Store.Backend.
const (
	BackendSQLite   = "sqlite"
	BackendPostgres = "postgres"
)

// Store is ward's database. It is safe for concurrent use.
type Store struct {
	backend string
	// rdb serves reads. wdb serves writes. For PostgreSQL, and for an
	// in-memory SQLite database, they are the same pool. For a SQLite file,
	// wdb holds a single connection: SQLite serializes writers anyway, and
	// queueing them in Go is much faster than letting them collide on the
	// file lock and back off in busy_timeout sleeps.
	rdb, wdb *sql.DB

	insertCert *sql.Stmt // the hot path, prepared once
}

// sqlitePragmas run on every SQLite connection (busy_timeout first; the
// driver sorts the rest).
var sqlitePragmas = []string{
	"busy_timeout(5000)",
	"foreign_keys(1)",
	"journal_mode(WAL)",
	"synchronous(NORMAL)",
}

// Open connects to the database named by dsn and brings its schema up to
// date. A dsn starting with "postgres://" or "postgresql://" selects
// PostgreSQL (pgx); anything else is a SQLite database file, optionally
// prefixed with "sqlite://" or given as a "file:" URI. A SQLite file is
// created with mode 0600 (it holds sealed keys and token hashes), and its
// directory with 0700 if missing. ":memory:" (or a "file:" URI with
// mode=memory) gives a private in-memory database on a single connection,
// for tests.
func Open(ctx context.Context, dsn string) (*Store, error) {
	var (
		s   *Store
		err error
	)
	if isPostgresDSN(dsn) {
		s, err = openPostgres(ctx, dsn)
	} else {
		s, err = openSQLite(ctx, dsn)
	}
	if err != nil {
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.insertCert, err = s.wdb.PrepareContext(ctx, s.q(insertCertificateSQL))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("store: prepare: %w", err)
	}
	return s, nil
}

func isPostgresDSN(dsn string) bool {
	l := strings.ToLower(dsn)
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

func openPostgres(ctx context.Context, dsn string) (*Store, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	return &Store{backend: BackendPostgres, rdb: db, wdb: db}, nil
}

// sqliteTarget is a parsed SQLite DSN.
type sqliteTarget struct {
	uri   bool   // given as a "file:" URI; the query stays part of it
	path  string // file path, or ":memory:"-like name
	query url.Values
}

func parseSQLiteDSN(dsn string) (sqliteTarget, error) {
	var t sqliteTarget
	rest := strings.TrimPrefix(dsn, "sqlite://")
	if strings.HasPrefix(rest, "file:") {
		t.uri = true
		rest = strings.TrimPrefix(rest, "file:")
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		q, err := url.ParseQuery(rest[i+1:])
		if err != nil {
			return t, fmt.Errorf("store: sqlite dsn query: %w", err)
		}
		t.query = q
		rest = rest[:i]
	}
	if rest == "" {
		return t, errors.New("store: sqlite dsn names no file")
	}
	t.path = rest
	if t.query == nil {
		t.query = url.Values{}
	}
	return t, nil
}

// memory reports whether the database lives in memory: then every
// connection would see its own database, so the store uses just one.
func (t sqliteTarget) memory() bool {
	return t.path == ":memory:" || strings.HasPrefix(t.path, ":memory:") || t.query.Get("mode") == "memory"
}

// driverDSN renders the DSN for modernc.org/sqlite with ward's pragmas added
// (a pragma the caller set in the DSN wins) and extra parameters.
func (t sqliteTarget) driverDSN(extra map[string]string) string {
	q := url.Values{}
	for k, v := range t.query {
		q[k] = append([]string(nil), v...)
	}
	have := map[string]bool{}
	for _, p := range q["_pragma"] {
		have[pragmaName(p)] = true
	}
	for _, p := range sqlitePragmas {
		if !have[pragmaName(p)] {
			q.Add("_pragma", p)
		}
	}
	for k, v := range extra {
		q.Set(k, v)
	}
	prefix := ""
	if t.uri {
		prefix = "file:"
	}
	return prefix + t.path + "?" + q.Encode()
}

func pragmaName(p string) string {
	p = strings.ToLower(strings.TrimSpace(p))
	if i := strings.IndexAny(p, "(= "); i >= 0 {
		p = p[:i]
	}
	return p
}

func openSQLite(ctx context.Context, dsn string) (*Store, error) {
	t, err := parseSQLiteDSN(dsn)
	if err != nil {
		return nil, err
	}
	if !t.memory() {
		if err := createPrivateFile(t.path); err != nil {
			return nil, err
		}
	}

	// Writes: one connection; BEGIN IMMEDIATE so a transaction takes the
	// write lock up front (waiting in busy_timeout if another process holds
	// it) instead of failing on upgrade.
	wdb, err := sql.Open("sqlite", t.driverDSN(map[string]string{"_txlock": "immediate"}))
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	if err := pingSQLite(ctx, wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store: sqlite %s: %w", t.path, err)
	}
	s := &Store{backend: BackendSQLite, rdb: wdb, wdb: wdb}
	if t.memory() {
		return s, nil
	}

	// Reads: a pool of query-only connections; WAL lets them run alongside
	// the writer.
	n := max(4, runtime.GOMAXPROCS(0))
	rdb, err := sql.Open("sqlite", t.driverDSN(map[string]string{"_query_only": "1"}))
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	rdb.SetMaxOpenConns(n)
	rdb.SetMaxIdleConns(n)
	rdb.SetConnMaxIdleTime(5 * time.Minute)
	if err := pingSQLite(ctx, rdb); err != nil {
		rdb.Close()
		wdb.Close()
		return nil, fmt.Errorf("store: sqlite %s: %w", t.path, err)
	}
	s.rdb = rdb
	return s, nil
}

// pingSQLite opens a first connection. Converting a new file to WAL takes
// an exclusive lock, and SQLite reports SQLITE_BUSY at once rather than
// waiting in busy_timeout when several processes race to do it, so that
// error is retried for up to the same 5 seconds.
func pingSQLite(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(5 * time.Second)
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		err := db.PingContext(ctx)
		var se *sqlite.Error
		if err == nil || !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
	}
}

// createPrivateFile makes sure path exists, creating it (and its directory)
// readable by the owner only. SQLite gives its -wal and -shm files the
// database file's mode.
func createPrivateFile(path string) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("store: sqlite: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: sqlite: %w", err)
	}
	return f.Close()
}

// Close closes the database.
func (s *Store) Close() error {
	var errs []error
	if s.insertCert != nil {
		errs = append(errs, s.insertCert.Close())
	}
	if s.rdb != s.wdb {
		errs = append(errs, s.rdb.Close())
	}
	errs = append(errs, s.wdb.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Ping checks that the database is reachable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.wdb.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	if s.rdb != s.wdb {
		if err := s.rdb.PingContext(ctx); err != nil {
			return fmt.Errorf("store: ping: %w", err)
		}
	}
	return nil
}

// Backend reports the database in use: BackendSQLite or BackendPostgres.
func (s *Store) Backend() string { return s.backend }
