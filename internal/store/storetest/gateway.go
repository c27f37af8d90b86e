package storetest

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

func testComponentTokens(t *testing.T, st *store.Store) {
	ctx := context.Background()
	exp := at(time.Hour)
	tok := store.ComponentToken{ID: "cbt-1", Component: "gateway", Hash: bytes.Repeat([]byte{1}, 32), CreatedAt: at(0), ExpiresAt: &exp}
	must(t, st.CreateComponentToken(ctx, tok))
	wantErr(t, "duplicate hash", st.CreateComponentToken(ctx, store.ComponentToken{ID: "cbt-2", Component: "gateway", Hash: tok.Hash, CreatedAt: at(0)}), store.ErrConflict)
	got, err := st.GetComponentTokenByHash(ctx, tok.Hash)
	must(t, err)
	if got.ID != tok.ID || got.Component != "gateway" || !bytes.Equal(got.Hash, tok.Hash) || got.RevokedAt != nil {
		t.Fatalf("GetComponentTokenByHash = %+v", got)
	}
	wantTime(t, "CreatedAt", got.CreatedAt, tok.CreatedAt)
	wantTimePtr(t, "ExpiresAt", got.ExpiresAt, tok.ExpiresAt)
	_, err = st.GetComponentTokenByHash(ctx, bytes.Repeat([]byte{2}, 32))
	wantErr(t, "unknown hash", err, store.ErrNotFound)

	must(t, st.RevokeComponentToken(ctx, "cbt-1", at(time.Minute)))
	must(t, st.RevokeComponentToken(ctx, "cbt-1", at(2*time.Minute))) // keeps the first time
	wantErr(t, "revoke unknown", st.RevokeComponentToken(ctx, "cbt-9", at(0)), store.ErrNotFound)
	list, err := st.ListComponentTokens(ctx)
	must(t, err)
	if len(list) != 1 {
		t.Fatalf("ListComponentTokens = %+v", list)
	}
	wantTimePtr(t, "RevokedAt", list[0].RevokedAt, ptr(at(time.Minute)))
}

func testGatewayRoutes(t *testing.T, st *store.Store) {
	ctx := context.Background()
	routes, version, err := st.ListGatewayRoutes(ctx)
	must(t, err)
	if len(routes) != 0 || version != 0 {
		t.Fatalf("empty table: %v, version %d", routes, version)
	}
	r := store.GatewayRoute{Name: "orders", Spec: []byte(`{"prefix":"/orders"}`), GrantIDs: []string{"req-1", "req-2"}, UpdatedBy: "admin", UpdatedAt: at(0)}
	v1, prev, err := st.PutGatewayRoute(ctx, r)
	must(t, err)
	if v1 != 1 || prev != nil {
		t.Fatalf("first put: version %d, prev %v", v1, prev)
	}
	r.Spec, r.GrantIDs, r.UpdatedAt = []byte(`{"prefix":"/orders/"}`), []string{"req-3"}, at(time.Minute)
	v2, prev, err := st.PutGatewayRoute(ctx, r)
	must(t, err)
	if v2 != 2 || prev == nil || !slices.Equal(prev.GrantIDs, []string{"req-1", "req-2"}) || string(prev.Spec) != `{"prefix":"/orders"}` {
		t.Fatalf("replace: version %d, prev %+v", v2, prev)
	}
	_, v3, err := st.PutGatewayRoute(ctx, store.GatewayRoute{Name: "api", Spec: []byte(`{}`), UpdatedBy: "sec", UpdatedAt: at(0)})
	must(t, err)
	_ = v3
	routes, version, err = st.ListGatewayRoutes(ctx)
	must(t, err)
	if version != 3 || len(routes) != 2 || routes[0].Name != "api" || routes[1].Name != "orders" || routes[1].Version != 2 ||
		!slices.Equal(routes[1].GrantIDs, []string{"req-3"}) || routes[0].GrantIDs == nil || len(routes[0].GrantIDs) != 0 {
		t.Fatalf("table %+v version %d", routes, version)
	}
	wantTime(t, "UpdatedAt", routes[1].UpdatedAt, at(time.Minute))
	del, v4, err := st.DeleteGatewayRoute(ctx, "orders")
	must(t, err)
	if v4 != 4 || del.Name != "orders" || !slices.Equal(del.GrantIDs, []string{"req-3"}) {
		t.Fatalf("delete: %+v version %d", del, v4)
	}
	_, _, err = st.DeleteGatewayRoute(ctx, "orders")
	wantErr(t, "delete twice", err, store.ErrNotFound)
	routes, version, err = st.ListGatewayRoutes(ctx)
	must(t, err)
	if version != 4 || len(routes) != 1 {
		t.Fatalf("after delete: %+v version %d", routes, version)
	}
}

func testPassportKeys(t *testing.T, st *store.Store) {
	ctx := context.Background()
	k := store.PassportKey{KID: "k1", JWK: []byte(`{"kid":"k1"}`), Serial: "ab", CreatedAt: at(0), NotAfter: at(time.Hour)}
	must(t, st.PutPassportKey(ctx, k, at(-time.Hour)))
	must(t, st.PutPassportKey(ctx, store.PassportKey{KID: "k2", JWK: []byte(`{"kid":"k2"}`), Serial: "cd", CreatedAt: at(time.Second), NotAfter: at(10 * time.Minute)}, at(-time.Hour)))
	// Registering again keeps the later not_after.
	must(t, st.PutPassportKey(ctx, store.PassportKey{KID: "k1", JWK: k.JWK, Serial: "ab", CreatedAt: at(0), NotAfter: at(30 * time.Minute)}, at(-time.Hour)))
	list, err := st.ListPassportKeys(ctx, at(0))
	must(t, err)
	if len(list) != 2 || list[0].KID != "k1" || list[1].KID != "k2" || string(list[0].JWK) != `{"kid":"k1"}` {
		t.Fatalf("keys %+v", list)
	}
	wantTime(t, "NotAfter", list[0].NotAfter, at(time.Hour))
	// Only unexpired keys are listed.
	list, err = st.ListPassportKeys(ctx, at(20*time.Minute))
	must(t, err)
	if len(list) != 1 || list[0].KID != "k1" {
		t.Fatalf("keys at +20m %+v", list)
	}
	// Pruning deletes keys expired before the given time.
	must(t, st.PutPassportKey(ctx, store.PassportKey{KID: "k3", JWK: []byte(`{}`), Serial: "ef", CreatedAt: at(0), NotAfter: at(2 * time.Hour)}, at(20*time.Minute)))
	list, err = st.ListPassportKeys(ctx, at(-time.Hour))
	must(t, err)
	if len(list) != 2 || slices.ContainsFunc(list, func(k store.PassportKey) bool { return k.KID == "k2" }) {
		t.Fatalf("after pruning %+v", list)
	}
}
