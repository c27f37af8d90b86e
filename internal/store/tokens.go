package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// CreateBootstrapToken stores a bootstrap token: ErrConflict if its ID or
// hash is taken, ErrNotFound if its service does not exist.
func (s *Store) CreateBootstrapToken(ctx context.Context, t BootstrapToken) error {
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO bootstrap_tokens (id, service, hash, created_at, revoked_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`),
		t.ID, t.Service, nonNil(t.Hash), s.timeArg(t.CreatedAt), s.nullTimeArg(t.RevokedAt), s.nullTimeArg(t.ExpiresAt))
	if isForeignKeyViolation(err) {
		return fmt.Errorf("%w: service %q", ErrNotFound, t.Service)
	}
	return wrap(err, "create bootstrap token", fmt.Sprintf("bootstrap token %q", t.ID))
}

// GetBootstrapTokenByHash returns the token whose SHA-256 is hash, revoked
// or not, or ErrNotFound.
func (s *Store) GetBootstrapTokenByHash(ctx context.Context, hash []byte) (BootstrapToken, error) {
	var t BootstrapToken
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT id, service, hash, created_at, revoked_at, expires_at FROM bootstrap_tokens WHERE hash = ?`), nonNil(hash)).
		Scan(&t.ID, &t.Service, &t.Hash, timeCol{&t.CreatedAt}, nullTimeCol{&t.RevokedAt}, nullTimeCol{&t.ExpiresAt})
	if err != nil {
		return BootstrapToken{}, wrap(err, "get bootstrap token", "bootstrap token")
	}
	return t, nil
}

// RevokeBootstrapTokens revokes every unrevoked bootstrap token of a
// service and reports how many it revoked.
func (s *Store) RevokeBootstrapTokens(ctx context.Context, service string, at time.Time) (int, error) {
	res, err := s.wdb.ExecContext(ctx, s.q(`UPDATE bootstrap_tokens SET revoked_at = ? WHERE service = ? AND revoked_at IS NULL`),
		s.timeArg(at), service)
	if err != nil {
		return 0, fmt.Errorf("store: revoke bootstrap tokens: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: revoke bootstrap tokens: %w", err)
	}
	return int(n), nil
}

const adminTokenColumns = `id, name, hash, roles, created_at, revoked_at`

func scanAdminToken(sc scanner) (AdminToken, error) {
	var t AdminToken
	var roles string
	if err := sc.Scan(&t.ID, &t.Name, &t.Hash, &roles, timeCol{&t.CreatedAt}, nullTimeCol{&t.RevokedAt}); err != nil {
		return AdminToken{}, err
	}
	if err := json.Unmarshal([]byte(roles), &t.Roles); err != nil {
		return AdminToken{}, fmt.Errorf("admin token %q roles: %w", t.ID, err)
	}
	if len(t.Roles) == 0 {
		t.Roles = nil
	}
	return t, nil
}

// CreateAdminToken stores an admin token; ErrConflict if its ID or hash is
// taken. Roles are stored as a JSON array.
func (s *Store) CreateAdminToken(ctx context.Context, t AdminToken) error {
	roles := t.Roles
	if roles == nil {
		roles = []string{}
	}
	rolesJSON, err := json.Marshal(roles)
	if err != nil {
		return fmt.Errorf("store: create admin token: %w", err)
	}
	_, err = s.wdb.ExecContext(ctx, s.q(`INSERT INTO admin_tokens (`+adminTokenColumns+`) VALUES (?, ?, ?, ?, ?, ?)`),
		t.ID, t.Name, nonNil(t.Hash), string(rolesJSON), s.timeArg(t.CreatedAt), s.nullTimeArg(t.RevokedAt))
	return wrap(err, "create admin token", fmt.Sprintf("admin token %q", t.ID))
}

// GetAdminTokenByHash returns the admin token whose SHA-256 is hash, revoked
// or not, or ErrNotFound.
func (s *Store) GetAdminTokenByHash(ctx context.Context, hash []byte) (AdminToken, error) {
	t, err := scanAdminToken(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+adminTokenColumns+` FROM admin_tokens WHERE hash = ?`), nonNil(hash)))
	if err != nil {
		return AdminToken{}, wrap(err, "get admin token", "admin token")
	}
	return t, nil
}

// ListAdminTokens returns every admin token, oldest first (ties broken by ID).
func (s *Store) ListAdminTokens(ctx context.Context) ([]AdminToken, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+adminTokenColumns+` FROM admin_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list admin tokens: %w", err)
	}
	defer rows.Close()
	var ts []AdminToken
	for rows.Next() {
		t, err := scanAdminToken(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list admin tokens: %w", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list admin tokens: %w", err)
	}
	return ts, nil
}

// RevokeAdminToken marks an admin token revoked at at; revoking again keeps
// the first time. ErrNotFound if no token has that ID.
func (s *Store) RevokeAdminToken(ctx context.Context, id string, at time.Time) error {
	res, err := s.wdb.ExecContext(ctx, s.q(`UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`), s.timeArg(at), id)
	if err != nil {
		return wrap(err, "revoke admin token", fmt.Sprintf("admin token %q", id))
	}
	return mustAffect(res, "revoke admin token", fmt.Sprintf("admin token %q", id))
}
