-- Policy administration (SQLite): immutable, numbered versions per domain
-- (a service name or "edge"), the domain's head/active/shadow pointers,
-- and what each running PDP instance reported it applied. Times are
-- INTEGER microseconds since the Unix epoch (UTC).

-- head is the newest version number (the bundle revision); active the
-- enforced version (0: none yet); shadow the candidate evaluated beside
-- it (0: none).
CREATE TABLE policy_domains (
	domain TEXT PRIMARY KEY,
	head   INTEGER NOT NULL,
	active INTEGER NOT NULL,
	shadow INTEGER NOT NULL
);

-- content is the pushed source as JSON (policies, schema, tests); kind is
-- push, shadow or rollback; rollback_of the version whose content a
-- rollback republished (0 otherwise).
CREATE TABLE policy_versions (
	domain      TEXT NOT NULL,
	version     INTEGER NOT NULL,
	content     BLOB NOT NULL,
	digest      TEXT NOT NULL,
	kind        TEXT NOT NULL,
	rollback_of INTEGER NOT NULL,
	created_by  TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	PRIMARY KEY (domain, version)
);

CREATE TABLE policy_status (
	domain         TEXT NOT NULL,
	instance       TEXT NOT NULL,
	spiffe_id      TEXT NOT NULL,
	version        INTEGER NOT NULL,
	revision       INTEGER NOT NULL,
	shadow_version INTEGER NOT NULL,
	reported_at    INTEGER NOT NULL,
	PRIMARY KEY (domain, instance)
);
