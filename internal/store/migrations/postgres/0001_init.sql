-- ward schema v1 (PostgreSQL). Durations are BIGINT nanoseconds.

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value BYTEA NOT NULL
);

CREATE TABLE cas (
	id             TEXT PRIMARY KEY,
	kind           TEXT NOT NULL,
	team           TEXT NOT NULL DEFAULT '',
	parent_id      TEXT NOT NULL DEFAULT '',
	cert_der       BYTEA NOT NULL,
	key_ciphertext BYTEA NOT NULL,
	state          TEXT NOT NULL,
	created_at     TIMESTAMPTZ NOT NULL,
	not_after      TIMESTAMPTZ NOT NULL,
	revoked_at     TIMESTAMPTZ,
	crl_number     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX cas_created_at ON cas (created_at, id);

CREATE TABLE teams (
	name       TEXT PRIMARY KEY,
	created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE services (
	name       TEXT PRIMARY KEY,
	team       TEXT NOT NULL REFERENCES teams (name),
	level      TEXT NOT NULL,
	svid_ttl   BIGINT NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	revoked_at TIMESTAMPTZ
);
CREATE INDEX services_team ON services (team);

CREATE TABLE bootstrap_tokens (
	id         TEXT PRIMARY KEY,
	service    TEXT NOT NULL REFERENCES services (name),
	hash       BYTEA NOT NULL UNIQUE,
	created_at TIMESTAMPTZ NOT NULL,
	revoked_at TIMESTAMPTZ
);
CREATE INDEX bootstrap_tokens_service ON bootstrap_tokens (service);

CREATE TABLE admin_tokens (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	hash       BYTEA NOT NULL UNIQUE,
	roles      TEXT NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	revoked_at TIMESTAMPTZ
);

-- No foreign keys on certificates: it is the hot insert path, and ward's own
-- component certificates belong to no registered service.
CREATE TABLE certificates (
	serial            TEXT PRIMARY KEY,
	service           TEXT NOT NULL,
	spiffe_id         TEXT NOT NULL,
	instance_id       TEXT NOT NULL,
	issuer_id         TEXT NOT NULL,
	not_before        TIMESTAMPTZ NOT NULL,
	not_after         TIMESTAMPTZ NOT NULL,
	der               BYTEA NOT NULL,
	revoked_at        TIMESTAMPTZ,
	revocation_reason INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX certificates_live_service ON certificates (service, not_after) WHERE revoked_at IS NULL;
CREATE INDEX certificates_live_issuer ON certificates (issuer_id, not_after) WHERE revoked_at IS NULL;
CREATE INDEX certificates_revoked ON certificates (not_after) WHERE revoked_at IS NOT NULL;

CREATE TABLE events (
	seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	kind       TEXT NOT NULL,
	payload    BYTEA NOT NULL,
	created_at TIMESTAMPTZ NOT NULL
);
