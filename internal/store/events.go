package store

import (
	"context"
	"fmt"
	"time"
)

// AppendEvent adds an event to the change log and returns it with its Seq
// and CreatedAt set. Seqs strictly increase, and an event becomes visible
// to readers only after every event with a smaller Seq: a watcher resuming
// from the last Seq it saw misses nothing. (SQLite serializes writers; on
// PostgreSQL an identity column alone would not give the second property,
// since transactions can commit out of order, so appends take a lock on the
// events table that readers do not conflict with.)
func (s *Store) AppendEvent(ctx context.Context, kind string, payload []byte) (Event, error) {
	ev := Event{Kind: kind, Payload: nonNil(payload), CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	insert := s.q(`INSERT INTO events (kind, payload, created_at) VALUES (?, ?, ?) RETURNING seq`)
	if s.backend != BackendPostgres {
		if err := s.wdb.QueryRowContext(ctx, insert, ev.Kind, ev.Payload, s.timeArg(ev.CreatedAt)).Scan(&ev.Seq); err != nil {
			return Event{}, fmt.Errorf("store: append event: %w", err)
		}
		return ev, nil
	}

	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return Event{}, fmt.Errorf("store: append event: %w", err)
	}
	defer tx.Rollback()
	// EXCLUSIVE conflicts with other appends but not with SELECTs. The lock
	// is released only after the commit is visible.
	if _, err := tx.ExecContext(ctx, `LOCK TABLE events IN EXCLUSIVE MODE`); err != nil {
		return Event{}, fmt.Errorf("store: append event: %w", err)
	}
	if err := tx.QueryRowContext(ctx, insert, ev.Kind, ev.Payload, s.timeArg(ev.CreatedAt)).Scan(&ev.Seq); err != nil {
		return Event{}, fmt.Errorf("store: append event: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Event{}, fmt.Errorf("store: append event: %w", err)
	}
	return ev, nil
}

// EventsSince returns up to limit events with Seq > seq in ascending order;
// limit <= 0 means no limit.
func (s *Store) EventsSince(ctx context.Context, seq int64, limit int) ([]Event, error) {
	query := `SELECT seq, kind, payload, created_at FROM events WHERE seq > ? ORDER BY seq`
	args := []any{seq}
	if limit > 0 {
		query += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.rdb.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: events since %d: %w", seq, err)
	}
	defer rows.Close()
	var evs []Event
	for rows.Next() {
		var ev Event
		if err := rows.Scan(&ev.Seq, &ev.Kind, &ev.Payload, timeCol{&ev.CreatedAt}); err != nil {
			return nil, fmt.Errorf("store: events since %d: %w", seq, err)
		}
		ev.Payload = nonNil(ev.Payload)
		evs = append(evs, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: events since %d: %w", seq, err)
	}
	return evs, nil
}

// LatestEventSeq returns the highest Seq assigned so far, 0 when the log is
// empty.
func (s *Store) LatestEventSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.rdb.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("store: latest event seq: %w", err)
	}
	return seq, nil
}
