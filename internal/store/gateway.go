package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ComponentToken is a bootstrap token of a ward component (the gateway):
// it obtains an SVID spiffe://<td>/ward/<component>. Only its hash is
// stored.
type ComponentToken struct {
	ID        string
	Component string
	Hash      []byte
	CreatedAt time.Time
	ExpiresAt *time.Time
	RevokedAt *time.Time
}

// GatewayRoute is a stored route: its spec (JSON, owned by the
// authority), the grants it recorded and the table version that set it.
type GatewayRoute struct {
	Name      string
	Spec      []byte
	GrantIDs  []string
	Version   int64
	UpdatedBy string
	UpdatedAt time.Time
}

// PassportKey is a gateway's registered passport verification key.
type PassportKey struct {
	KID       string
	JWK       []byte // public JWK, JSON
	Serial    string // of the registering gateway's certificate
	CreatedAt time.Time
	NotAfter  time.Time
}

// CreateComponentToken stores t. ErrConflict if its ID or hash exists.
func (s *Store) CreateComponentToken(ctx context.Context, t ComponentToken) error {
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO component_tokens (id, component, hash, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?)`),
		t.ID, t.Component, t.Hash, s.timeArg(t.CreatedAt), s.nullTimeArg(t.ExpiresAt), s.nullTimeArg(t.RevokedAt))
	return wrap(err, "create component token", fmt.Sprintf("component token %q", t.ID))
}

const componentTokenColumns = `id, component, hash, created_at, expires_at, revoked_at`

func scanComponentToken(sc scanner) (ComponentToken, error) {
	var t ComponentToken
	err := sc.Scan(&t.ID, &t.Component, &t.Hash, timeCol{&t.CreatedAt}, nullTimeCol{&t.ExpiresAt}, nullTimeCol{&t.RevokedAt})
	return t, err
}

// GetComponentTokenByHash returns the token with this SHA-256, or
// ErrNotFound.
func (s *Store) GetComponentTokenByHash(ctx context.Context, hash []byte) (ComponentToken, error) {
	t, err := scanComponentToken(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+componentTokenColumns+` FROM component_tokens WHERE hash = ?`), hash))
	return t, wrap(err, "get component token", "component token")
}

// ListComponentTokens returns every component token, newest first.
func (s *Store) ListComponentTokens(ctx context.Context) ([]ComponentToken, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+componentTokenColumns+` FROM component_tokens ORDER BY created_at DESC`)
	if err != nil {
		return nil, wrap(err, "list component tokens", "")
	}
	defer rows.Close()
	var out []ComponentToken
	for rows.Next() {
		t, err := scanComponentToken(rows)
		if err != nil {
			return nil, wrap(err, "list component tokens", "")
		}
		out = append(out, t)
	}
	return out, wrap(rows.Err(), "list component tokens", "")
}

// RevokeComponentToken marks a token revoked at at. ErrNotFound if there
// is no such token; revoking twice keeps the first time.
func (s *Store) RevokeComponentToken(ctx context.Context, id string, at time.Time) error {
	res, err := s.wdb.ExecContext(ctx, s.q(`UPDATE component_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`), s.timeArg(at), id)
	if err != nil {
		return wrap(err, "revoke component token", id)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: component token %q", ErrNotFound, id)
	}
	return nil
}

// bumpRouteVersion increments the route table's version in tx.
func (s *Store) bumpRouteVersion(ctx context.Context, q querier) (int64, error) {
	var v int64
	err := q.QueryRowContext(ctx, s.q(`INSERT INTO gateway_route_version (id, version) VALUES (1, 1)
		ON CONFLICT (id) DO UPDATE SET version = gateway_route_version.version + 1 RETURNING version`)).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("store: bump route version: %w", err)
	}
	return v, nil
}

// PutGatewayRoute creates or replaces a route and returns the route
// table's new version (also stored in r.Version) and the route it
// replaced (nil if none), in one transaction.
func (s *Store) PutGatewayRoute(ctx context.Context, r GatewayRoute) (int64, *GatewayRoute, error) {
	const op = "put gateway route"
	ids, err := json.Marshal(nonNilStrings(r.GrantIDs))
	if err != nil {
		return 0, nil, fmt.Errorf("store: %s: %w", op, err)
	}
	var (
		version int64
		prev    *GatewayRoute
	)
	err = s.writeTx(ctx, op, func(tx *sql.Tx) error {
		old, err := scanRoute(tx.QueryRowContext(ctx, s.q(`SELECT `+routeColumns+` FROM gateway_routes WHERE name = ?`), r.Name))
		switch {
		case err == nil:
			prev = &old
		case !errors.Is(err, sql.ErrNoRows):
			return wrap(err, op, r.Name)
		}
		if version, err = s.bumpRouteVersion(ctx, tx); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO gateway_routes (name, spec, grant_ids, version, updated_by, updated_at) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, grant_ids = excluded.grant_ids, version = excluded.version,
			updated_by = excluded.updated_by, updated_at = excluded.updated_at`),
			r.Name, r.Spec, string(ids), version, r.UpdatedBy, s.timeArg(r.UpdatedAt))
		return wrap(err, op, r.Name)
	})
	return version, prev, err
}

// DeleteGatewayRoute removes a route and returns it and the table's new
// version. ErrNotFound if there is no such route.
func (s *Store) DeleteGatewayRoute(ctx context.Context, name string) (GatewayRoute, int64, error) {
	const op = "delete gateway route"
	var (
		r       GatewayRoute
		version int64
	)
	err := s.writeTx(ctx, op, func(tx *sql.Tx) error {
		var err error
		r, err = scanRoute(tx.QueryRowContext(ctx, s.q(`DELETE FROM gateway_routes WHERE name = ? RETURNING `+routeColumns), name))
		if err != nil {
			return wrap(err, op, fmt.Sprintf("route %q", name))
		}
		version, err = s.bumpRouteVersion(ctx, tx)
		return err
	})
	return r, version, err
}

const routeColumns = `name, spec, grant_ids, version, updated_by, updated_at`

func scanRoute(sc scanner) (GatewayRoute, error) {
	var r GatewayRoute
	var ids string
	if err := sc.Scan(&r.Name, &r.Spec, &ids, &r.Version, &r.UpdatedBy, timeCol{&r.UpdatedAt}); err != nil {
		return GatewayRoute{}, err
	}
	if err := json.Unmarshal([]byte(ids), &r.GrantIDs); err != nil {
		return GatewayRoute{}, fmt.Errorf("route %q grant_ids: %w", r.Name, err)
	}
	return r, nil
}

// ListGatewayRoutes returns the route table, by name, and its version (0
// before the first route).
func (s *Store) ListGatewayRoutes(ctx context.Context) ([]GatewayRoute, int64, error) {
	const op = "list gateway routes"
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, wrap(err, op, "")
	}
	defer tx.Rollback()
	var version int64
	if err := tx.QueryRowContext(ctx, `SELECT version FROM gateway_route_version WHERE id = 1`).Scan(&version); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, 0, wrap(err, op, "")
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+routeColumns+` FROM gateway_routes ORDER BY name`)
	if err != nil {
		return nil, 0, wrap(err, op, "")
	}
	defer rows.Close()
	var out []GatewayRoute
	for rows.Next() {
		r, err := scanRoute(rows)
		if err != nil {
			return nil, 0, wrap(err, op, "")
		}
		out = append(out, r)
	}
	return out, version, wrap(rows.Err(), op, "")
}

// PutPassportKey registers k; registering a kid again keeps the later
// NotAfter. It first deletes keys that expired before pruneBefore.
func (s *Store) PutPassportKey(ctx context.Context, k PassportKey, pruneBefore time.Time) error {
	const op = "put passport key"
	return s.writeTx(ctx, op, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM passport_keys WHERE not_after < ?`), s.timeArg(pruneBefore)); err != nil {
			return wrap(err, op, "prune")
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO passport_keys (kid, jwk, serial, created_at, not_after) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (kid) DO UPDATE SET not_after = CASE WHEN excluded.not_after > passport_keys.not_after THEN excluded.not_after ELSE passport_keys.not_after END`),
			k.KID, k.JWK, k.Serial, s.timeArg(k.CreatedAt), s.timeArg(k.NotAfter))
		return wrap(err, op, k.KID)
	})
}

// ListPassportKeys returns the keys valid after now, oldest first.
func (s *Store) ListPassportKeys(ctx context.Context, now time.Time) ([]PassportKey, error) {
	const op = "list passport keys"
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT kid, jwk, serial, created_at, not_after FROM passport_keys WHERE not_after > ? ORDER BY created_at, kid`), s.timeArg(now))
	if err != nil {
		return nil, wrap(err, op, "")
	}
	defer rows.Close()
	var out []PassportKey
	for rows.Next() {
		var k PassportKey
		if err := rows.Scan(&k.KID, &k.JWK, &k.Serial, timeCol{&k.CreatedAt}, timeCol{&k.NotAfter}); err != nil {
			return nil, wrap(err, op, "")
		}
		out = append(out, k)
	}
	return out, wrap(rows.Err(), op, "")
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
