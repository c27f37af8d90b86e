package store

import (
	"context"
	"fmt"
	"time"
)

// CreateTeam stores a new team; ErrConflict if the name is taken.
func (s *Store) CreateTeam(ctx context.Context, t Team) error {
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO teams (name, created_at) VALUES (?, ?)`), t.Name, s.timeArg(t.CreatedAt))
	return wrap(err, "create team", fmt.Sprintf("team %q", t.Name))
}

// GetTeam returns the named team, or ErrNotFound.
func (s *Store) GetTeam(ctx context.Context, name string) (Team, error) {
	t := Team{Name: name}
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT created_at FROM teams WHERE name = ?`), name).Scan(timeCol{&t.CreatedAt})
	if err != nil {
		return Team{}, wrap(err, "get team", fmt.Sprintf("team %q", name))
	}
	return t, nil
}

// ListTeams returns every team ordered by name.
func (s *Store) ListTeams(ctx context.Context) ([]Team, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT name, created_at FROM teams ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list teams: %w", err)
	}
	defer rows.Close()
	var teams []Team
	for rows.Next() {
		var t Team
		if err := rows.Scan(&t.Name, timeCol{&t.CreatedAt}); err != nil {
			return nil, fmt.Errorf("store: list teams: %w", err)
		}
		teams = append(teams, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list teams: %w", err)
	}
	return teams, nil
}

const serviceColumns = `name, team, level, svid_ttl, created_at, revoked_at`

func scanService(sc scanner) (Service, error) {
	var svc Service
	var ttl int64
	err := sc.Scan(&svc.Name, &svc.Team, &svc.Level, &ttl, timeCol{&svc.CreatedAt}, nullTimeCol{&svc.RevokedAt})
	svc.SVIDTTL = time.Duration(ttl)
	return svc, err
}

// CreateService stores a new service: ErrConflict if the name is taken,
// ErrNotFound if its team does not exist.
func (s *Store) CreateService(ctx context.Context, svc Service) error {
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO services (`+serviceColumns+`) VALUES (?, ?, ?, ?, ?, ?)`),
		svc.Name, svc.Team, svc.Level, int64(svc.SVIDTTL), s.timeArg(svc.CreatedAt), s.nullTimeArg(svc.RevokedAt))
	if isForeignKeyViolation(err) {
		return fmt.Errorf("%w: team %q", ErrNotFound, svc.Team)
	}
	return wrap(err, "create service", fmt.Sprintf("service %q", svc.Name))
}

// GetService returns the named service, or ErrNotFound.
func (s *Store) GetService(ctx context.Context, name string) (Service, error) {
	svc, err := scanService(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+serviceColumns+` FROM services WHERE name = ?`), name))
	if err != nil {
		return Service{}, wrap(err, "get service", fmt.Sprintf("service %q", name))
	}
	return svc, nil
}

// ListServices returns every service ordered by name.
func (s *Store) ListServices(ctx context.Context) ([]Service, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+serviceColumns+` FROM services ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list services: %w", err)
	}
	defer rows.Close()
	var svcs []Service
	for rows.Next() {
		svc, err := scanService(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list services: %w", err)
		}
		svcs = append(svcs, svc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list services: %w", err)
	}
	return svcs, nil
}

// RevokeService marks a service revoked at at; revoking again keeps the
// first time. It touches nothing else: the caller revokes the service's
// certificates and bootstrap tokens. ErrNotFound if the service does not
// exist.
func (s *Store) RevokeService(ctx context.Context, name string, at time.Time) error {
	res, err := s.wdb.ExecContext(ctx, s.q(`UPDATE services SET revoked_at = COALESCE(revoked_at, ?) WHERE name = ?`), s.timeArg(at), name)
	if err != nil {
		return wrap(err, "revoke service", fmt.Sprintf("service %q", name))
	}
	return mustAffect(res, "revoke service", fmt.Sprintf("service %q", name))
}
