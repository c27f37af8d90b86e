package vault

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver
)

// store is the vault's own database: tokens with their encrypted values
// and wrapped data keys, the vault's key-encryption keys (sealed by ward's
// KMS) and the deterministic index key.
type store struct {
	db *sql.DB
	pg bool
}

const schemaSQLite = `
CREATE TABLE IF NOT EXISTS vault_tokens (
	token      TEXT PRIMARY KEY,
	type       TEXT NOT NULL,
	subject    TEXT NOT NULL,          -- '' when the value names no data subject
	det        TEXT,                   -- keyed HMAC of the value (deterministic tokens only)
	ct         BLOB NOT NULL,          -- nonce || AES-256-GCM(value) under the record's data key
	wdek       BLOB NOT NULL,          -- the data key wrapped by key-encryption key version kek
	kek        INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER,
	erased_at  INTEGER,
	UNIQUE (type, det)
);
CREATE INDEX IF NOT EXISTS vault_tokens_subject ON vault_tokens (subject, type);
CREATE INDEX IF NOT EXISTS vault_tokens_kek ON vault_tokens (kek);
CREATE TABLE IF NOT EXISTS vault_keks (
	version    INTEGER PRIMARY KEY,
	sealed     BLOB NOT NULL,          -- sealed by ward's KMS
	created_at INTEGER NOT NULL,
	retired_at INTEGER
);
CREATE TABLE IF NOT EXISTS vault_meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
`

const schemaPG = `
CREATE TABLE IF NOT EXISTS vault_tokens (
	token      TEXT PRIMARY KEY,
	type       TEXT NOT NULL,
	subject    TEXT NOT NULL,
	det        TEXT,
	ct         BYTEA NOT NULL,
	wdek       BYTEA NOT NULL,
	kek        BIGINT NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT,
	erased_at  BIGINT,
	UNIQUE (type, det)
);
CREATE INDEX IF NOT EXISTS vault_tokens_subject ON vault_tokens (subject, type);
CREATE INDEX IF NOT EXISTS vault_tokens_kek ON vault_tokens (kek);
CREATE TABLE IF NOT EXISTS vault_keks (
	version    BIGINT PRIMARY KEY,
	sealed     BYTEA NOT NULL,
	created_at BIGINT NOT NULL,
	retired_at BIGINT
);
CREATE TABLE IF NOT EXISTS vault_meta (k TEXT PRIMARY KEY, v BYTEA NOT NULL);
`

// openStore opens a postgres:// URL or a SQLite file. SQLite runs with
// secure_delete, so erased bytes are overwritten in the file.
func openStore(ctx context.Context, path string) (*store, error) {
	if strings.HasPrefix(path, "postgres://") || strings.HasPrefix(path, "postgresql://") {
		db, err := sql.Open("pgx", path)
		if err != nil {
			return nil, fmt.Errorf("vault: open PostgreSQL: %w", err)
		}
		if _, err := db.ExecContext(ctx, schemaPG); err != nil {
			db.Close()
			return nil, fmt.Errorf("vault: schema: %w", err)
		}
		return &store{db: db, pg: true}, nil
	}
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "synchronous(NORMAL)", "secure_delete(ON)", "temp_store(MEMORY)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("vault: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	if _, err := db.ExecContext(ctx, schemaSQLite); err != nil {
		db.Close()
		return nil, fmt.Errorf("vault: schema: %w", err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// q rewrites ? placeholders for PostgreSQL.
func (s *store) q(query string) string {
	if !s.pg {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// record is one stored token.
type record struct {
	Token, Type, Subject string
	Det                  sql.NullString
	CT, WDEK             []byte
	KEK                  int64
	CreatedAt            time.Time
	ExpiresAt, ErasedAt  *time.Time
}

func micros(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMicro()
}

func fromMicros(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := time.UnixMicro(n.Int64).UTC()
	return &t
}

// insert stores records in one transaction. A deterministic record whose
// (type, det) exists is skipped and reported in the returned set.
func (s *store) insert(ctx context.Context, recs []record) (existing map[int]bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, s.q(`INSERT INTO vault_tokens (token, type, subject, det, ct, wdek, kek, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`))
	if err != nil {
		return nil, err
	}
	defer stmt.Close()
	for i, r := range recs {
		res, err := stmt.ExecContext(ctx, r.Token, r.Type, r.Subject, r.Det, r.CT, r.WDEK, r.KEK, r.CreatedAt.UnixMicro(), micros(r.ExpiresAt))
		if err != nil {
			return nil, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			if !r.Det.Valid {
				return nil, fmt.Errorf("vault: random token collision")
			}
			if existing == nil {
				existing = map[int]bool{}
			}
			existing[i] = true
		}
	}
	return existing, tx.Commit()
}

const recordColumns = `token, type, subject, det, ct, wdek, kek, created_at, expires_at, erased_at`

func scanRecord(sc interface{ Scan(...any) error }) (record, error) {
	var r record
	var created int64
	var exp, erased sql.NullInt64
	err := sc.Scan(&r.Token, &r.Type, &r.Subject, &r.Det, &r.CT, &r.WDEK, &r.KEK, &created, &exp, &erased)
	r.CreatedAt, r.ExpiresAt, r.ErasedAt = time.UnixMicro(created).UTC(), fromMicros(exp), fromMicros(erased)
	return r, err
}

// byDet finds the token of a deterministic value.
func (s *store) byDet(ctx context.Context, typ, det string) (record, error) {
	return scanRecord(s.db.QueryRowContext(ctx, s.q(`SELECT `+recordColumns+` FROM vault_tokens WHERE type = ? AND det = ?`), typ, det))
}

// get returns the records of tokens of typ (missing ones are absent).
func (s *store) get(ctx context.Context, typ string, tokens []string) (map[string]record, error) {
	out := make(map[string]record, len(tokens))
	const chunk = 500
	for i := 0; i < len(tokens); i += chunk {
		part := tokens[i:min(i+chunk, len(tokens))]
		args := make([]any, 0, len(part))
		for _, t := range part {
			args = append(args, t)
		}
		// By primary key only (a type condition lets the planner pick the
		// (type, det) index and scan the type); the type is checked below.
		rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+recordColumns+` FROM vault_tokens WHERE token IN (?`+strings.Repeat(", ?", len(part)-1)+`)`), args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			r, err := scanRecord(rows)
			if err != nil {
				rows.Close()
				return nil, err
			}
			if r.Type == typ {
				out[r.Token] = r
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// delete removes a token; false when it did not exist.
func (s *store) delete(ctx context.Context, typ, token string) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM vault_tokens WHERE token = ? AND type = ?`), token, typ)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// erase destroys the data keys and ciphertexts of a subject's values of
// typ (overwritten with zeros of the same length) and returns how many.
func (s *store) erase(ctx context.Context, typ, subject string, at time.Time) (int64, error) {
	zero := `zeroblob(length(ct))`
	zeroKey := `zeroblob(length(wdek))`
	if s.pg {
		zero, zeroKey = `decode(repeat('00', length(ct)), 'hex')`, `decode(repeat('00', length(wdek)), 'hex')`
	}
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE vault_tokens SET ct = `+zero+`, wdek = `+zeroKey+`, det = NULL, erased_at = ?
		WHERE subject = ? AND type = ? AND erased_at IS NULL`), at.UnixMicro(), subject, typ)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	// Old page images must not outlive the erasure: checkpoint the WAL
	// into the (secure_delete) database file and truncate it.
	if !s.pg {
		if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			return n, fmt.Errorf("vault: checkpoint after erase: %w", err)
		}
	}
	return n, nil
}

// bySubject returns a subject's live records of typ.
func (s *store) bySubject(ctx context.Context, typ, subject string, limit int) ([]record, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+recordColumns+` FROM vault_tokens WHERE subject = ? AND type = ? AND erased_at IS NULL ORDER BY created_at LIMIT ?`), subject, typ, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// keks returns the sealed key-encryption keys that are not retired.
func (s *store) keks(ctx context.Context) (map[int64][]byte, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT version, sealed FROM vault_keks WHERE retired_at IS NULL`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64][]byte{}
	for rows.Next() {
		var v int64
		var b []byte
		if err := rows.Scan(&v, &b); err != nil {
			return nil, err
		}
		out[v] = b
	}
	return out, rows.Err()
}

func (s *store) addKEK(ctx context.Context, version int64, sealed []byte, at time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO vault_keks (version, sealed, created_at) VALUES (?, ?, ?)`), version, sealed, at.UnixMicro())
	return err
}

// retireKEK retires a version that no record uses any more.
func (s *store) retireKEK(ctx context.Context, version int64, at time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE vault_keks SET retired_at = ?, sealed = ? WHERE version = ? AND retired_at IS NULL
		AND NOT EXISTS (SELECT 1 FROM vault_tokens WHERE kek = ? AND erased_at IS NULL)`), at.UnixMicro(), []byte{}, version, version)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// wrappedUnder returns up to limit live records wrapped by version.
func (s *store) wrappedUnder(ctx context.Context, version int64, limit int) ([]record, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+recordColumns+` FROM vault_tokens WHERE kek = ? AND erased_at IS NULL LIMIT ?`), version, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// rewrap replaces wrapped data keys, each only if the record is still
// wrapped by the version it was read under.
func (s *store) rewrap(ctx context.Context, recs []record, from int64) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, s.q(`UPDATE vault_tokens SET wdek = ?, kek = ? WHERE token = ? AND kek = ? AND erased_at IS NULL`))
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, r := range recs {
		if _, err := stmt.ExecContext(ctx, r.WDEK, r.KEK, r.Token, from); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *store) meta(ctx context.Context, k string) ([]byte, error) {
	var v []byte
	err := s.db.QueryRowContext(ctx, s.q(`SELECT v FROM vault_meta WHERE k = ?`), k).Scan(&v)
	return v, err
}

func (s *store) setMeta(ctx context.Context, k string, v []byte) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO vault_meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING`), k, v)
	return err
}

// counts returns live tokens per type.
func (s *store) counts(ctx context.Context) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT type, COUNT(*) FROM vault_tokens WHERE erased_at IS NULL GROUP BY type`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var t string
		var n int64
		if err := rows.Scan(&t, &n); err != nil {
			return nil, err
		}
		out[t] = n
	}
	return out, rows.Err()
}
