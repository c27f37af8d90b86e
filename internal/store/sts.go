package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The token service's tables: OAuth clients, API keys, revoked access
// tokens and signing keys. String lists are stored as JSON arrays and API
// key metadata as a JSON object; an empty list or map comes back nil, as
// does an empty SecretHash or JWKS (stored as NULL).

// marshalStrings encodes a list as a JSON array; nil is stored as [].
func marshalStrings(list []string) (string, error) {
	if list == nil {
		list = []string{}
	}
	b, err := json.Marshal(list)
	return string(b), err
}

// unmarshalStrings decodes a JSON array; an empty one is nil.
func unmarshalStrings(s string) ([]string, error) {
	var list []string
	if err := json.Unmarshal([]byte(s), &list); err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, nil
	}
	return list, nil
}

// nilIfEmpty stores an empty optional byte column as NULL.
func nilIfEmpty(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// collectRows scans every row with scan and closes rows.
func collectRows[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

const oauthClientColumns = `id, name, grant_types, scopes, audiences, auth_method, secret_hash,
	tls_subject, jwks, token_alg, token_ttl, created_at, revoked_at`

func scanOAuthClient(sc scanner) (OAuthClient, error) {
	var (
		c                         OAuthClient
		grants, scopes, audiences string
		ttl                       int64
		secretHash, jwks          []byte
	)
	err := sc.Scan(&c.ID, &c.Name, &grants, &scopes, &audiences, &c.AuthMethod, &secretHash,
		&c.TLSSubject, &jwks, &c.TokenAlg, &ttl, timeCol{&c.CreatedAt}, nullTimeCol{&c.RevokedAt})
	if err != nil {
		return OAuthClient{}, err
	}
	c.TokenTTL = time.Duration(ttl)
	if len(secretHash) > 0 {
		c.SecretHash = secretHash
	}
	if len(jwks) > 0 {
		c.JWKS = jwks
	}
	for _, f := range []struct {
		name string
		src  string
		dst  *[]string
	}{{"grant types", grants, &c.GrantTypes}, {"scopes", scopes, &c.Scopes}, {"audiences", audiences, &c.Audiences}} {
		if *f.dst, err = unmarshalStrings(f.src); err != nil {
			return OAuthClient{}, fmt.Errorf("oauth client %q %s: %w", c.ID, f.name, err)
		}
	}
	return c, nil
}

// CreateOAuthClient stores a new OAuth client; ErrConflict if its ID or
// name is taken. GrantTypes, Scopes and Audiences are stored as JSON
// arrays; an empty SecretHash or JWKS is stored as none (NULL).
func (s *Store) CreateOAuthClient(ctx context.Context, c OAuthClient) error {
	const op = "create oauth client"
	var lists [3]string
	for i, l := range [][]string{c.GrantTypes, c.Scopes, c.Audiences} {
		var err error
		if lists[i], err = marshalStrings(l); err != nil {
			return fmt.Errorf("store: %s %q: %w", op, c.ID, err)
		}
	}
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO oauth_clients (`+oauthClientColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		c.ID, c.Name, lists[0], lists[1], lists[2], c.AuthMethod, nilIfEmpty(c.SecretHash),
		c.TLSSubject, nilIfEmpty(c.JWKS), c.TokenAlg, int64(c.TokenTTL), s.timeArg(c.CreatedAt), s.nullTimeArg(c.RevokedAt))
	return wrap(err, op, fmt.Sprintf("oauth client %q (name %q)", c.ID, c.Name))
}

// GetOAuthClient returns the client with the given ID, revoked or not, or
// ErrNotFound.
func (s *Store) GetOAuthClient(ctx context.Context, id string) (OAuthClient, error) {
	c, err := scanOAuthClient(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+oauthClientColumns+` FROM oauth_clients WHERE id = ?`), id))
	if err != nil {
		return OAuthClient{}, wrap(err, "get oauth client", fmt.Sprintf("oauth client %q", id))
	}
	return c, nil
}

// GetOAuthClientByName returns the client with the given name, revoked or
// not, or ErrNotFound.
func (s *Store) GetOAuthClientByName(ctx context.Context, name string) (OAuthClient, error) {
	c, err := scanOAuthClient(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+oauthClientColumns+` FROM oauth_clients WHERE name = ?`), name))
	if err != nil {
		return OAuthClient{}, wrap(err, "get oauth client", fmt.Sprintf("oauth client named %q", name))
	}
	return c, nil
}

// ListOAuthClients returns every client, revoked or not, ordered by name.
func (s *Store) ListOAuthClients(ctx context.Context) ([]OAuthClient, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+oauthClientColumns+` FROM oauth_clients ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list oauth clients: %w", err)
	}
	cs, err := collectRows(rows, scanOAuthClient)
	if err != nil {
		return nil, fmt.Errorf("store: list oauth clients: %w", err)
	}
	return cs, nil
}

// RevokeOAuthClient marks a client revoked at at; revoking again keeps the
// first time. ErrNotFound if no client has that ID.
func (s *Store) RevokeOAuthClient(ctx context.Context, id string, at time.Time) error {
	const op = "revoke oauth client"
	res, err := s.wdb.ExecContext(ctx, s.q(`UPDATE oauth_clients SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`), s.timeArg(at), id)
	if err != nil {
		return wrap(err, op, fmt.Sprintf("oauth client %q", id))
	}
	return mustAffect(res, op, fmt.Sprintf("oauth client %q", id))
}

const apiKeyColumns = `id, hash, subject, tenant, scopes, metadata, created_at, expires_at, revoked_at`

func scanAPIKey(sc scanner) (APIKey, error) {
	var (
		k                APIKey
		scopes, metadata string
	)
	err := sc.Scan(&k.ID, &k.Hash, &k.Subject, &k.Tenant, &scopes, &metadata,
		timeCol{&k.CreatedAt}, nullTimeCol{&k.ExpiresAt}, nullTimeCol{&k.RevokedAt})
	if err != nil {
		return APIKey{}, err
	}
	k.Hash = nonNil(k.Hash)
	if k.Scopes, err = unmarshalStrings(scopes); err != nil {
		return APIKey{}, fmt.Errorf("api key %q scopes: %w", k.ID, err)
	}
	if err := json.Unmarshal([]byte(metadata), &k.Metadata); err != nil {
		return APIKey{}, fmt.Errorf("api key %q metadata: %w", k.ID, err)
	}
	if len(k.Metadata) == 0 {
		k.Metadata = nil
	}
	return k, nil
}

// CreateAPIKey stores an API key; ErrConflict if its ID or hash is taken.
// Scopes are stored as a JSON array and Metadata as a JSON object.
func (s *Store) CreateAPIKey(ctx context.Context, k APIKey) error {
	const op = "create api key"
	scopes, err := marshalStrings(k.Scopes)
	if err != nil {
		return fmt.Errorf("store: %s %q: %w", op, k.ID, err)
	}
	md := k.Metadata
	if md == nil {
		md = map[string]string{}
	}
	metadata, err := json.Marshal(md)
	if err != nil {
		return fmt.Errorf("store: %s %q: %w", op, k.ID, err)
	}
	_, err = s.wdb.ExecContext(ctx, s.q(`INSERT INTO api_keys (`+apiKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		k.ID, nonNil(k.Hash), k.Subject, k.Tenant, scopes, string(metadata),
		s.timeArg(k.CreatedAt), s.nullTimeArg(k.ExpiresAt), s.nullTimeArg(k.RevokedAt))
	return wrap(err, op, fmt.Sprintf("api key %q", k.ID))
}

// GetAPIKey returns the API key with the given ID, revoked or expired or
// not, or ErrNotFound.
func (s *Store) GetAPIKey(ctx context.Context, id string) (APIKey, error) {
	k, err := scanAPIKey(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`), id))
	if err != nil {
		return APIKey{}, wrap(err, "get api key", fmt.Sprintf("api key %q", id))
	}
	return k, nil
}

// GetAPIKeyByHash returns the API key whose SHA-256 is hash, revoked or
// expired or not, or ErrNotFound.
func (s *Store) GetAPIKeyByHash(ctx context.Context, hash []byte) (APIKey, error) {
	k, err := scanAPIKey(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+apiKeyColumns+` FROM api_keys WHERE hash = ?`), nonNil(hash)))
	if err != nil {
		return APIKey{}, wrap(err, "get api key", "api key")
	}
	return k, nil
}

// ListAPIKeys returns every API key, oldest first (ties broken by ID).
func (s *Store) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list api keys: %w", err)
	}
	ks, err := collectRows(rows, scanAPIKey)
	if err != nil {
		return nil, fmt.Errorf("store: list api keys: %w", err)
	}
	return ks, nil
}

// RevokeAPIKey marks an API key revoked at at; revoking again keeps the
// first time. ErrNotFound if no key has that ID.
func (s *Store) RevokeAPIKey(ctx context.Context, id string, at time.Time) error {
	const op = "revoke api key"
	res, err := s.wdb.ExecContext(ctx, s.q(`UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`), s.timeArg(at), id)
	if err != nil {
		return wrap(err, op, fmt.Sprintf("api key %q", id))
	}
	return mustAffect(res, op, fmt.Sprintf("api key %q", id))
}

const revokedTokenColumns = `jti, client_id, expires_at, revoked_at`

func scanRevokedToken(sc scanner) (RevokedToken, error) {
	var r RevokedToken
	err := sc.Scan(&r.JTI, &r.ClientID, timeCol{&r.ExpiresAt}, timeCol{&r.RevokedAt})
	return r, err
}

// RevokeToken records the revocation of an access token. It is
// idempotent: revoking a jti again succeeds and keeps the first record.
func (s *Store) RevokeToken(ctx context.Context, r RevokedToken) error {
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO revoked_tokens (`+revokedTokenColumns+`) VALUES (?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING`),
		r.JTI, r.ClientID, s.timeArg(r.ExpiresAt), s.timeArg(r.RevokedAt))
	if err != nil {
		return fmt.Errorf("store: revoke token %q: %w", r.JTI, err)
	}
	return nil
}

// IsTokenRevoked reports whether a revocation of jti is recorded (pruned
// records, of tokens past their expiry, are not).
func (s *Store) IsTokenRevoked(ctx context.Context, jti string) (bool, error) {
	var one int
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT 1 FROM revoked_tokens WHERE jti = ?`), jti).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("store: is token revoked: %w", err)
	}
	return true, nil
}

// ListRevokedTokens returns the revoked tokens that have not yet expired
// (ExpiresAt after now), ordered by ExpiresAt, then JTI.
func (s *Store) ListRevokedTokens(ctx context.Context, now time.Time) ([]RevokedToken, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT `+revokedTokenColumns+` FROM revoked_tokens WHERE expires_at > ? ORDER BY expires_at, jti`), s.timeArg(now))
	if err != nil {
		return nil, fmt.Errorf("store: list revoked tokens: %w", err)
	}
	rs, err := collectRows(rows, scanRevokedToken)
	if err != nil {
		return nil, fmt.Errorf("store: list revoked tokens: %w", err)
	}
	return rs, nil
}

// PruneRevokedTokens deletes the records of revoked tokens that have
// expired (ExpiresAt at or before now) and reports how many it deleted.
func (s *Store) PruneRevokedTokens(ctx context.Context, now time.Time) (int, error) {
	res, err := s.wdb.ExecContext(ctx, s.q(`DELETE FROM revoked_tokens WHERE expires_at <= ?`), s.timeArg(now))
	if err != nil {
		return 0, fmt.Errorf("store: prune revoked tokens: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: prune revoked tokens: %w", err)
	}
	return int(n), nil
}

const signingKeyColumns = `id, alg, key_ciphertext, public_jwk, state, created_at, activated_at, retired_at`

func scanSigningKey(sc scanner) (SigningKey, error) {
	var k SigningKey
	err := sc.Scan(&k.ID, &k.Alg, &k.KeyCiphertext, &k.PublicJWK, &k.State,
		timeCol{&k.CreatedAt}, nullTimeCol{&k.ActivatedAt}, nullTimeCol{&k.RetiredAt})
	if err != nil {
		return SigningKey{}, err
	}
	k.KeyCiphertext = nonNil(k.KeyCiphertext)
	k.PublicJWK = nonNil(k.PublicJWK)
	return k, nil
}

func validKeyState(state string) bool {
	switch state {
	case KeyStateNext, KeyStateActive, KeyStateRetiring, KeyStateRetired:
		return true
	}
	return false
}

// PutSigningKey stores a new signing key as given (its times included);
// ErrConflict if its ID is taken.
func (s *Store) PutSigningKey(ctx context.Context, k SigningKey) error {
	const op = "put signing key"
	if !validKeyState(k.State) {
		return fmt.Errorf("store: %s %q: unknown state %q", op, k.ID, k.State)
	}
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO signing_keys (`+signingKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		k.ID, k.Alg, nonNil(k.KeyCiphertext), nonNil(k.PublicJWK), k.State,
		s.timeArg(k.CreatedAt), s.nullTimeArg(k.ActivatedAt), s.nullTimeArg(k.RetiredAt))
	return wrap(err, op, fmt.Sprintf("signing key %q", k.ID))
}

// ListSigningKeys returns every signing key, oldest first (ties broken by
// ID).
func (s *Store) ListSigningKeys(ctx context.Context) ([]SigningKey, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+signingKeyColumns+` FROM signing_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list signing keys: %w", err)
	}
	ks, err := collectRows(rows, scanSigningKey)
	if err != nil {
		return nil, fmt.Errorf("store: list signing keys: %w", err)
	}
	return ks, nil
}

// SetSigningKeyState moves a signing key to state in one atomic UPDATE.
// Entering KeyStateActive from another state sets ActivatedAt to at and
// clears RetiredAt; leaving KeyStateActive sets RetiredAt to at; any
// other move (including to the state it is in) changes no time.
// ErrNotFound if no key has that ID.
func (s *Store) SetSigningKeyState(ctx context.Context, id, state string, at time.Time) error {
	const op = "set signing key state"
	if !validKeyState(state) {
		return fmt.Errorf("store: %s %q: unknown state %q", op, id, state)
	}
	// In an UPDATE, state on the right-hand side is the old value.
	query := `UPDATE signing_keys SET
		retired_at = CASE WHEN state = 'active' THEN ? ELSE retired_at END,
		state = ? WHERE id = ?`
	if state == KeyStateActive {
		query = `UPDATE signing_keys SET
			activated_at = CASE WHEN state <> 'active' THEN ? ELSE activated_at END,
			retired_at = CASE WHEN state <> 'active' THEN NULL ELSE retired_at END,
			state = ? WHERE id = ?`
	}
	res, err := s.wdb.ExecContext(ctx, s.q(query), s.timeArg(at), state, id)
	if err != nil {
		return wrap(err, op, fmt.Sprintf("signing key %q", id))
	}
	return mustAffect(res, op, fmt.Sprintf("signing key %q", id))
}
