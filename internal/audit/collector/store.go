package collector

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/valyala/fastjson"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/wardsec/ward/audit"
)

// Store is the collector's own database — SQLite by default, PostgreSQL
// for production: events with their per-source hash chain, and signed
// checkpoints.
type Store struct {
	db *sql.DB
	pg bool
}

// q rewrites ? placeholders as $1, $2, … for PostgreSQL.
func (s *Store) q(query string) string {
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

const schema = `
CREATE TABLE IF NOT EXISTS events (
	id       INTEGER PRIMARY KEY,          -- store order: the Merkle tree's leaf index + 1
	source   TEXT NOT NULL,                -- the publishing agent's host
	seq      INTEGER NOT NULL,             -- position in the source's chain, from 1
	msg_id   TEXT NOT NULL UNIQUE,         -- the agent's de-duplication ID
	time     INTEGER NOT NULL,             -- the event's time, µs since the epoch
	kind     TEXT NOT NULL,
	cid      TEXT NOT NULL,
	caller   TEXT NOT NULL,
	usr      TEXT NOT NULL,
	decision TEXT NOT NULL,
	data     BLOB NOT NULL,                -- the event as received (redacted JSON)
	prev     BLOB NOT NULL,                -- hash of the source's previous event (32 zero bytes first)
	hash     BLOB NOT NULL                 -- SHA-256(prev || source || seq || msg_id || data)
);
CREATE INDEX IF NOT EXISTS events_cid ON events (cid, time);
CREATE INDEX IF NOT EXISTS events_caller ON events (caller, time);
CREATE INDEX IF NOT EXISTS events_usr ON events (usr, time);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, time);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
-- The head of each source's chain, updated with every batch; a batch
-- whose head moved under it (another collector) is refused.
CREATE TABLE IF NOT EXISTS heads (
	source TEXT PRIMARY KEY,
	seq    INTEGER NOT NULL,
	hash   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
	id         INTEGER PRIMARY KEY,
	size       INTEGER NOT NULL,
	note       TEXT NOT NULL,
	created_at INTEGER NOT NULL
);
`

const schemaPG = `
CREATE TABLE IF NOT EXISTS events (
	id       BIGSERIAL PRIMARY KEY,
	source   TEXT NOT NULL,
	seq      BIGINT NOT NULL,
	msg_id   TEXT NOT NULL UNIQUE,
	time     BIGINT NOT NULL,
	kind     TEXT NOT NULL,
	cid      TEXT NOT NULL,
	caller   TEXT NOT NULL,
	usr      TEXT NOT NULL,
	decision TEXT NOT NULL,
	data     BYTEA NOT NULL,
	prev     BYTEA NOT NULL,
	hash     BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS events_cid ON events (cid, time);
CREATE INDEX IF NOT EXISTS events_caller ON events (caller, time);
CREATE INDEX IF NOT EXISTS events_usr ON events (usr, time);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, time);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE TABLE IF NOT EXISTS heads (
	source TEXT PRIMARY KEY,
	seq    BIGINT NOT NULL,
	hash   BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
	id         BIGSERIAL PRIMARY KEY,
	size       BIGINT NOT NULL,
	note       TEXT NOT NULL,
	created_at BIGINT NOT NULL
);
`

// OpenStore opens (creating its tables) the collector's database: a
// postgres:// URL, or else a SQLite file path.
func OpenStore(ctx context.Context, path string) (*Store, error) {
	if strings.HasPrefix(path, "postgres://") || strings.HasPrefix(path, "postgresql://") {
		db, err := sql.Open("pgx", path)
		if err != nil {
			return nil, fmt.Errorf("collector: open PostgreSQL: %w", err)
		}
		if _, err := db.ExecContext(ctx, schemaPG); err != nil {
			db.Close()
			return nil, fmt.Errorf("collector: schema: %w", err)
		}
		st := &Store{db: db, pg: true}
		if err := st.fillHeads(ctx); err != nil {
			db.Close()
			return nil, err
		}
		return st, nil
	}
	q := url.Values{}
	for _, p := range []string{"page_size(16384)", "journal_mode(WAL)", "busy_timeout(10000)", "synchronous(NORMAL)", "foreign_keys(ON)", "cache_size(-65536)", "temp_store(MEMORY)", "wal_autocheckpoint(8192)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("collector: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer; reads are small
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("collector: schema: %w", err)
	}
	st := &Store{db: db}
	if err := st.fillHeads(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return st, nil
}

// fillHeads builds the heads table once for a database written before it
// existed (whose events carry a unique (source, seq) index for the
// lookup); afterwards every batch maintains it.
func (s *Store) fillHeads(ctx context.Context) error {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT v FROM meta WHERE k = 'heads'`).Scan(&v)
	if err == nil {
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("collector: schema: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO heads (source, seq, hash)
		SELECT e.source, e.seq, e.hash FROM events e WHERE e.seq = (SELECT MAX(seq) FROM events WHERE source = e.source)
		ON CONFLICT (source) DO NOTHING`); err != nil {
		return fmt.Errorf("collector: build chain heads: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO meta (k, v) VALUES ('heads', '1')`); err != nil {
		return fmt.Errorf("collector: build chain heads: %w", err)
	}
	return tx.Commit()
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Incoming is one message from the broker.
type Incoming struct {
	Source string // the agent's host (from the subject)
	MsgID  string
	Data   []byte

	ix    *index // decoded ahead by index (nil: Insert decodes)
	ixErr error
}

// index decodes the indexed fields ahead of Insert (the receiver does it
// while the store writes the previous batch).
func (m *Incoming) index() {
	ix, err := indexFields(m.Data)
	m.ix, m.ixErr = &ix, err
}

// index holds the fields the store indexes: decoding only these is
// cheaper than a whole Event.
type index struct {
	V             int       `json:"v"`
	Time          time.Time `json:"time"`
	Kind          string    `json:"kind"`
	CorrelationID string    `json:"cid"`
	Caller        string    `json:"caller"`
	User          string    `json:"user"`
	Decision      string    `json:"decision"`
}

var parsers fastjson.ParserPool

// indexFields reads the indexed fields of an event with a scanning parser
// (several times cheaper than encoding/json here, on the hot path).
func indexFields(data []byte) (index, error) {
	var i index
	if len(data) > audit.MaxLineSize {
		return i, audit.ErrLineTooLarge
	}
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(data)
	if err != nil {
		return i, err
	}
	if v.Type() != fastjson.TypeObject || v.GetInt("v") != audit.SchemaVersion {
		return i, audit.ErrNotEvent
	}
	str := func(k string) string { return string(v.GetStringBytes(k)) }
	i.V, i.Kind, i.CorrelationID, i.Caller, i.User, i.Decision = audit.SchemaVersion, str("kind"), str("cid"), str("caller"), str("user"), str("decision")
	if i.Time, err = time.Parse(time.RFC3339Nano, str("time")); err != nil || i.Kind == "" {
		return i, audit.ErrNotEvent
	}
	return i, nil
}

// chainHash is the hash of one stored event.
func chainHash(prev []byte, source string, seq int64, msgID string, data []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(seq))
	for _, part := range [][]byte{[]byte(source), n[:], []byte(msgID), data} {
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	return h.Sum(nil)
}

// Insert stores a batch in one transaction, skipping messages whose ID is
// already stored (redeliveries, retried publishes), chaining each to its
// source's previous event. It returns the stored hashes, in store order,
// and how many were duplicates.
func (s *Store) Insert(ctx context.Context, batch []Incoming) (hashes [][]byte, dups int, err error) {
	// Duplicates are rare (a redelivery, an agent that lost its
	// checkpoints): insert first, and only when some row was already
	// there, roll back and look them up.
	hashes, dups, err = s.insert(ctx, batch, false)
	if errors.Is(err, errDuplicates) {
		hashes, dups, err = s.insert(ctx, batch, true)
	}
	return hashes, dups, err
}

// errDuplicates: an optimistic insert met stored events.
var errDuplicates = errors.New("collector: batch holds stored events")

func (s *Store) insert(ctx context.Context, batch []Incoming, lookup bool) (hashes [][]byte, dups int, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()
	// Which messages are stored already (redeliveries, retried publishes)?
	stored := map[string]bool{}
	const idChunk = 500
	for i := 0; lookup && i < len(batch); i += idChunk {
		part := batch[i:min(i+idChunk, len(batch))]
		args := make([]any, len(part))
		for j, m := range part {
			args[j] = m.MsgID
		}
		rows, err := tx.QueryContext(ctx, s.q(`SELECT msg_id FROM events WHERE msg_id IN (?`+strings.Repeat(", ?", len(part)-1)+`)`), args...)
		if err != nil {
			return nil, 0, err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, 0, err
			}
			stored[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, 0, err
		}
	}
	type head struct {
		seq  int64
		hash []byte
		from int64 // the stored head's seq (-1: no row yet)
	}
	heads := map[string]*head{}
	const cols = 12
	var vals []any
	// The full-chunk insert is prepared once per transaction: parsing a
	// 2,400-placeholder statement for every chunk cost as much as
	// executing it.
	stmts := map[int]*sql.Stmt{}
	defer func() {
		for _, st := range stmts {
			st.Close()
		}
	}()
	flush := func() error {
		if len(vals) == 0 {
			return nil
		}
		n := len(vals) / cols
		st, ok := stmts[n]
		if !ok {
			row := "(?" + strings.Repeat(", ?", cols-1) + ")"
			q := `INSERT INTO events (source, seq, msg_id, time, kind, cid, caller, usr, decision, data, prev, hash) VALUES ` +
				row + strings.Repeat(", "+row, n-1) + ` ON CONFLICT (msg_id) DO NOTHING`
			var err error
			if st, err = tx.PrepareContext(ctx, s.q(q)); err != nil {
				return err
			}
			stmts[n] = st
		}
		res, err := st.ExecContext(ctx, vals...)
		if err != nil {
			return err
		}
		if got, _ := res.RowsAffected(); got != int64(n) {
			if !lookup {
				return errDuplicates
			}
			// Another collector stored some of them meanwhile: start over.
			return fmt.Errorf("collector: %d of %d events stored concurrently by another collector", int64(n)-got, n)
		}
		vals = vals[:0]
		return nil
	}
	const rowChunk = 500
	for _, m := range batch {
		if stored[m.MsgID] {
			dups++
			continue
		}
		stored[m.MsgID] = true // a message twice in one batch
		hd, ok := heads[m.Source]
		if !ok {
			hd = &head{}
			err := tx.QueryRowContext(ctx, s.q(`SELECT seq, hash FROM heads WHERE source = ?`), m.Source).Scan(&hd.seq, &hd.hash)
			if errors.Is(err, sql.ErrNoRows) {
				hd.hash, hd.from = make([]byte, 32), -1
			} else if err != nil {
				return nil, 0, err
			} else {
				hd.from = hd.seq
			}
			heads[m.Source] = hd
		}
		if m.ix == nil {
			m.index()
		}
		e, perr := *m.ix, m.ixErr
		if perr != nil { // stored anyway (never lose a line), indexed as raw
			e = index{Kind: audit.KindRaw, Time: time.Now()}
		}
		seq := hd.seq + 1
		h := chainHash(hd.hash, m.Source, seq, m.MsgID, m.Data)
		vals = append(vals, m.Source, seq, m.MsgID, e.Time.UnixMicro(), e.Kind, e.CorrelationID, e.Caller, e.User,
			e.Decision, m.Data, hd.hash, h)
		hd.seq, hd.hash = seq, h
		hashes = append(hashes, h)
		if len(vals) >= rowChunk*cols {
			if err := flush(); err != nil {
				return nil, 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, 0, err
	}
	// Move each source's head; one that moved under this transaction
	// means another collector chained events meanwhile: start over.
	for src, hd := range heads {
		if hd.seq == hd.from {
			continue
		}
		var res sql.Result
		if hd.from < 0 {
			res, err = tx.ExecContext(ctx, s.q(`INSERT INTO heads (source, seq, hash) VALUES (?, ?, ?) ON CONFLICT (source) DO NOTHING`), src, hd.seq, hd.hash)
		} else {
			res, err = tx.ExecContext(ctx, s.q(`UPDATE heads SET seq = ?, hash = ? WHERE source = ? AND seq = ?`), hd.seq, hd.hash, src, hd.from)
		}
		if err != nil {
			return nil, 0, err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return nil, 0, fmt.Errorf("collector: the chain of %s moved under this batch (another collector): retried", src)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, 0, err
	}
	return hashes, dups, nil
}

// allHashes streams every event hash in store order.
func (s *Store) allHashes(ctx context.Context, fn func(id int64, h []byte) error) error {
	rows, err := s.db.QueryContext(ctx, `SELECT id, hash FROM events ORDER BY id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var h []byte
		if err := rows.Scan(&id, &h); err != nil {
			return err
		}
		if err := fn(id, h); err != nil {
			return err
		}
	}
	return rows.Err()
}

// AddCheckpoint stores a signed checkpoint note.
func (s *Store) AddCheckpoint(ctx context.Context, size int64, note string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO checkpoints (size, note, created_at) VALUES (?, ?, ?)`), size, note, at.UnixMicro())
	return err
}

// Query selects events.
type Query struct {
	CorrelationID, Caller, User, Kind, Decision string
	Since, Until                                time.Time
	Limit                                       int
	AfterID                                     int64 // for following: only events stored after this ID
}

// Row is a stored event.
type Row struct {
	ID     int64           `json:"id"`
	Source string          `json:"source"`
	Seq    int64           `json:"seq"`
	Event  json.RawMessage `json:"event"`
}

// Find returns matching events in store order (for one correlation ID,
// by event time then store order).
func (s *Store) Find(ctx context.Context, q Query) ([]Row, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where = append(where, cond); args = append(args, v) }
	if q.CorrelationID != "" {
		add("cid = ?", q.CorrelationID)
	}
	if q.Caller != "" {
		add("caller = ?", q.Caller)
	}
	if q.User != "" {
		add("usr = ?", q.User)
	}
	if q.Kind != "" {
		add("kind = ?", q.Kind)
	}
	if q.Decision != "" {
		add("decision = ?", q.Decision)
	}
	if !q.Since.IsZero() {
		add("time >= ?", q.Since.UnixMicro())
	}
	if !q.Until.IsZero() {
		add("time < ?", q.Until.UnixMicro())
	}
	if q.AfterID > 0 {
		add("id > ?", q.AfterID)
	}
	sqlq := `SELECT id, source, seq, data FROM events`
	if len(where) > 0 {
		sqlq += " WHERE " + strings.Join(where, " AND ")
	}
	order := " ORDER BY id"
	if q.CorrelationID != "" {
		order = " ORDER BY time, id"
	}
	limit := q.Limit
	if limit <= 0 || limit > 100000 {
		limit = 1000
	}
	rows, err := s.db.QueryContext(ctx, s.q(sqlq+order+fmt.Sprintf(" LIMIT %d", limit)), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var r Row
		var data []byte
		if err := rows.Scan(&r.ID, &r.Source, &r.Seq, &data); err != nil {
			return nil, err
		}
		if json.Valid(data) {
			r.Event = data
		} else {
			r.Event, _ = json.Marshal(string(data))
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Count is how many events are stored.
func (s *Store) Count(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM events`).Scan(&n)
	return n, err
}

// VerifyResult is what Verify found.
type VerifyResult struct {
	Events      int64
	Checkpoints int
	// Broken names the first broken link ("" when everything holds).
	Broken string
}

// Verify recomputes every source's hash chain and the Merkle root at
// every stored checkpoint, and checks each checkpoint's signature with
// the verifier key. It names the first broken link.
func (s *Store) Verify(ctx context.Context, verifierKey string) (VerifyResult, error) {
	name, pub, err := ParseVerifierKey(verifierKey)
	if err != nil {
		return VerifyResult{}, err
	}
	type cp struct {
		id   int64
		size int64
		note string
	}
	var cps []cp
	rows, err := s.db.QueryContext(ctx, `SELECT id, size, note FROM checkpoints ORDER BY size, id`)
	if err != nil {
		return VerifyResult{}, err
	}
	for rows.Next() {
		var c cp
		if err := rows.Scan(&c.id, &c.size, &c.note); err != nil {
			rows.Close()
			return VerifyResult{}, err
		}
		cps = append(cps, c)
	}
	rows.Close()
	res := VerifyResult{Checkpoints: len(cps)}
	// Signatures first: a checkpoint that does not verify is itself a
	// broken link.
	parsed := make([]Checkpoint, len(cps))
	for i, c := range cps {
		p, err := OpenNote(c.note, name, pub)
		if err != nil || p.Size != c.size {
			res.Broken = fmt.Sprintf("checkpoint %d (size %d): signature or body invalid: %v", c.id, c.size, err)
			return res, nil
		}
		parsed[i] = p
	}
	heads := map[string]struct {
		seq  int64
		hash []byte
	}{}
	var t tree
	next := 0
	rows, err = s.db.QueryContext(ctx, `SELECT id, source, seq, msg_id, data, prev, hash FROM events ORDER BY id`)
	if err != nil {
		return res, err
	}
	defer rows.Close()
	check := func() bool {
		for next < len(parsed) && parsed[next].Size == t.size {
			if parsed[next].Root != t.root() {
				res.Broken = fmt.Sprintf("checkpoint %d: the stored events do not hash to its signed root at size %d", cps[next].id, t.size)
				return false
			}
			next++
		}
		return true
	}
	if !check() {
		return res, nil
	}
	for rows.Next() {
		var (
			id, seq          int64
			source, msgID    string
			data, prev, hash []byte
		)
		if err := rows.Scan(&id, &source, &seq, &msgID, &data, &prev, &hash); err != nil {
			return res, err
		}
		head, ok := heads[source]
		if !ok {
			head.hash = make([]byte, 32)
		}
		switch {
		case seq != head.seq+1:
			res.Broken = fmt.Sprintf("event %d (source %s): sequence %d follows %d", id, source, seq, head.seq)
		case !bytes.Equal(prev, head.hash):
			res.Broken = fmt.Sprintf("event %d (source %s, seq %d): does not link to the previous event", id, source, seq)
		case !bytes.Equal(hash, chainHash(prev, source, seq, msgID, data)):
			res.Broken = fmt.Sprintf("event %d (source %s, seq %d): content does not match its hash (altered)", id, source, seq)
		}
		if res.Broken != "" {
			return res, nil
		}
		heads[source] = struct {
			seq  int64
			hash []byte
		}{seq, hash}
		t.append(hash)
		res.Events++
		if !check() {
			return res, nil
		}
	}
	if err := rows.Err(); err != nil {
		return res, err
	}
	if next < len(parsed) {
		res.Broken = fmt.Sprintf("checkpoint %d covers %d events but only %d are stored (events deleted)", cps[next].id, parsed[next].Size, t.size)
	}
	return res, nil
}
