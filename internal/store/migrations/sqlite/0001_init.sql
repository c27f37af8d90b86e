-- ward schema v1 (SQLite). Times are INTEGER microseconds since the Unix
-- epoch, UTC; durations are INTEGER nanoseconds.

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
);

CREATE TABLE cas (
	id             TEXT PRIMARY KEY,
	kind           TEXT NOT NULL,
	team           TEXT NOT NULL DEFAULT '',
	parent_id      TEXT NOT NULL DEFAULT '',
	cert_der       BLOB NOT NULL,
	key_ciphertext BLOB NOT NULL,
	state          TEXT NOT NULL,
	created_at     INTEGER NOT NULL,
	not_after      INTEGER NOT NULL,
	revoked_at     INTEGER,
	crl_number     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX cas_created_at ON cas (created_at, id);

CREATE TABLE teams (
	name       TEXT PRIMARY KEY,
	created_at INTEGER NOT NULL
);

CREATE TABLE services (
	name       TEXT PRIMARY KEY,
	team       TEXT NOT NULL REFERENCES teams (name),
	level      TEXT NOT NULL,
	svid_ttl   INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	revoked_at INTEGER
);
CREATE INDEX services_team ON services (team);

CREATE TABLE bootstrap_tokens (
	id         TEXT PRIMARY KEY,
	service    TEXT NOT NULL REFERENCES services (name),
	hash       BLOB NOT NULL UNIQUE,
	created_at INTEGER NOT NULL,
	revoked_at INTEGER
);
CREATE INDEX bootstrap_tokens_service ON bootstrap_tokens (service);

CREATE TABLE admin_tokens (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	hash       BLOB NOT NULL UNIQUE,
	roles      TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	revoked_at INTEGER
);

-- No foreign keys on certificates: it is the hot insert path, and ward's own
-- component certificates belong to no registered service.
CREATE TABLE certificates (
	serial            TEXT PRIMARY KEY,
	service           TEXT NOT NULL,
	spiffe_id         TEXT NOT NULL,
	instance_id       TEXT NOT NULL,
	issuer_id         TEXT NOT NULL,
	not_before        INTEGER NOT NULL,
	not_after         INTEGER NOT NULL,
	der               BLOB NOT NULL,
	revoked_at        INTEGER,
	revocation_reason INTEGER NOT NULL DEFAULT 0
);
-- Partial indexes: live certificates by service and by issuer (revocation,
-- counting), revoked ones by expiry (CRLs, revocation snapshots).
CREATE INDEX certificates_live_service ON certificates (service, not_after) WHERE revoked_at IS NULL;
CREATE INDEX certificates_live_issuer ON certificates (issuer_id, not_after) WHERE revoked_at IS NULL;
CREATE INDEX certificates_revoked ON certificates (not_after) WHERE revoked_at IS NOT NULL;

CREATE TABLE events (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	kind       TEXT NOT NULL,
	payload    BLOB NOT NULL,
	created_at INTEGER NOT NULL
);
