package store

import (
	"context"
	"database/sql"
	"time"
)

// AgentEntry is a workload registration entry: a node agent issues the
// SVID of Service to a local process that matches every set selector.
type AgentEntry struct {
	ID        string
	Service   string
	Host      string // "" for every agent
	UID, GID  *int
	Path      string
	CreatedBy string
	CreatedAt time.Time
}

func nullInt(p *int) any {
	if p == nil {
		return nil
	}
	return int64(*p)
}

// CreateAgentEntry stores e (ErrConflict for a duplicate ID).
func (s *Store) CreateAgentEntry(ctx context.Context, e AgentEntry) error {
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO agent_entries (id, service, host, uid, gid, path, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		e.ID, e.Service, e.Host, nullInt(e.UID), nullInt(e.GID), e.Path, e.CreatedBy, s.timeArg(e.CreatedAt))
	return wrap(err, "create agent entry", "agent entry")
}

// ListAgentEntries returns the entries of host (and those for every
// host); host "*" returns all of them.
func (s *Store) ListAgentEntries(ctx context.Context, host string) ([]AgentEntry, error) {
	q := `SELECT id, service, host, uid, gid, path, created_by, created_at FROM agent_entries WHERE host = '' OR host = ? ORDER BY service, id`
	args := []any{host}
	if host == "*" {
		q, args = `SELECT id, service, host, uid, gid, path, created_by, created_at FROM agent_entries ORDER BY service, id`, nil
	}
	rows, err := s.rdb.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, wrap(err, "list agent entries", "")
	}
	defer rows.Close()
	var out []AgentEntry
	for rows.Next() {
		var e AgentEntry
		var uid, gid sql.NullInt64
		if err := rows.Scan(&e.ID, &e.Service, &e.Host, &uid, &gid, &e.Path, &e.CreatedBy, timeCol{&e.CreatedAt}); err != nil {
			return nil, wrap(err, "list agent entries", "")
		}
		if uid.Valid {
			v := int(uid.Int64)
			e.UID = &v
		}
		if gid.Valid {
			v := int(gid.Int64)
			e.GID = &v
		}
		out = append(out, e)
	}
	return out, wrap(rows.Err(), "list agent entries", "")
}

// DeleteAgentEntry removes an entry (ErrNotFound when absent).
func (s *Store) DeleteAgentEntry(ctx context.Context, id string) (AgentEntry, error) {
	var e AgentEntry
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT id, service, host FROM agent_entries WHERE id = ?`), id).Scan(&e.ID, &e.Service, &e.Host)
	if err != nil {
		return e, wrap(err, "delete agent entry", "agent entry")
	}
	res, err := s.wdb.ExecContext(ctx, s.q(`DELETE FROM agent_entries WHERE id = ?`), id)
	if err != nil {
		return e, wrap(err, "delete agent entry", "agent entry")
	}
	return e, mustAffect(res, "delete agent entry", "agent entry")
}
