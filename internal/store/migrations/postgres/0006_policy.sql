-- Policy administration (PostgreSQL): immutable, numbered versions per domain
-- (a service name or "edge"), the domain's head/active/shadow pointers,
-- and what each running PDP instance reported it applied.

-- head is the newest version number (the bundle revision); active the
-- enforced version (0: none yet); shadow the candidate evaluated beside
-- it (0: none).
CREATE TABLE policy_domains (
	domain TEXT PRIMARY KEY,
	head   BIGINT NOT NULL,
	active BIGINT NOT NULL,
	shadow BIGINT NOT NULL
);

-- content is the pushed source as JSON (policies, schema, tests); kind is
-- push, shadow or rollback; rollback_of the version whose content a
-- rollback republished (0 otherwise).
CREATE TABLE policy_versions (
	domain      TEXT NOT NULL,
	version     BIGINT NOT NULL,
	content     BYTEA NOT NULL,
	digest      TEXT NOT NULL,
	kind        TEXT NOT NULL,
	rollback_of BIGINT NOT NULL,
	created_by  TEXT NOT NULL,
	created_at  TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (domain, version)
);

CREATE TABLE policy_status (
	domain         TEXT NOT NULL,
	instance       TEXT NOT NULL,
	spiffe_id      TEXT NOT NULL,
	version        BIGINT NOT NULL,
	revision       BIGINT NOT NULL,
	shadow_version BIGINT NOT NULL,
	reported_at    TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (domain, instance)
);
