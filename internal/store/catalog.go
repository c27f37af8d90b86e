package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// The dependency catalogue: declarations, access requests (an approved one
// is a grant) and the providers' access-list versions. Every change that
// alters what a provider's access list says increments its version in the
// same transaction, so a list compiled from AccessListState is labelled
// with the version of exactly the grants it holds.

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// writeTx runs fn in a transaction on the writer pool (on SQLite under
// BEGIN IMMEDIATE, so it holds the write lock from the start) and commits
// it if fn returns nil. fn's errors are returned as they are; begin and
// commit errors are wrapped with op.
func (s *Store) writeTx(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

const declarationColumns = `seq, service, version, manifest, serial, declared_at`

func scanDeclaration(sc scanner) (Declaration, error) {
	var d Declaration
	if err := sc.Scan(&d.Seq, &d.Service, &d.Version, &d.Manifest, &d.Serial, timeCol{&d.DeclaredAt}); err != nil {
		return Declaration{}, err
	}
	d.Manifest = nonNil(d.Manifest)
	return d, nil
}

const latestDeclarationSQL = `SELECT ` + declarationColumns + ` FROM declarations WHERE service = ? ORDER BY seq DESC LIMIT 1`

// PutDeclaration appends d and returns it with Seq assigned (nothing else
// is changed: DeclaredAt is stored as given). With bump, the service's
// access-list version is incremented in the same transaction; the new
// version is returned, or without bump the unchanged current one (0 if
// none).
func (s *Store) PutDeclaration(ctx context.Context, d Declaration, bump bool) (Declaration, int64, error) {
	const op = "put declaration"
	var version int64
	err := s.writeTx(ctx, op, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, s.q(`INSERT INTO declarations (service, version, manifest, serial, declared_at) VALUES (?, ?, ?, ?, ?) RETURNING seq`),
			d.Service, d.Version, nonNil(d.Manifest), d.Serial, s.timeArg(d.DeclaredAt)).Scan(&d.Seq)
		if err != nil {
			return wrap(err, op, fmt.Sprintf("declaration of %q", d.Service))
		}
		// History is bounded: the newest DeclarationsKept per service stay.
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM declarations WHERE service = ? AND seq < (
			SELECT MIN(seq) FROM (SELECT seq FROM declarations WHERE service = ? ORDER BY seq DESC LIMIT ?) AS kept)`),
			d.Service, d.Service, DeclarationsKept); err != nil {
			return fmt.Errorf("store: %s: prune history of %q: %w", op, d.Service, err)
		}
		if bump {
			version, err = s.bumpVersion(ctx, tx, d.Service)
		} else {
			version, err = s.listVersion(ctx, tx, d.Service)
		}
		return err
	})
	if err != nil {
		return Declaration{}, 0, err
	}
	return d, version, nil
}

// DeclarationsKept is how many declarations of one service the store keeps
// (the newest); older ones are deleted by PutDeclaration.
const DeclarationsKept = 100

// ListDeclarations returns the service's kept declarations, newest first.
func (s *Store) ListDeclarations(ctx context.Context, service string) ([]Declaration, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT `+declarationColumns+` FROM declarations WHERE service = ? ORDER BY seq DESC`), service)
	if err != nil {
		return nil, fmt.Errorf("store: list declarations of %q: %w", service, err)
	}
	defer rows.Close()
	var out []Declaration
	for rows.Next() {
		d, err := scanDeclaration(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list declarations of %q: %w", service, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list declarations of %q: %w", service, err)
	}
	return out, nil
}

// LatestDeclaration returns the service's newest declaration (highest
// Seq), or ErrNotFound if it never declared.
func (s *Store) LatestDeclaration(ctx context.Context, service string) (Declaration, error) {
	d, err := scanDeclaration(s.rdb.QueryRowContext(ctx, s.q(latestDeclarationSQL), service))
	if err != nil {
		return Declaration{}, wrap(err, "latest declaration", fmt.Sprintf("declaration of %q", service))
	}
	return d, nil
}

// ListLatestDeclarations returns the newest declaration of every service
// that declared, ordered by service.
func (s *Store) ListLatestDeclarations(ctx context.Context) ([]Declaration, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+declarationColumns+` FROM declarations
		WHERE seq IN (SELECT MAX(seq) FROM declarations GROUP BY service) ORDER BY service`)
	if err != nil {
		return nil, fmt.Errorf("store: list latest declarations: %w", err)
	}
	defer rows.Close()
	var ds []Declaration
	for rows.Next() {
		d, err := scanDeclaration(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list latest declarations: %w", err)
		}
		ds = append(ds, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list latest declarations: %w", err)
	}
	return ds, nil
}

const accessRequestColumns = `id, consumer, provider, resource, actions, consumer_version, state, requested_at, auto,
	decided_by, decided_by_id, decided_role, decided_at, reason,
	revoked_by, revoked_by_id, revoked_at, revoke_reason`

func scanAccessRequest(sc scanner) (AccessRequest, error) {
	var r AccessRequest
	var actions string
	err := sc.Scan(&r.ID, &r.Consumer, &r.Provider, &r.Resource, &actions, &r.ConsumerVersion, &r.State,
		timeCol{&r.RequestedAt}, &r.Auto,
		&r.DecidedBy, &r.DecidedByID, &r.DecidedRole, nullTimeCol{&r.DecidedAt}, &r.Reason,
		&r.RevokedBy, &r.RevokedByID, nullTimeCol{&r.RevokedAt}, &r.RevokeReason)
	if err != nil {
		return AccessRequest{}, err
	}
	if err := json.Unmarshal([]byte(actions), &r.Actions); err != nil {
		return AccessRequest{}, fmt.Errorf("access request %q actions: %w", r.ID, err)
	}
	if len(r.Actions) == 0 {
		r.Actions = nil
	}
	return r, nil
}

// collectAccessRequests reads access request rows and closes rows.
func collectAccessRequests(rows *sql.Rows) ([]AccessRequest, error) {
	defer rows.Close()
	var rs []AccessRequest
	for rows.Next() {
		r, err := scanAccessRequest(rows)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, rows.Err()
}

func validRequestState(state string) bool {
	switch state {
	case RequestPending, RequestApproved, RequestDenied, RequestSuperseded, RequestRevoked:
		return true
	}
	return false
}

// isPendingConflict reports whether err is a violation of the
// one-pending-request index (rather than of the primary key).
func isPendingConflict(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE // the ID is SQLITE_CONSTRAINT_PRIMARYKEY
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.ConstraintName == "access_requests_one_pending"
}

// CreateAccessRequest stores r. ErrConflict if its ID is taken or, when
// r.State is RequestPending, a pending request for the same (consumer,
// provider, resource) exists. If r.State is RequestApproved (automatic
// approval), the provider's access-list version is incremented in the same
// transaction and returned; otherwise the returned version is 0. Actions
// are stored as a JSON array.
func (s *Store) CreateAccessRequest(ctx context.Context, r AccessRequest) (int64, error) {
	const op = "create access request"
	if !validRequestState(r.State) {
		return 0, fmt.Errorf("store: %s %q: unknown state %q", op, r.ID, r.State)
	}
	actions := r.Actions
	if actions == nil {
		actions = []string{}
	}
	actionsJSON, err := json.Marshal(actions)
	if err != nil {
		return 0, fmt.Errorf("store: %s %q: %w", op, r.ID, err)
	}
	var version int64
	err = s.writeTx(ctx, op, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO access_requests (`+accessRequestColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			r.ID, r.Consumer, r.Provider, r.Resource, string(actionsJSON), r.ConsumerVersion, r.State,
			s.timeArg(r.RequestedAt), r.Auto,
			r.DecidedBy, r.DecidedByID, r.DecidedRole, s.nullTimeArg(r.DecidedAt), r.Reason,
			r.RevokedBy, r.RevokedByID, s.nullTimeArg(r.RevokedAt), r.RevokeReason)
		if isPendingConflict(err) {
			return fmt.Errorf("%w: a pending access request of %q for %q resource %q", ErrConflict, r.Consumer, r.Provider, r.Resource)
		}
		if err != nil {
			return wrap(err, op, fmt.Sprintf("access request %q", r.ID))
		}
		if r.State == RequestApproved {
			version, err = s.bumpVersion(ctx, tx, r.Provider)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	return version, nil
}

// GetAccessRequest returns the request with the given ID, or ErrNotFound.
func (s *Store) GetAccessRequest(ctx context.Context, id string) (AccessRequest, error) {
	r, err := scanAccessRequest(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+accessRequestColumns+` FROM access_requests WHERE id = ?`), id))
	if err != nil {
		return AccessRequest{}, wrap(err, "get access request", fmt.Sprintf("access request %q", id))
	}
	return r, nil
}

// ListAccessRequests returns the requests f selects, ordered by
// RequestedAt, then ID. A request matches if its state is one of f.States
// and its consumer, provider and resource equal the non-empty fields of f.
func (s *Store) ListAccessRequests(ctx context.Context, f AccessRequestFilter) ([]AccessRequest, error) {
	var (
		conds []string
		args  []any
	)
	if len(f.States) > 0 {
		conds = append(conds, `state IN (?`+strings.Repeat(`, ?`, len(f.States)-1)+`)`)
		for _, st := range f.States {
			args = append(args, st)
		}
	}
	for _, c := range []struct{ col, v string }{{"consumer", f.Consumer}, {"provider", f.Provider}, {"resource", f.Resource}} {
		if c.v != "" {
			conds = append(conds, c.col+` = ?`)
			args = append(args, c.v)
		}
	}
	query := `SELECT ` + accessRequestColumns + ` FROM access_requests`
	if len(conds) > 0 {
		query += ` WHERE ` + strings.Join(conds, ` AND `)
	}
	query += ` ORDER BY requested_at, id`
	rows, err := s.rdb.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: list access requests: %w", err)
	}
	rs, err := collectAccessRequests(rows)
	if err != nil {
		return nil, fmt.Errorf("store: list access requests: %w", err)
	}
	return rs, nil
}

// DecideAccessRequest moves a pending request to d.State (RequestApproved,
// RequestDenied or RequestSuperseded), recording d as the decision
// (DecidedBy, DecidedByID, DecidedRole, Reason, DecidedAt). Approval
// increments the provider's access-list version in the same transaction.
// It returns the updated request and the provider's list version after
// the change (0 unless approved). ErrNotFound if no request has that ID;
// if the request is not pending, it returns the request as it is and an
// error wrapping ErrConflict (the caller reads State to explain).
func (s *Store) DecideAccessRequest(ctx context.Context, id string, d AccessDecision) (AccessRequest, int64, error) {
	const op = "decide access request"
	switch d.State {
	case RequestApproved, RequestDenied, RequestSuperseded:
	default:
		return AccessRequest{}, 0, fmt.Errorf("store: %s %q: %q is not a decision", op, id, d.State)
	}
	return s.transition(ctx, op, id, RequestPending, d.State == RequestApproved,
		`state = ?, decided_by = ?, decided_by_id = ?, decided_role = ?, decided_at = ?, reason = ?`,
		d.State, d.By, d.ByID, d.Role, s.timeArg(d.At), d.Reason)
}

// RevokeAccessGrant moves an approved request to RequestRevoked, recording
// d as the revocation (RevokedBy, RevokedByID, RevokeReason, RevokedAt;
// d.State is ignored), and increments the provider's access-list version
// in the same transaction. It returns the updated request and the new
// version. ErrNotFound if no request has that ID; if the request is not
// approved, it returns the request as it is and an error wrapping
// ErrConflict.
func (s *Store) RevokeAccessGrant(ctx context.Context, id string, d AccessDecision) (AccessRequest, int64, error) {
	return s.transition(ctx, "revoke access grant", id, RequestApproved, true,
		`state = ?, revoked_by = ?, revoked_by_id = ?, revoked_at = ?, revoke_reason = ?`,
		RequestRevoked, d.By, d.ByID, s.timeArg(d.At), d.Reason)
}

// transition applies set (an UPDATE's SET list, with its args) to request
// id if it is in state from, and with bump increments the provider's
// access-list version, all in one transaction. The conditional UPDATE
// makes the state check and the change one atomic step, also between
// replicas on PostgreSQL.
func (s *Store) transition(ctx context.Context, op, id, from string, bump bool, set string, setArgs ...any) (AccessRequest, int64, error) {
	what := fmt.Sprintf("access request %q", id)
	args := append(setArgs, id, from)
	var (
		r       AccessRequest
		version int64
	)
	err := s.writeTx(ctx, op, func(tx *sql.Tx) error {
		var err error
		r, err = scanAccessRequest(tx.QueryRowContext(ctx, s.q(`UPDATE access_requests SET `+set+`
			WHERE id = ? AND state = ? RETURNING `+accessRequestColumns), args...))
		if errors.Is(err, sql.ErrNoRows) {
			// Missing, or not in state from: say which.
			r, err = scanAccessRequest(tx.QueryRowContext(ctx, s.q(`SELECT `+accessRequestColumns+` FROM access_requests WHERE id = ?`), id))
			if err != nil {
				return wrap(err, op, what)
			}
			return fmt.Errorf("%w: %s is %s, not %s", ErrConflict, what, r.State, from)
		}
		if err != nil {
			return wrap(err, op, what)
		}
		if bump {
			version, err = s.bumpVersion(ctx, tx, r.Provider)
		}
		return err
	})
	switch {
	case errors.Is(err, ErrConflict):
		return r, 0, err
	case err != nil:
		return AccessRequest{}, 0, err
	}
	return r, version, nil
}

// bumpVersionSQL increments a provider's version, creating it at 1. The
// row lock the upsert takes serializes concurrent increments, also between
// replicas.
const bumpVersionSQL = `INSERT INTO access_list_versions (provider, version) VALUES (?, 1)
	ON CONFLICT (provider) DO UPDATE SET version = access_list_versions.version + 1
	RETURNING version`

func (s *Store) bumpVersion(ctx context.Context, q querier, provider string) (int64, error) {
	var v int64
	if err := q.QueryRowContext(ctx, s.q(bumpVersionSQL), provider).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: bump access list version of %q: %w", provider, err)
	}
	return v, nil
}

func (s *Store) listVersion(ctx context.Context, q querier, provider string) (int64, error) {
	var v int64
	err := q.QueryRowContext(ctx, s.q(`SELECT version FROM access_list_versions WHERE provider = ?`), provider).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: access list version of %q: %w", provider, err)
	}
	return v, nil
}

// AccessListVersion returns the provider's access-list version, 0 if it
// has none.
func (s *Store) AccessListVersion(ctx context.Context, provider string) (int64, error) {
	return s.listVersion(ctx, s.rdb, provider)
}

// BumpAccessListVersion increments the provider's access-list version
// (creating it at 1) and returns the new version.
func (s *Store) BumpAccessListVersion(ctx context.Context, provider string) (int64, error) {
	return s.bumpVersion(ctx, s.wdb, provider)
}

// AccessListState reads the provider's access-list version, latest
// declaration and grants in one read transaction, a consistent snapshot:
// on PostgreSQL REPEATABLE READ READ ONLY, on SQLite one (deferred)
// transaction on the read pool, which under WAL sees a single snapshot
// from its first read on.
func (s *Store) AccessListState(ctx context.Context, provider string) (AccessListState, error) {
	const op = "access list state"
	opts := &sql.TxOptions{ReadOnly: true}
	if s.backend == BackendPostgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := s.rdb.BeginTx(ctx, opts)
	if err != nil {
		return AccessListState{}, fmt.Errorf("store: %s: %w", op, err)
	}
	defer tx.Rollback()

	var st AccessListState
	if st.Version, err = s.listVersion(ctx, tx, provider); err != nil {
		return AccessListState{}, err
	}
	d, err := scanDeclaration(tx.QueryRowContext(ctx, s.q(latestDeclarationSQL), provider))
	switch {
	case err == nil:
		st.Declaration = &d
	case !errors.Is(err, sql.ErrNoRows):
		return AccessListState{}, fmt.Errorf("store: %s of %q: %w", op, provider, err)
	}
	rows, err := tx.QueryContext(ctx, s.q(`SELECT `+accessRequestColumns+` FROM access_requests
		WHERE provider = ? AND state = ? ORDER BY consumer, resource, id`), provider, RequestApproved)
	if err != nil {
		return AccessListState{}, fmt.Errorf("store: %s of %q: %w", op, provider, err)
	}
	if st.Grants, err = collectAccessRequests(rows); err != nil {
		return AccessListState{}, fmt.Errorf("store: %s of %q: %w", op, provider, err)
	}
	if err := tx.Commit(); err != nil {
		return AccessListState{}, fmt.Errorf("store: %s: %w", op, err)
	}
	return st, nil
}
