package storetest

import (
	"bytes"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

func wantOAuthClient(t *testing.T, got, want store.OAuthClient) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || !slices.Equal(got.GrantTypes, want.GrantTypes) ||
		!slices.Equal(got.Scopes, want.Scopes) || !slices.Equal(got.Audiences, want.Audiences) ||
		got.AuthMethod != want.AuthMethod || !bytes.Equal(got.SecretHash, want.SecretHash) ||
		got.TLSSubject != want.TLSSubject || !bytes.Equal(got.JWKS, want.JWKS) ||
		got.TokenAlg != want.TokenAlg || got.TokenTTL != want.TokenTTL {
		t.Errorf("OAuthClient = %+v, want %+v", got, want)
	}
	// Empty lists and byte slices come back nil.
	for _, f := range []struct {
		name string
		nil  bool
		want bool
	}{
		{"GrantTypes", got.GrantTypes == nil, len(want.GrantTypes) == 0},
		{"Scopes", got.Scopes == nil, len(want.Scopes) == 0},
		{"Audiences", got.Audiences == nil, len(want.Audiences) == 0},
		{"SecretHash", got.SecretHash == nil, len(want.SecretHash) == 0},
		{"JWKS", got.JWKS == nil, len(want.JWKS) == 0},
	} {
		if f.nil != f.want {
			t.Errorf("OAuthClient %q %s is nil: %v, want %v", want.ID, f.name, f.nil, f.want)
		}
	}
	wantTime(t, "OAuthClient.CreatedAt", got.CreatedAt, want.CreatedAt)
	wantTimePtr(t, "OAuthClient.RevokedAt", got.RevokedAt, want.RevokedAt)
}

func testOAuthClients(t *testing.T, st *store.Store) {
	ctx := t.Context()
	clients := []store.OAuthClient{
		{
			ID: "wc_000000000000000000000002", Name: "shop-backend",
			GrantTypes: []string{"client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"},
			Scopes:     []string{"orders:read", "orders:write"}, Audiences: []string{"ward", "https://api.example.com"},
			AuthMethod: store.AuthClientSecretBasic, SecretHash: bytes.Repeat([]byte{0xab}, 32),
			TokenAlg: "ES256", TokenTTL: 5*time.Minute + 7*time.Nanosecond, CreatedAt: at(time.Second),
		},
		{
			ID: "wc_000000000000000000000001", Name: "agent-mtls",
			GrantTypes: []string{"client_credentials"}, Scopes: []string{"read"},
			AuthMethod: store.AuthTLSClient, TLSSubject: "spiffe://ward.test/svc/agent",
			TokenAlg: "EdDSA", CreatedAt: at(0), RevokedAt: ptr(at(time.Hour)),
		},
		{
			ID: "wc_000000000000000000000003", Name: "jwt-client",
			GrantTypes: []string{}, Scopes: []string{}, Audiences: []string{}, // empty, not nil
			AuthMethod: store.AuthPrivateKeyJWT, SecretHash: []byte{}, JWKS: []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"}]}`),
			CreatedAt: at(2 * time.Second),
		},
		{ID: "wc_000000000000000000000004", Name: "bare", CreatedAt: at(3 * time.Second)}, // every optional field zero
	}
	for _, c := range clients {
		must(t, st.CreateOAuthClient(ctx, c))
	}

	errTests := []struct {
		name string
		c    store.OAuthClient
	}{
		{"duplicate ID", store.OAuthClient{ID: clients[0].ID, Name: "other", CreatedAt: at(0)}},
		{"duplicate name", store.OAuthClient{ID: "wc_999999999999999999999999", Name: clients[0].Name, CreatedAt: at(0)}},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, "CreateOAuthClient", st.CreateOAuthClient(ctx, tt.c), store.ErrConflict)
		})
	}
	if _, err := st.GetOAuthClient(ctx, "wc_999999999999999999999999"); err == nil {
		t.Error("a client with a duplicate name was stored")
	}

	for _, c := range clients {
		t.Run("get "+c.Name, func(t *testing.T) {
			got, err := st.GetOAuthClient(ctx, c.ID)
			must(t, err)
			wantOAuthClient(t, got, c)
			got, err = st.GetOAuthClientByName(ctx, c.Name)
			must(t, err)
			wantOAuthClient(t, got, c)
		})
	}
	_, err := st.GetOAuthClient(ctx, "wc_missing")
	wantErr(t, "GetOAuthClient(missing)", err, store.ErrNotFound)
	_, err = st.GetOAuthClientByName(ctx, "missing")
	wantErr(t, "GetOAuthClientByName(missing)", err, store.ErrNotFound)

	must(t, st.RevokeOAuthClient(ctx, clients[0].ID, at(2*time.Hour)))
	must(t, st.RevokeOAuthClient(ctx, clients[0].ID, at(3*time.Hour))) // keeps the first time
	must(t, st.RevokeOAuthClient(ctx, clients[1].ID, at(4*time.Hour))) // already revoked: keeps its time
	wantErr(t, "RevokeOAuthClient(missing)", st.RevokeOAuthClient(ctx, "wc_missing", at(0)), store.ErrNotFound)
	clients[0].RevokedAt = ptr(at(2 * time.Hour))

	list, err := st.ListOAuthClients(ctx)
	must(t, err)
	want := []store.OAuthClient{clients[1], clients[3], clients[2], clients[0]} // by name
	if len(list) != len(want) {
		t.Fatalf("ListOAuthClients returned %d clients, want %d", len(list), len(want))
	}
	for i := range want {
		wantOAuthClient(t, list[i], want[i])
	}
}

func wantAPIKey(t *testing.T, got, want store.APIKey) {
	t.Helper()
	if got.ID != want.ID || !bytes.Equal(got.Hash, want.Hash) || got.Subject != want.Subject || got.Tenant != want.Tenant ||
		!slices.Equal(got.Scopes, want.Scopes) || !maps.Equal(got.Metadata, want.Metadata) {
		t.Errorf("APIKey = %+v, want %+v", got, want)
	}
	if (got.Scopes == nil) != (len(want.Scopes) == 0) {
		t.Errorf("APIKey %q Scopes = %#v, want nil exactly when empty", want.ID, got.Scopes)
	}
	if (got.Metadata == nil) != (len(want.Metadata) == 0) {
		t.Errorf("APIKey %q Metadata = %#v, want nil exactly when empty", want.ID, got.Metadata)
	}
	wantTime(t, "APIKey.CreatedAt", got.CreatedAt, want.CreatedAt)
	wantTimePtr(t, "APIKey.ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	wantTimePtr(t, "APIKey.RevokedAt", got.RevokedAt, want.RevokedAt)
}

func testAPIKeys(t *testing.T, st *store.Store) {
	ctx := t.Context()
	keys := []store.APIKey{
		{
			ID: "wk_00000000000000b2", Hash: bytes.Repeat([]byte{2}, 32), Subject: "partner:acme", Tenant: "acme",
			Scopes:    []string{"catalog:read", "orders:read"},
			Metadata:  map[string]string{"owner": "alice@example.com", "ticket": "SEC-42", "quote\"d": "ü\n"},
			CreatedAt: at(time.Second), ExpiresAt: ptr(at(90 * 24 * time.Hour)),
		},
		{ID: "wk_00000000000000a1", Hash: bytes.Repeat([]byte{1}, 32), Subject: "partner:bare", CreatedAt: at(time.Second)},
		{
			ID: "wk_00000000000000c3", Hash: bytes.Repeat([]byte{3}, 32), Subject: "partner:empty",
			Scopes: []string{}, Metadata: map[string]string{}, // empty, not nil
			CreatedAt: at(0), RevokedAt: ptr(at(time.Minute)),
		},
	}
	for _, k := range keys {
		must(t, st.CreateAPIKey(ctx, k))
	}

	errTests := []struct {
		name string
		k    store.APIKey
	}{
		{"duplicate ID", store.APIKey{ID: keys[0].ID, Hash: bytes.Repeat([]byte{9}, 32), CreatedAt: at(0)}},
		{"duplicate hash", store.APIKey{ID: "wk_00000000000000ff", Hash: keys[1].Hash, CreatedAt: at(0)}},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, "CreateAPIKey", st.CreateAPIKey(ctx, tt.k), store.ErrConflict)
		})
	}

	for _, k := range keys {
		t.Run("get "+k.ID, func(t *testing.T) {
			got, err := st.GetAPIKey(ctx, k.ID)
			must(t, err)
			wantAPIKey(t, got, k)
			got, err = st.GetAPIKeyByHash(ctx, k.Hash)
			must(t, err)
			wantAPIKey(t, got, k)
		})
	}
	_, err := st.GetAPIKey(ctx, "wk_missing")
	wantErr(t, "GetAPIKey(missing)", err, store.ErrNotFound)
	_, err = st.GetAPIKeyByHash(ctx, bytes.Repeat([]byte{7}, 32))
	wantErr(t, "GetAPIKeyByHash(unknown)", err, store.ErrNotFound)
	_, err = st.GetAPIKeyByHash(ctx, nil)
	wantErr(t, "GetAPIKeyByHash(nil)", err, store.ErrNotFound)

	must(t, st.RevokeAPIKey(ctx, keys[0].ID, at(time.Hour)))
	must(t, st.RevokeAPIKey(ctx, keys[0].ID, at(2*time.Hour))) // keeps the first time
	must(t, st.RevokeAPIKey(ctx, keys[2].ID, at(3*time.Hour))) // already revoked: keeps its time
	wantErr(t, "RevokeAPIKey(missing)", st.RevokeAPIKey(ctx, "wk_missing", at(0)), store.ErrNotFound)
	keys[0].RevokedAt = ptr(at(time.Hour))

	list, err := st.ListAPIKeys(ctx)
	must(t, err)
	want := []store.APIKey{keys[2], keys[1], keys[0]} // created_at, then ID
	if len(list) != len(want) {
		t.Fatalf("ListAPIKeys returned %d keys, want %d", len(list), len(want))
	}
	for i := range want {
		wantAPIKey(t, list[i], want[i])
	}
}

func wantRevokedTokens(t *testing.T, what string, got, want []store.RevokedToken) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s returned %d tokens %+v, want %d %+v", what, len(got), got, len(want), want)
	}
	for i := range want {
		if got[i].JTI != want[i].JTI || got[i].ClientID != want[i].ClientID {
			t.Errorf("%s[%d] = %+v, want %+v", what, i, got[i], want[i])
		}
		wantTime(t, what+".ExpiresAt", got[i].ExpiresAt, want[i].ExpiresAt)
		wantTime(t, what+".RevokedAt", got[i].RevokedAt, want[i].RevokedAt)
	}
}

func testRevokedTokens(t *testing.T, st *store.Store) {
	ctx := t.Context()
	list, err := st.ListRevokedTokens(ctx, at(0))
	must(t, err)
	if len(list) != 0 {
		t.Errorf("ListRevokedTokens on an empty store = %+v", list)
	}
	n, err := st.PruneRevokedTokens(ctx, at(0))
	must(t, err)
	if n != 0 {
		t.Errorf("PruneRevokedTokens on an empty store = %d", n)
	}

	// base has nanoseconds: the boundaries below compare at microseconds.
	toks := []store.RevokedToken{
		{JTI: "jti-c", ClientID: "wc_1", ExpiresAt: at(10 * time.Minute), RevokedAt: at(0)},
		{JTI: "jti-a", ClientID: "wc_2", ExpiresAt: at(5 * time.Minute), RevokedAt: at(time.Second)},
		{JTI: "jti-b", ClientID: "wc_1", ExpiresAt: at(5 * time.Minute), RevokedAt: at(2 * time.Second)},
		{JTI: "jti-d", ClientID: "", ExpiresAt: at(5*time.Minute + time.Microsecond), RevokedAt: at(3 * time.Second)},
	}
	for _, r := range toks {
		must(t, st.RevokeToken(ctx, r))
	}
	// Revoking again is not an error and keeps the first record.
	again := store.RevokedToken{JTI: "jti-c", ClientID: "wc_other", ExpiresAt: at(time.Hour), RevokedAt: at(time.Minute)}
	must(t, st.RevokeToken(ctx, again))

	for _, tt := range []struct {
		jti  string
		want bool
	}{{"jti-a", true}, {"jti-c", true}, {"jti-d", true}, {"jti-x", false}, {"", false}} {
		got, err := st.IsTokenRevoked(ctx, tt.jti)
		must(t, err)
		if got != tt.want {
			t.Errorf("IsTokenRevoked(%q) = %v, want %v", tt.jti, got, tt.want)
		}
	}

	tests := []struct {
		name string
		now  time.Time
		want []store.RevokedToken // ordered by expiry, then jti
	}{
		{"all live", at(-time.Hour), []store.RevokedToken{toks[1], toks[2], toks[3], toks[0]}},
		{"a microsecond before the first expiry", at(5*time.Minute - time.Microsecond), []store.RevokedToken{toks[1], toks[2], toks[3], toks[0]}},
		{"at an expiry it is gone", at(5 * time.Minute), []store.RevokedToken{toks[3], toks[0]}},
		{"a microsecond later", at(5*time.Minute + time.Microsecond), []store.RevokedToken{toks[0]}},
		{"all expired", at(10 * time.Minute), nil},
	}
	for _, tt := range tests {
		t.Run("list "+tt.name, func(t *testing.T) {
			got, err := st.ListRevokedTokens(ctx, tt.now)
			must(t, err)
			wantRevokedTokens(t, "ListRevokedTokens", got, tt.want)
		})
	}

	prunes := []struct {
		name    string
		now     time.Time
		want    int
		revoked []string // still recorded afterwards
	}{
		{"before any expiry", at(5*time.Minute - time.Microsecond), 0, []string{"jti-a", "jti-b", "jti-c", "jti-d"}},
		{"at an expiry", at(5 * time.Minute), 2, []string{"jti-c", "jti-d"}},
		{"again at the same time", at(5 * time.Minute), 0, []string{"jti-c", "jti-d"}},
		{"at the next expiry", at(5*time.Minute + time.Microsecond), 1, []string{"jti-c"}},
		{"everything", at(24 * time.Hour), 1, nil},
	}
	for _, tt := range prunes {
		t.Run("prune "+tt.name, func(t *testing.T) {
			n, err := st.PruneRevokedTokens(ctx, tt.now)
			must(t, err)
			if n != tt.want {
				t.Errorf("PruneRevokedTokens = %d, want %d", n, tt.want)
			}
			for _, jti := range []string{"jti-a", "jti-b", "jti-c", "jti-d"} {
				got, err := st.IsTokenRevoked(ctx, jti)
				must(t, err)
				if want := slices.Contains(tt.revoked, jti); got != want {
					t.Errorf("IsTokenRevoked(%q) = %v after pruning, want %v", jti, got, want)
				}
			}
		})
	}

	// A pruned jti can be recorded again.
	must(t, st.RevokeToken(ctx, again))
	list, err = st.ListRevokedTokens(ctx, at(0))
	must(t, err)
	wantRevokedTokens(t, "ListRevokedTokens after re-revoking", list, []store.RevokedToken{again})
}

func wantSigningKey(t *testing.T, got, want store.SigningKey) {
	t.Helper()
	if got.ID != want.ID || got.Alg != want.Alg || !bytes.Equal(got.KeyCiphertext, want.KeyCiphertext) ||
		!bytes.Equal(got.PublicJWK, want.PublicJWK) || got.State != want.State {
		t.Errorf("SigningKey = %+v, want %+v", got, want)
	}
	if got.KeyCiphertext == nil || got.PublicJWK == nil {
		t.Errorf("SigningKey %q byte fields must not be nil: %+v", want.ID, got)
	}
	wantTime(t, "SigningKey.CreatedAt", got.CreatedAt, want.CreatedAt)
	wantTimePtr(t, "SigningKey.ActivatedAt", got.ActivatedAt, want.ActivatedAt)
	wantTimePtr(t, "SigningKey.RetiredAt", got.RetiredAt, want.RetiredAt)
}

func signingKey(t *testing.T, st *store.Store, id string) store.SigningKey {
	t.Helper()
	keys, err := st.ListSigningKeys(t.Context())
	must(t, err)
	for _, k := range keys {
		if k.ID == id {
			return k
		}
	}
	t.Fatalf("signing key %q not listed", id)
	return store.SigningKey{}
}

func testSigningKeys(t *testing.T, st *store.Store) {
	ctx := t.Context()
	keys := []store.SigningKey{
		{
			ID: "kid-ed", Alg: "EdDSA", KeyCiphertext: []byte{0, 1, 2, 0xff}, PublicJWK: []byte(`{"kty":"OKP","crv":"Ed25519","x":"AA"}`),
			State: store.KeyStateActive, CreatedAt: at(time.Second), ActivatedAt: ptr(at(time.Second)),
		},
		{
			ID: "kid-es", Alg: "ES256", KeyCiphertext: []byte{9}, PublicJWK: []byte(`{"kty":"EC"}`),
			State: store.KeyStateNext, CreatedAt: at(time.Second),
		},
		{
			ID: "kid-old", Alg: "EdDSA", KeyCiphertext: nil, PublicJWK: nil, // stored as empty
			State: store.KeyStateRetired, CreatedAt: at(0), ActivatedAt: ptr(at(0)), RetiredAt: ptr(at(time.Second)),
		},
	}
	for _, k := range keys {
		must(t, st.PutSigningKey(ctx, k))
	}
	keys[2].KeyCiphertext, keys[2].PublicJWK = []byte{}, []byte{}

	wantErr(t, "PutSigningKey(dup)", st.PutSigningKey(ctx, store.SigningKey{ID: "kid-ed", Alg: "ES256", State: store.KeyStateNext, CreatedAt: at(0)}), store.ErrConflict)
	if err := st.PutSigningKey(ctx, store.SigningKey{ID: "kid-bad", Alg: "EdDSA", State: "bogus", CreatedAt: at(0)}); err == nil {
		t.Error("PutSigningKey accepted an unknown state")
	}

	list, err := st.ListSigningKeys(ctx)
	must(t, err)
	want := []store.SigningKey{keys[2], keys[0], keys[1]} // created_at, then ID
	if len(list) != len(want) {
		t.Fatalf("ListSigningKeys returned %d keys, want %d", len(list), len(want))
	}
	for i := range want {
		wantSigningKey(t, list[i], want[i])
	}

	// Walk kid-es through its life; each step names the times it must have.
	es := keys[1]
	steps := []struct {
		name      string
		state     string
		at        time.Time
		activated *time.Time
		retired   *time.Time
	}{
		{"next again changes nothing", store.KeyStateNext, at(time.Minute), nil, nil},
		{"activate", store.KeyStateActive, at(time.Hour), ptr(at(time.Hour)), nil},
		{"active again keeps the first time", store.KeyStateActive, at(2 * time.Hour), ptr(at(time.Hour)), nil},
		{"retiring records when it left active", store.KeyStateRetiring, at(3 * time.Hour), ptr(at(time.Hour)), ptr(at(3 * time.Hour))},
		{"retired keeps that time", store.KeyStateRetired, at(4 * time.Hour), ptr(at(time.Hour)), ptr(at(3 * time.Hour))},
		{"reactivated: new activation, not retired", store.KeyStateActive, at(5 * time.Hour), ptr(at(5 * time.Hour)), nil},
		{"straight to retired", store.KeyStateRetired, at(6 * time.Hour), ptr(at(5 * time.Hour)), ptr(at(6 * time.Hour))},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			must(t, st.SetSigningKeyState(ctx, es.ID, tt.state, tt.at))
			w := es
			w.State, w.ActivatedAt, w.RetiredAt = tt.state, tt.activated, tt.retired
			wantSigningKey(t, signingKey(t, st, es.ID), w)
		})
	}
	wantSigningKey(t, signingKey(t, st, "kid-ed"), keys[0]) // untouched

	wantErr(t, "SetSigningKeyState(missing)", st.SetSigningKeyState(ctx, "kid-missing", store.KeyStateActive, at(0)), store.ErrNotFound)
	if err := st.SetSigningKeyState(ctx, "kid-ed", "bogus", at(0)); err == nil {
		t.Error("SetSigningKeyState accepted an unknown state")
	}
	wantSigningKey(t, signingKey(t, st, "kid-ed"), keys[0])
}
