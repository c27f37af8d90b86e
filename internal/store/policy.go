package store

import (
	"context"
	"database/sql"
	"time"
)

// PolicyDomain is a policy domain's pointers: its newest version (Head,
// the bundle revision), the enforced one (Active) and the candidate
// evaluated beside it (Shadow); 0 means none.
type PolicyDomain struct {
	Domain               string
	Head, Active, Shadow int64
}

// PolicyVersion is one immutable policy version.
type PolicyVersion struct {
	Domain     string
	Version    int64
	Content    []byte // the pushed source, JSON
	Digest     string
	Kind       string // push, shadow, rollback
	RollbackOf int64
	CreatedBy  string
	CreatedAt  time.Time
}

// PolicyStatus is what a PDP instance last reported.
type PolicyStatus struct {
	Domain, Instance, SPIFFEID string
	Version, Revision, Shadow  int64
	ReportedAt                 time.Time
}

// Kinds of policy versions.
const (
	PolicyKindPush     = "push"
	PolicyKindShadow   = "shadow"
	PolicyKindRollback = "rollback"
)

// AddPolicyVersion stores v as the domain's next version (v.Version is
// ignored) and moves the pointers: a shadow version becomes Shadow; any
// other becomes Active and clears Shadow. It returns the stored version
// and the domain's new pointers.
func (s *Store) AddPolicyVersion(ctx context.Context, v PolicyVersion) (PolicyVersion, PolicyDomain, error) {
	const op = "add policy version"
	var d PolicyDomain
	err := s.writeTx(ctx, op, func(tx *sql.Tx) error {
		var head int64
		if err := tx.QueryRowContext(ctx, s.q(`INSERT INTO policy_domains (domain, head, active, shadow) VALUES (?, 1, 0, 0)
			ON CONFLICT (domain) DO UPDATE SET head = policy_domains.head + 1 RETURNING head`), v.Domain).Scan(&head); err != nil {
			return err
		}
		v.Version = head
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO policy_versions (domain, version, content, digest, kind, rollback_of, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
			v.Domain, v.Version, v.Content, v.Digest, v.Kind, v.RollbackOf, v.CreatedBy, s.timeArg(v.CreatedAt)); err != nil {
			return err
		}
		q := `UPDATE policy_domains SET active = ?, shadow = 0 WHERE domain = ? RETURNING domain, head, active, shadow`
		if v.Kind == PolicyKindShadow {
			q = `UPDATE policy_domains SET shadow = ? WHERE domain = ? RETURNING domain, head, active, shadow`
		}
		return tx.QueryRowContext(ctx, s.q(q), v.Version, v.Domain).Scan(&d.Domain, &d.Head, &d.Active, &d.Shadow)
	})
	return v, d, wrap(err, op, "policy version")
}

// ClearPolicyShadow drops a domain's shadow candidate; it bumps Head so
// that PDPs see a new revision.
func (s *Store) ClearPolicyShadow(ctx context.Context, domain string) (PolicyDomain, error) {
	var d PolicyDomain
	err := s.wdb.QueryRowContext(ctx, s.q(`UPDATE policy_domains SET shadow = 0, head = head + 1 WHERE domain = ? AND shadow <> 0 RETURNING domain, head, active, shadow`), domain).
		Scan(&d.Domain, &d.Head, &d.Active, &d.Shadow)
	return d, wrap(err, "clear policy shadow", "policy domain with a shadow version")
}

// GetPolicyDomain returns a domain's pointers, or ErrNotFound when it has
// never had a version.
func (s *Store) GetPolicyDomain(ctx context.Context, domain string) (PolicyDomain, error) {
	var d PolicyDomain
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT domain, head, active, shadow FROM policy_domains WHERE domain = ?`), domain).Scan(&d.Domain, &d.Head, &d.Active, &d.Shadow)
	return d, wrap(err, "get policy domain", "policy domain")
}

// ListPolicyDomains returns every domain, by name.
func (s *Store) ListPolicyDomains(ctx context.Context) ([]PolicyDomain, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT domain, head, active, shadow FROM policy_domains ORDER BY domain`)
	if err != nil {
		return nil, wrap(err, "list policy domains", "")
	}
	defer rows.Close()
	var out []PolicyDomain
	for rows.Next() {
		var d PolicyDomain
		if err := rows.Scan(&d.Domain, &d.Head, &d.Active, &d.Shadow); err != nil {
			return nil, wrap(err, "list policy domains", "")
		}
		out = append(out, d)
	}
	return out, wrap(rows.Err(), "list policy domains", "")
}

const policyVersionColumns = `domain, version, content, digest, kind, rollback_of, created_by, created_at`

func scanPolicyVersion(sc scanner) (PolicyVersion, error) {
	var v PolicyVersion
	err := sc.Scan(&v.Domain, &v.Version, &v.Content, &v.Digest, &v.Kind, &v.RollbackOf, &v.CreatedBy, timeCol{&v.CreatedAt})
	return v, err
}

// GetPolicyVersion returns one version, or ErrNotFound.
func (s *Store) GetPolicyVersion(ctx context.Context, domain string, version int64) (PolicyVersion, error) {
	v, err := scanPolicyVersion(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+policyVersionColumns+` FROM policy_versions WHERE domain = ? AND version = ?`), domain, version))
	return v, wrap(err, "get policy version", "policy version")
}

// ListPolicyVersions returns a domain's versions, newest first, at most
// limit.
func (s *Store) ListPolicyVersions(ctx context.Context, domain string, limit int) ([]PolicyVersion, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT `+policyVersionColumns+` FROM policy_versions WHERE domain = ? ORDER BY version DESC LIMIT ?`), domain, limit)
	if err != nil {
		return nil, wrap(err, "list policy versions", "")
	}
	defer rows.Close()
	var out []PolicyVersion
	for rows.Next() {
		v, err := scanPolicyVersion(rows)
		if err != nil {
			return nil, wrap(err, "list policy versions", "")
		}
		out = append(out, v)
	}
	return out, wrap(rows.Err(), "list policy versions", "")
}

// PutPolicyStatus records instances' reports in one transaction and
// forgets reports older than pruneBefore.
func (s *Store) PutPolicyStatus(ctx context.Context, sts []PolicyStatus, pruneBefore time.Time) error {
	const op = "put policy status"
	return wrap(s.writeTx(ctx, op, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM policy_status WHERE reported_at < ?`), s.timeArg(pruneBefore)); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, s.q(`INSERT INTO policy_status (domain, instance, spiffe_id, version, revision, shadow_version, reported_at) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (domain, instance) DO UPDATE SET spiffe_id = excluded.spiffe_id, version = excluded.version, revision = excluded.revision,
			shadow_version = excluded.shadow_version, reported_at = excluded.reported_at`))
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, st := range sts {
			if _, err := stmt.ExecContext(ctx, st.Domain, st.Instance, st.SPIFFEID, st.Version, st.Revision, st.Shadow, s.timeArg(st.ReportedAt)); err != nil {
				return err
			}
		}
		return nil
	}), op, "")
}

// ListPolicyStatus returns a domain's reports newer than since, by
// instance.
func (s *Store) ListPolicyStatus(ctx context.Context, domain string, since time.Time) ([]PolicyStatus, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT domain, instance, spiffe_id, version, revision, shadow_version, reported_at FROM policy_status
		WHERE domain = ? AND reported_at >= ? ORDER BY instance`), domain, s.timeArg(since))
	if err != nil {
		return nil, wrap(err, "list policy status", "")
	}
	defer rows.Close()
	var out []PolicyStatus
	for rows.Next() {
		var st PolicyStatus
		if err := rows.Scan(&st.Domain, &st.Instance, &st.SPIFFEID, &st.Version, &st.Revision, &st.Shadow, timeCol{&st.ReportedAt}); err != nil {
			return nil, wrap(err, "list policy status", "")
		}
		out = append(out, st)
	}
	return out, wrap(rows.Err(), "list policy status", "")
}
