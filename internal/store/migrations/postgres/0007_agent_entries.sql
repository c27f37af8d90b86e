-- Workload registration entries (PostgreSQL): a node agent issues the SVID of
-- service to a local process that matches every set selector. host ''
-- means every agent; times are TIMESTAMPTZ.
CREATE TABLE agent_entries (
	id         TEXT PRIMARY KEY,
	service    TEXT NOT NULL,
	host       TEXT NOT NULL,
	uid        INTEGER,
	gid        INTEGER,
	path       TEXT NOT NULL,
	created_by TEXT NOT NULL,
	created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX agent_entries_host ON agent_entries (host);
