package store

import (
	"context"
	"fmt"
	"time"
)

const caColumns = `id, kind, team, parent_id, cert_der, key_ciphertext, state, created_at, not_after, revoked_at`

func scanCA(sc scanner) (CA, error) {
	var ca CA
	err := sc.Scan(&ca.ID, &ca.Kind, &ca.Team, &ca.ParentID, &ca.CertDER, &ca.KeyCiphertext, &ca.State,
		timeCol{&ca.CreatedAt}, timeCol{&ca.NotAfter}, nullTimeCol{&ca.RevokedAt})
	return ca, err
}

func validCAState(state string) bool {
	switch state {
	case CAStatePrepared, CAStateActive, CAStateRetiring, CAStateRetired, CAStateRevoked:
		return true
	}
	return false
}

// CreateCA stores a new CA; ErrConflict if its ID is taken.
func (s *Store) CreateCA(ctx context.Context, ca CA) error {
	if ca.Kind != CAKindRoot && ca.Kind != CAKindIntermediate {
		return fmt.Errorf("store: create CA %q: unknown kind %q", ca.ID, ca.Kind)
	}
	if !validCAState(ca.State) {
		return fmt.Errorf("store: create CA %q: unknown state %q", ca.ID, ca.State)
	}
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO cas (`+caColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		ca.ID, ca.Kind, ca.Team, ca.ParentID, nonNil(ca.CertDER), nonNil(ca.KeyCiphertext), ca.State,
		s.timeArg(ca.CreatedAt), s.timeArg(ca.NotAfter), s.nullTimeArg(ca.RevokedAt))
	return wrap(err, "create CA", fmt.Sprintf("CA %q", ca.ID))
}

// GetCA returns the CA with the given ID, or ErrNotFound.
func (s *Store) GetCA(ctx context.Context, id string) (CA, error) {
	ca, err := scanCA(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+caColumns+` FROM cas WHERE id = ?`), id))
	if err != nil {
		return CA{}, wrap(err, "get CA", fmt.Sprintf("CA %q", id))
	}
	return ca, nil
}

// ListCAs returns every CA, oldest first (ties broken by ID).
func (s *Store) ListCAs(ctx context.Context) ([]CA, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+caColumns+` FROM cas ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list CAs: %w", err)
	}
	defer rows.Close()
	var cas []CA
	for rows.Next() {
		ca, err := scanCA(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list CAs: %w", err)
		}
		cas = append(cas, ca)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list CAs: %w", err)
	}
	return cas, nil
}

// SetCAState moves a CA to state. A non-nil revokedAt records the
// revocation time unless one is already recorded (the first one is kept);
// nil leaves it as it is. ErrNotFound if the CA does not exist.
func (s *Store) SetCAState(ctx context.Context, id, state string, revokedAt *time.Time) error {
	if !validCAState(state) {
		return fmt.Errorf("store: set CA %q state: unknown state %q", id, state)
	}
	res, err := s.wdb.ExecContext(ctx, s.q(`UPDATE cas SET state = ?, revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`),
		state, s.nullTimeArg(revokedAt), id)
	if err != nil {
		return wrap(err, "set CA state", fmt.Sprintf("CA %q", id))
	}
	return mustAffect(res, "set CA state", fmt.Sprintf("CA %q", id))
}

// NextCRLNumber atomically increments and returns the CRL number of a CA;
// the first call returns 1. ErrNotFound if the CA does not exist.
func (s *Store) NextCRLNumber(ctx context.Context, caID string) (int64, error) {
	var n int64
	err := s.wdb.QueryRowContext(ctx, s.q(`UPDATE cas SET crl_number = crl_number + 1 WHERE id = ? RETURNING crl_number`), caID).Scan(&n)
	if err != nil {
		return 0, wrap(err, "next CRL number", fmt.Sprintf("CA %q", caID))
	}
	return n, nil
}
