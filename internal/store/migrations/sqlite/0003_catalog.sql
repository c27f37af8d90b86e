-- Dependency catalogue (SQLite): the manifests services declare, the access
-- requests they cause (an approved request is a grant), and each provider's
-- access-list version. No foreign keys to services: the authority validates
-- names, and a revoked service keeps its history.

-- Every declaration is kept; the one with the highest seq is a service's
-- current one.
CREATE TABLE declarations (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	service     TEXT NOT NULL,
	version     TEXT NOT NULL,
	manifest    BLOB NOT NULL,
	serial      TEXT NOT NULL,
	declared_at INTEGER NOT NULL
);
CREATE INDEX declarations_service ON declarations (service, seq);

-- actions is a JSON array of strings; auto is 0 or 1. Decision and
-- revocation columns are '' / NULL until set.
CREATE TABLE access_requests (
	id               TEXT PRIMARY KEY,
	consumer         TEXT NOT NULL,
	provider         TEXT NOT NULL,
	resource         TEXT NOT NULL,
	actions          TEXT NOT NULL,
	consumer_version TEXT NOT NULL,
	state            TEXT NOT NULL,
	requested_at     INTEGER NOT NULL,
	auto             INTEGER NOT NULL DEFAULT 0,
	decided_by       TEXT NOT NULL DEFAULT '',
	decided_by_id    TEXT NOT NULL DEFAULT '',
	decided_role     TEXT NOT NULL DEFAULT '',
	decided_at       INTEGER,
	reason           TEXT NOT NULL DEFAULT '',
	revoked_by       TEXT NOT NULL DEFAULT '',
	revoked_by_id    TEXT NOT NULL DEFAULT '',
	revoked_at       INTEGER,
	revoke_reason    TEXT NOT NULL DEFAULT ''
);
-- At most one pending request per (consumer, provider, resource).
CREATE UNIQUE INDEX access_requests_one_pending ON access_requests (consumer, provider, resource) WHERE state = 'pending';
CREATE INDEX access_requests_provider ON access_requests (provider, state);
CREATE INDEX access_requests_consumer ON access_requests (consumer, state);

-- A provider's access-list version increases with every change of its
-- grants or declaration; no row means version 0.
CREATE TABLE access_list_versions (
	provider TEXT PRIMARY KEY,
	version  INTEGER NOT NULL
);
