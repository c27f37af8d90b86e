package storetest

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

func testTeams(t *testing.T, st *store.Store) {
	ctx := t.Context()
	for i, name := range []string{"shop", "payments", "identity"} {
		must(t, st.CreateTeam(ctx, store.Team{Name: name, CreatedAt: at(time.Duration(i) * time.Minute)}))
	}
	wantErr(t, "CreateTeam(dup)", st.CreateTeam(ctx, store.Team{Name: "shop", CreatedAt: at(0)}), store.ErrConflict)

	got, err := st.GetTeam(ctx, "payments")
	must(t, err)
	if got.Name != "payments" {
		t.Errorf("Name = %q", got.Name)
	}
	wantTime(t, "CreatedAt", got.CreatedAt, at(time.Minute))

	_, err = st.GetTeam(ctx, "missing")
	wantErr(t, "GetTeam(missing)", err, store.ErrNotFound)

	list, err := st.ListTeams(ctx)
	must(t, err)
	var names []string
	for _, tm := range list {
		names = append(names, tm.Name)
	}
	if want := []string{"identity", "payments", "shop"}; !slices.Equal(names, want) {
		t.Errorf("ListTeams = %v, want %v", names, want)
	}
}

func wantService(t *testing.T, got, want store.Service) {
	t.Helper()
	if got.Name != want.Name || got.Team != want.Team || got.Level != want.Level || got.SVIDTTL != want.SVIDTTL {
		t.Errorf("Service = %+v, want %+v", got, want)
	}
	wantTime(t, "Service.CreatedAt", got.CreatedAt, want.CreatedAt)
	wantTimePtr(t, "Service.RevokedAt", got.RevokedAt, want.RevokedAt)
}

func testServices(t *testing.T, st *store.Store) {
	ctx := t.Context()
	must(t, st.CreateTeam(ctx, store.Team{Name: "shop", CreatedAt: at(0)}))

	svcs := []store.Service{
		{Name: "web", Team: "shop", Level: "L1", SVIDTTL: time.Hour, CreatedAt: at(time.Second)},
		{Name: "cart", Team: "shop", Level: "L3", SVIDTTL: 15 * time.Minute, CreatedAt: at(2 * time.Second)},
		{Name: "db", Team: "shop", Level: "L2", SVIDTTL: 3 * time.Second, CreatedAt: at(3 * time.Second)},
	}
	for _, svc := range svcs {
		must(t, st.CreateService(ctx, svc))
	}

	errTests := []struct {
		name   string
		svc    store.Service
		target error
	}{
		{"duplicate name", store.Service{Name: "web", Team: "shop", Level: "L1", SVIDTTL: time.Hour, CreatedAt: at(0)}, store.ErrConflict},
		{"missing team", store.Service{Name: "api", Team: "nope", Level: "L1", SVIDTTL: time.Hour, CreatedAt: at(0)}, store.ErrNotFound},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, "CreateService", st.CreateService(ctx, tt.svc), tt.target)
		})
	}
	if _, err := st.GetService(ctx, "api"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("service with a missing team was stored: %v", err)
	}

	for _, svc := range svcs {
		got, err := st.GetService(ctx, svc.Name)
		must(t, err)
		wantService(t, got, svc)
	}
	_, err := st.GetService(ctx, "missing")
	wantErr(t, "GetService(missing)", err, store.ErrNotFound)

	list, err := st.ListServices(ctx)
	must(t, err)
	var names []string
	for _, svc := range list {
		names = append(names, svc.Name)
	}
	if want := []string{"cart", "db", "web"}; !slices.Equal(names, want) {
		t.Errorf("ListServices = %v, want %v", names, want)
	}

	must(t, st.RevokeService(ctx, "web", at(time.Hour)))
	must(t, st.RevokeService(ctx, "web", at(2*time.Hour))) // keeps the first time
	got, err := st.GetService(ctx, "web")
	must(t, err)
	want := svcs[0]
	want.RevokedAt = ptr(at(time.Hour))
	wantService(t, got, want)
	got, err = st.GetService(ctx, "cart")
	must(t, err)
	wantService(t, got, svcs[1]) // untouched
	wantErr(t, "RevokeService(missing)", st.RevokeService(ctx, "missing", at(0)), store.ErrNotFound)
}

func testBootstrapTokens(t *testing.T, st *store.Store) {
	ctx := t.Context()
	must(t, st.CreateTeam(ctx, store.Team{Name: "shop", CreatedAt: at(0)}))
	for _, name := range []string{"web", "db"} {
		must(t, st.CreateService(ctx, store.Service{Name: name, Team: "shop", Level: "L1", SVIDTTL: time.Hour, CreatedAt: at(0)}))
	}
	tokens := []store.BootstrapToken{
		{ID: "bt-1", Service: "web", Hash: bytes.Repeat([]byte{1}, 32), CreatedAt: at(time.Second)},
		{ID: "bt-2", Service: "web", Hash: bytes.Repeat([]byte{2}, 32), CreatedAt: at(2 * time.Second), ExpiresAt: ptr(at(30 * 24 * time.Hour))},
		{ID: "bt-3", Service: "db", Hash: bytes.Repeat([]byte{3}, 32), CreatedAt: at(3 * time.Second)},
	}
	for _, tok := range tokens {
		must(t, st.CreateBootstrapToken(ctx, tok))
	}

	errTests := []struct {
		name   string
		tok    store.BootstrapToken
		target error
	}{
		{"duplicate ID", store.BootstrapToken{ID: "bt-1", Service: "web", Hash: bytes.Repeat([]byte{9}, 32), CreatedAt: at(0)}, store.ErrConflict},
		{"duplicate hash", store.BootstrapToken{ID: "bt-9", Service: "web", Hash: bytes.Repeat([]byte{1}, 32), CreatedAt: at(0)}, store.ErrConflict},
		{"missing service", store.BootstrapToken{ID: "bt-8", Service: "nope", Hash: bytes.Repeat([]byte{8}, 32), CreatedAt: at(0)}, store.ErrNotFound},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, "CreateBootstrapToken", st.CreateBootstrapToken(ctx, tt.tok), tt.target)
		})
	}

	check := func(t *testing.T, want store.BootstrapToken) {
		t.Helper()
		got, err := st.GetBootstrapTokenByHash(ctx, want.Hash)
		must(t, err)
		if got.ID != want.ID || got.Service != want.Service || !bytes.Equal(got.Hash, want.Hash) {
			t.Errorf("token = %+v, want %+v", got, want)
		}
		wantTime(t, "CreatedAt", got.CreatedAt, want.CreatedAt)
		wantTimePtr(t, "RevokedAt", got.RevokedAt, want.RevokedAt)
		wantTimePtr(t, "ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	}
	for _, tok := range tokens {
		check(t, tok)
	}
	_, err := st.GetBootstrapTokenByHash(ctx, bytes.Repeat([]byte{7}, 32))
	wantErr(t, "GetBootstrapTokenByHash(unknown)", err, store.ErrNotFound)

	revokes := []struct {
		name    string
		service string
		at      time.Time
		want    int
	}{
		{"revoke web", "web", at(time.Hour), 2},
		{"again revokes nothing", "web", at(2 * time.Hour), 0},
		{"unknown service", "nope", at(time.Hour), 0},
	}
	for _, tt := range revokes {
		t.Run(tt.name, func(t *testing.T) {
			n, err := st.RevokeBootstrapTokens(ctx, tt.service, tt.at)
			must(t, err)
			if n != tt.want {
				t.Errorf("RevokeBootstrapTokens(%q) = %d, want %d", tt.service, n, tt.want)
			}
		})
	}
	for _, tok := range tokens[:2] {
		tok.RevokedAt = ptr(at(time.Hour))
		check(t, tok)
	}
	check(t, tokens[2]) // other service untouched
}

func testAdminTokens(t *testing.T, st *store.Store) {
	ctx := t.Context()
	tokens := []store.AdminToken{
		{ID: "adm-2", Name: "ci", Hash: bytes.Repeat([]byte{2}, 32), Roles: []string{"team:payments", "operator"}, CreatedAt: at(time.Second)},
		{ID: "adm-1", Name: "bootstrap", Hash: bytes.Repeat([]byte{1}, 32), Roles: []string{"admin"}, CreatedAt: at(0)},
		{ID: "adm-3", Name: "nobody", Hash: bytes.Repeat([]byte{3}, 32), CreatedAt: at(time.Second)},
	}
	for _, tok := range tokens {
		must(t, st.CreateAdminToken(ctx, tok))
	}
	wantErr(t, "CreateAdminToken(dup ID)", st.CreateAdminToken(ctx, store.AdminToken{ID: "adm-1", Hash: []byte{9}, CreatedAt: at(0)}), store.ErrConflict)
	wantErr(t, "CreateAdminToken(dup hash)", st.CreateAdminToken(ctx, store.AdminToken{ID: "adm-9", Hash: bytes.Repeat([]byte{1}, 32), CreatedAt: at(0)}), store.ErrConflict)

	same := func(t *testing.T, got, want store.AdminToken) {
		t.Helper()
		if got.ID != want.ID || got.Name != want.Name || !bytes.Equal(got.Hash, want.Hash) || !slices.Equal(got.Roles, want.Roles) {
			t.Errorf("admin token = %+v, want %+v", got, want)
		}
		wantTime(t, "CreatedAt", got.CreatedAt, want.CreatedAt)
		wantTimePtr(t, "RevokedAt", got.RevokedAt, want.RevokedAt)
	}
	for _, tok := range tokens {
		got, err := st.GetAdminTokenByHash(ctx, tok.Hash)
		must(t, err)
		same(t, got, tok)
	}
	_, err := st.GetAdminTokenByHash(ctx, []byte("unknown"))
	wantErr(t, "GetAdminTokenByHash(unknown)", err, store.ErrNotFound)

	must(t, st.RevokeAdminToken(ctx, "adm-2", at(time.Hour)))
	must(t, st.RevokeAdminToken(ctx, "adm-2", at(2*time.Hour))) // keeps the first time
	wantErr(t, "RevokeAdminToken(missing)", st.RevokeAdminToken(ctx, "missing", at(0)), store.ErrNotFound)

	list, err := st.ListAdminTokens(ctx)
	must(t, err)
	tokens[0].RevokedAt = ptr(at(time.Hour))
	want := []store.AdminToken{tokens[1], tokens[0], tokens[2]} // created_at, then ID
	if len(list) != len(want) {
		t.Fatalf("ListAdminTokens returned %d tokens, want %d", len(list), len(want))
	}
	for i := range want {
		same(t, list[i], want[i])
	}
}
