package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"
)

const certificateColumns = `serial, service, spiffe_id, instance_id, issuer_id, not_before, not_after, der, revoked_at, revocation_reason`

const insertCertificateSQL = `INSERT INTO certificates (` + certificateColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

func scanCertificate(sc scanner) (Certificate, error) {
	var c Certificate
	err := sc.Scan(&c.Serial, &c.Service, &c.SPIFFEID, &c.InstanceID, &c.IssuerID,
		timeCol{&c.NotBefore}, timeCol{&c.NotAfter}, &c.DER, nullTimeCol{&c.RevokedAt}, &c.RevocationReason)
	return c, err
}

// InsertCertificate records an issued certificate; ErrConflict if its
// serial is taken. It is on the issuance hot path: one prepared statement,
// one autocommit row.
func (s *Store) InsertCertificate(ctx context.Context, c Certificate) error {
	_, err := s.insertCert.ExecContext(ctx,
		c.Serial, c.Service, c.SPIFFEID, c.InstanceID, c.IssuerID,
		s.timeArg(c.NotBefore), s.timeArg(c.NotAfter), nonNil(c.DER), s.nullTimeArg(c.RevokedAt), c.RevocationReason)
	return wrap(err, "insert certificate", fmt.Sprintf("certificate %q", c.Serial))
}

// GetCertificate returns the certificate with the given serial, or
// ErrNotFound.
func (s *Store) GetCertificate(ctx context.Context, serial string) (Certificate, error) {
	c, err := scanCertificate(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+certificateColumns+` FROM certificates WHERE serial = ?`), serial))
	if err != nil {
		return Certificate{}, wrap(err, "get certificate", fmt.Sprintf("certificate %q", serial))
	}
	return c, nil
}

// RevokeCertificate revokes one certificate with an RFC 5280 reason code.
// Revoking it again changes nothing: the first time and reason are kept.
// ErrNotFound if no certificate has that serial.
func (s *Store) RevokeCertificate(ctx context.Context, serial string, at time.Time, reason int) error {
	res, err := s.wdb.ExecContext(ctx, s.q(`UPDATE certificates SET
			revocation_reason = CASE WHEN revoked_at IS NULL THEN ? ELSE revocation_reason END,
			revoked_at = COALESCE(revoked_at, ?)
		WHERE serial = ?`), reason, s.timeArg(at), serial)
	if err != nil {
		return wrap(err, "revoke certificate", fmt.Sprintf("certificate %q", serial))
	}
	return mustAffect(res, "revoke certificate", fmt.Sprintf("certificate %q", serial))
}

// RevokeCertificatesByService revokes the certificates of a service that
// are neither revoked nor expired at at, and returns their serials, sorted.
func (s *Store) RevokeCertificatesByService(ctx context.Context, service string, at time.Time, reason int) ([]string, error) {
	return s.revokeWhere(ctx, "revoke certificates by service", `service = ?`, service, at, reason)
}

// RevokeCertificatesByIssuer revokes the certificates issued by a CA that
// are neither revoked nor expired at at, and returns their serials, sorted.
func (s *Store) RevokeCertificatesByIssuer(ctx context.Context, caID string, at time.Time, reason int) ([]string, error) {
	return s.revokeWhere(ctx, "revoke certificates by issuer", `issuer_id = ?`, caID, at, reason)
}

func (s *Store) revokeWhere(ctx context.Context, op, cond string, key any, at time.Time, reason int) ([]string, error) {
	ts := s.timeArg(at)
	rows, err := s.wdb.QueryContext(ctx, s.q(`UPDATE certificates SET revoked_at = ?, revocation_reason = ?
		WHERE `+cond+` AND revoked_at IS NULL AND not_after > ? RETURNING serial`), ts, reason, key, ts)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	serials, err := collectStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	slices.Sort(serials)
	return serials, nil
}

// ListRevokedCertificates returns the revoked certificates issued by a CA
// whose NotAfter is after notAfterAfter (the content of its CRL), ordered
// by serial.
func (s *Store) ListRevokedCertificates(ctx context.Context, issuerID string, notAfterAfter time.Time) ([]Certificate, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT `+certificateColumns+` FROM certificates
		WHERE revoked_at IS NOT NULL AND not_after > ? AND issuer_id = ? ORDER BY serial`), s.timeArg(notAfterAfter), issuerID)
	if err != nil {
		return nil, fmt.Errorf("store: list revoked certificates: %w", err)
	}
	defer rows.Close()
	var certs []Certificate
	for rows.Next() {
		c, err := scanCertificate(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list revoked certificates: %w", err)
		}
		certs = append(certs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list revoked certificates: %w", err)
	}
	return certs, nil
}

// ListRevokedSerials returns the serials of every revoked certificate whose
// NotAfter is after notAfterAfter, sorted: the revocation snapshot SDKs get.
func (s *Store) ListRevokedSerials(ctx context.Context, notAfterAfter time.Time) ([]string, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT serial FROM certificates
		WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY serial`), s.timeArg(notAfterAfter))
	if err != nil {
		return nil, fmt.Errorf("store: list revoked serials: %w", err)
	}
	serials, err := collectStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("store: list revoked serials: %w", err)
	}
	return serials, nil
}

// CountActiveCertificates counts the unrevoked certificates issued by a CA
// with NotAfter after now.
func (s *Store) CountActiveCertificates(ctx context.Context, issuerID string, now time.Time) (int, error) {
	var n int
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM certificates
		WHERE issuer_id = ? AND revoked_at IS NULL AND not_after > ?`), issuerID, s.timeArg(now)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: count active certificates: %w", err)
	}
	return n, nil
}

// collectStrings reads a single string column and closes rows.
func collectStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
