-- Token service (PostgreSQL): OAuth clients, API keys, revoked access tokens
-- and the service's signing keys. Lists (grant types, scopes, audiences)
-- are JSON arrays and API key metadata a JSON object, all in TEXT (as in
-- SQLite); durations are BIGINT nanoseconds.
-- Secrets are never stored, only their SHA-256.

-- secret_hash is NULL for a client without a secret (tls_client_auth,
-- private_key_jwt); jwks is NULL unless the client has public keys.
CREATE TABLE oauth_clients (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	grant_types TEXT NOT NULL,
	scopes      TEXT NOT NULL,
	audiences   TEXT NOT NULL,
	auth_method TEXT NOT NULL,
	secret_hash BYTEA,
	tls_subject TEXT NOT NULL DEFAULT '',
	jwks        BYTEA,
	token_alg   TEXT NOT NULL DEFAULT '',
	token_ttl   BIGINT NOT NULL DEFAULT 0,
	created_at  TIMESTAMPTZ NOT NULL,
	revoked_at  TIMESTAMPTZ
);

CREATE TABLE api_keys (
	id         TEXT PRIMARY KEY,
	hash       BYTEA NOT NULL UNIQUE,
	subject    TEXT NOT NULL,
	tenant     TEXT NOT NULL DEFAULT '',
	scopes     TEXT NOT NULL,
	metadata   TEXT NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	expires_at TIMESTAMPTZ,
	revoked_at TIMESTAMPTZ
);
CREATE INDEX api_keys_created_at ON api_keys (created_at, id);

-- A revoked access token is remembered until it would have expired.
CREATE TABLE revoked_tokens (
	jti        TEXT PRIMARY KEY,
	client_id  TEXT NOT NULL,
	expires_at TIMESTAMPTZ NOT NULL,
	revoked_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);

-- key_ciphertext is the PKCS#8 private key sealed by the KMS; public_jwk
-- the public JWK (JSON) the JWKS endpoint publishes.
CREATE TABLE signing_keys (
	id             TEXT PRIMARY KEY,
	alg            TEXT NOT NULL,
	key_ciphertext BYTEA NOT NULL,
	public_jwk     BYTEA NOT NULL,
	state          TEXT NOT NULL,
	created_at     TIMESTAMPTZ NOT NULL,
	activated_at   TIMESTAMPTZ,
	retired_at     TIMESTAMPTZ
);
