-- Edge gateway (SQLite): bootstrap tokens of ward components (the
-- gateway), the route table, and the passport keys gateways register.
-- Times are INTEGER microseconds since the Unix epoch (UTC). Only token
-- hashes are stored.

CREATE TABLE component_tokens (
	id         TEXT PRIMARY KEY,
	component  TEXT NOT NULL,
	hash       BLOB NOT NULL UNIQUE,
	created_at INTEGER NOT NULL,
	expires_at INTEGER,
	revoked_at INTEGER
);

-- spec is the route as JSON; grant_ids the JSON array of the access
-- requests (grants to ward/gateway) it recorded. version is the route
-- table's version when the route was last set.
CREATE TABLE gateway_routes (
	name       TEXT PRIMARY KEY,
	spec       BLOB NOT NULL,
	grant_ids  TEXT NOT NULL,
	version    INTEGER NOT NULL,
	updated_by TEXT NOT NULL,
	updated_at INTEGER NOT NULL
);

-- One row: the route table's version, incremented by every change.
CREATE TABLE gateway_route_version (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	version INTEGER NOT NULL
);

CREATE TABLE passport_keys (
	kid        TEXT PRIMARY KEY,
	jwk        BLOB NOT NULL,
	serial     TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	not_after  INTEGER NOT NULL
);
CREATE INDEX passport_keys_not_after ON passport_keys (not_after);
