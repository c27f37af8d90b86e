// Package storetest is the contract suite every store backend must pass.
// Each backend's test file calls it with a function that opens a fresh,
// empty store (and closes it in t.Cleanup):
//
//	func TestSQLite(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) *store.Store {
//			st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "ward.db"))
//			...
//		})
//	}
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

// Run runs every contract test as a subtest of t. open is called once per
// subtest and must return a fresh, empty store it closes itself.
func Run(t *testing.T, open func(t *testing.T) *store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st *store.Store)
	}{
		{"Basics", testBasics},
		{"Meta", testMeta},
		{"TimeRoundTrip", testTimeRoundTrip},
		{"CAs", testCAs},
		{"CAState", testCAState},
		{"CRLNumber", testCRLNumber},
		{"Teams", testTeams},
		{"Services", testServices},
		{"BootstrapTokens", testBootstrapTokens},
		{"AdminTokens", testAdminTokens},
		{"Certificates", testCertificates},
		{"RevokeCertificate", testRevokeCertificate},
		{"RevokeCertificatesBulk", testRevokeCertificatesBulk},
		{"RevocationLists", testRevocationLists},
		{"Events", testEvents},
		{"EventsConcurrent", testEventsConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// base has nanoseconds and a non-UTC zone on purpose: the store must hand
// back the same instant, in UTC, truncated to microseconds.
var base = time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("UTC+2", 2*3600))

func at(d time.Duration) time.Time { return base.Add(d) }

func ptr(t time.Time) *time.Time { return &t }

// wantTime checks that got is want truncated to microseconds, in UTC.
func wantTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	w := want.UTC().Truncate(time.Microsecond)
	if !got.Equal(w) {
		t.Errorf("%s = %v, want %v", what, got, w)
	}
	if got.Location() != time.UTC {
		t.Errorf("%s location = %v, want UTC", what, got.Location())
	}
}

func wantTimePtr(t *testing.T, what string, got, want *time.Time) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		t.Errorf("%s = %v, want %v", what, got, want)
	default:
		wantTime(t, what, *got, *want)
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testBasics(t *testing.T, st *store.Store) {
	if b := st.Backend(); b != store.BackendSQLite && b != store.BackendPostgres {
		t.Errorf("Backend() = %q", b)
	}
	must(t, st.Ping(t.Context()))
	v, err := st.SchemaVersion(t.Context())
	must(t, err)
	if v < 1 {
		t.Errorf("SchemaVersion = %d, want ≥ 1", v)
	}
}

func testMeta(t *testing.T, st *store.Store) {
	ctx := t.Context()
	_, err := st.GetMeta(ctx, "missing")
	wantErr(t, "GetMeta(missing)", err, store.ErrNotFound)

	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	tests := []struct {
		name  string
		key   string
		value []byte
	}{
		{"text", "trust_domain", []byte("ward.test")},
		{"binary", "signing_key", binary},
		{"overwrite", "trust_domain", []byte("example.org")},
		{"empty", "empty", []byte{}},
		{"nil", "nil", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			must(t, st.PutMeta(ctx, tt.key, tt.value))
			got, err := st.GetMeta(ctx, tt.key)
			must(t, err)
			if !bytes.Equal(got, tt.value) || got == nil {
				t.Errorf("GetMeta(%q) = %x, want %x (non-nil)", tt.key, got, tt.value)
			}
		})
	}
}

func testTimeRoundTrip(t *testing.T, st *store.Store) {
	ctx := t.Context()
	tests := []struct {
		name string
		t    time.Time
	}{
		{"nanoseconds in a zone", base},
		{"utc whole microseconds", time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)},
		{"just before the epoch", time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		{"epoch", time.Unix(0, 0)},
		{"far future", time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)},
		{"zero", time.Time{}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("team-%d", i)
			must(t, st.CreateTeam(ctx, store.Team{Name: name, CreatedAt: tt.t}))
			got, err := st.GetTeam(ctx, name)
			must(t, err)
			wantTime(t, "CreatedAt", got.CreatedAt, tt.t)
			if tt.t.IsZero() && !got.CreatedAt.IsZero() {
				t.Errorf("zero time came back as %v", got.CreatedAt)
			}
		})
	}
}

func testCA(id, kind, team, parent, state string, created time.Time) store.CA {
	return store.CA{
		ID: id, Kind: kind, Team: team, ParentID: parent,
		CertDER: []byte("der-" + id), KeyCiphertext: []byte{0, 1, 2, 0xff},
		State: state, CreatedAt: created, NotAfter: created.Add(365 * 24 * time.Hour),
	}
}

func wantCA(t *testing.T, got, want store.CA) {
	t.Helper()
	if got.ID != want.ID || got.Kind != want.Kind || got.Team != want.Team || got.ParentID != want.ParentID || got.State != want.State {
		t.Errorf("CA = %+v, want %+v", got, want)
	}
	if !bytes.Equal(got.CertDER, want.CertDER) || !bytes.Equal(got.KeyCiphertext, want.KeyCiphertext) {
		t.Errorf("CA %s bytes = %x/%x, want %x/%x", want.ID, got.CertDER, got.KeyCiphertext, want.CertDER, want.KeyCiphertext)
	}
	wantTime(t, "CA.CreatedAt", got.CreatedAt, want.CreatedAt)
	wantTime(t, "CA.NotAfter", got.NotAfter, want.NotAfter)
	wantTimePtr(t, "CA.RevokedAt", got.RevokedAt, want.RevokedAt)
}

func testCAs(t *testing.T, st *store.Store) {
	ctx := t.Context()
	root := testCA("root-1", store.CAKindRoot, "", "", store.CAStateActive, at(0))
	cas := []store.CA{
		testCA("int-c", store.CAKindIntermediate, "payments", "root-1", store.CAStatePrepared, at(2*time.Hour)),
		root,
		testCA("int-b", store.CAKindIntermediate, "", "root-1", store.CAStateActive, at(time.Hour)),
		testCA("int-a", store.CAKindIntermediate, "", "root-1", store.CAStateActive, at(time.Hour)),
	}
	revoked := testCA("int-r", store.CAKindIntermediate, "shop", "root-1", store.CAStateRevoked, at(3*time.Hour))
	revoked.RevokedAt = ptr(at(4 * time.Hour))
	cas = append(cas, revoked)
	for _, ca := range cas {
		must(t, st.CreateCA(ctx, ca))
	}

	for _, ca := range cas {
		got, err := st.GetCA(ctx, ca.ID)
		must(t, err)
		wantCA(t, got, ca)
	}

	errTests := []struct {
		name   string
		ca     store.CA
		target error
	}{
		{"duplicate ID", testCA("root-1", store.CAKindRoot, "", "", store.CAStateActive, at(0)), store.ErrConflict},
		{"unknown kind", testCA("x", "leaf", "", "", store.CAStateActive, at(0)), nil},
		{"unknown state", testCA("y", store.CAKindRoot, "", "", "dormant", at(0)), nil},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			err := st.CreateCA(ctx, tt.ca)
			if err == nil {
				t.Fatal("CreateCA succeeded")
			}
			if tt.target != nil {
				wantErr(t, "CreateCA", err, tt.target)
			}
		})
	}

	_, err := st.GetCA(ctx, "missing")
	wantErr(t, "GetCA(missing)", err, store.ErrNotFound)

	list, err := st.ListCAs(ctx)
	must(t, err)
	var ids []string
	for _, ca := range list {
		ids = append(ids, ca.ID)
	}
	if want := []string{"root-1", "int-a", "int-b", "int-c", "int-r"}; !slices.Equal(ids, want) {
		t.Errorf("ListCAs order = %v, want %v", ids, want)
	}
	for _, ca := range list {
		if ca.ID == "int-c" {
			wantCA(t, ca, cas[0])
		}
	}
}

func testCAState(t *testing.T, st *store.Store) {
	ctx := t.Context()
	must(t, st.CreateCA(ctx, testCA("int-1", store.CAKindIntermediate, "payments", "root-1", store.CAStatePrepared, at(0))))

	steps := []struct {
		name      string
		state     string
		revokedAt *time.Time
		wantAt    *time.Time
	}{
		{"activate", store.CAStateActive, nil, nil},
		{"retiring", store.CAStateRetiring, nil, nil},
		{"revoke", store.CAStateRevoked, ptr(at(time.Hour)), ptr(at(time.Hour))},
		{"revoke again keeps the first time", store.CAStateRevoked, ptr(at(2 * time.Hour)), ptr(at(time.Hour))},
		{"nil leaves the time", store.CAStateRetired, nil, ptr(at(time.Hour))},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			must(t, st.SetCAState(ctx, "int-1", tt.state, tt.revokedAt))
			got, err := st.GetCA(ctx, "int-1")
			must(t, err)
			if got.State != tt.state {
				t.Errorf("State = %q, want %q", got.State, tt.state)
			}
			wantTimePtr(t, "RevokedAt", got.RevokedAt, tt.wantAt)
		})
	}

	wantErr(t, "SetCAState(missing)", st.SetCAState(ctx, "missing", store.CAStateActive, nil), store.ErrNotFound)
	if err := st.SetCAState(ctx, "int-1", "dormant", nil); err == nil {
		t.Error("SetCAState accepted an unknown state")
	}
}

func testCRLNumber(t *testing.T, st *store.Store) {
	ctx := t.Context()
	must(t, st.CreateCA(ctx, testCA("a", store.CAKindIntermediate, "", "r", store.CAStateActive, at(0))))
	must(t, st.CreateCA(ctx, testCA("b", store.CAKindIntermediate, "", "r", store.CAStateActive, at(0))))
	for want := int64(1); want <= 3; want++ {
		n, err := st.NextCRLNumber(ctx, "a")
		must(t, err)
		if n != want {
			t.Errorf("NextCRLNumber(a) = %d, want %d", n, want)
		}
	}
	_, err := st.NextCRLNumber(ctx, "missing")
	wantErr(t, "NextCRLNumber(missing)", err, store.ErrNotFound)

	// Concurrent callers each get a distinct number, and together 1..N.
	const workers, each = 8, 10
	var (
		mu  sync.Mutex
		got []int64
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for range each {
				n, err := st.NextCRLNumber(ctx, "b")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got = append(got, n)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(got)
	for i, n := range got {
		if n != int64(i+1) {
			t.Fatalf("concurrent CRL numbers = %v, want 1..%d", got, workers*each)
		}
	}
}

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
		{ID: "bt-2", Service: "web", Hash: bytes.Repeat([]byte{2}, 32), CreatedAt: at(2 * time.Second)},
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

func testCert(serial, service, issuer string, notBefore time.Time, ttl time.Duration) store.Certificate {
	return store.Certificate{
		Serial: serial, Service: service, SPIFFEID: "spiffe://ward.test/svc/" + service,
		InstanceID: "inst-" + serial, IssuerID: issuer,
		NotBefore: notBefore, NotAfter: notBefore.Add(ttl), DER: []byte("der-" + serial),
	}
}

func wantCert(t *testing.T, got, want store.Certificate) {
	t.Helper()
	if got.Serial != want.Serial || got.Service != want.Service || got.SPIFFEID != want.SPIFFEID ||
		got.InstanceID != want.InstanceID || got.IssuerID != want.IssuerID || got.RevocationReason != want.RevocationReason ||
		!bytes.Equal(got.DER, want.DER) {
		t.Errorf("certificate = %+v, want %+v", got, want)
	}
	wantTime(t, "NotBefore", got.NotBefore, want.NotBefore)
	wantTime(t, "NotAfter", got.NotAfter, want.NotAfter)
	wantTimePtr(t, "RevokedAt", got.RevokedAt, want.RevokedAt)
}

func testCertificates(t *testing.T, st *store.Store) {
	ctx := t.Context()
	certs := []store.Certificate{
		testCert("1a2b", "web", "int-1", at(0), time.Hour),
		testCert("ff00ff00ff00ff00ff00ff00ff00ff00", "db", "int-1", at(time.Minute), 15*time.Minute),
		// ward's own component certificates belong to no registered service.
		testCert("c0ffee", "", "int-1", at(0), 24*time.Hour),
	}
	preRevoked := testCert("dead", "web", "int-1", at(0), time.Hour)
	preRevoked.RevokedAt, preRevoked.RevocationReason = ptr(at(time.Second)), 1
	certs = append(certs, preRevoked)
	for _, c := range certs {
		must(t, st.InsertCertificate(ctx, c))
	}
	wantErr(t, "InsertCertificate(dup)", st.InsertCertificate(ctx, testCert("1a2b", "other", "int-2", at(0), time.Hour)), store.ErrConflict)

	for _, c := range certs {
		got, err := st.GetCertificate(ctx, c.Serial)
		must(t, err)
		wantCert(t, got, c)
	}
	_, err := st.GetCertificate(ctx, "missing")
	wantErr(t, "GetCertificate(missing)", err, store.ErrNotFound)
}

func testRevokeCertificate(t *testing.T, st *store.Store) {
	ctx := t.Context()
	c := testCert("abc", "web", "int-1", at(0), time.Hour)
	must(t, st.InsertCertificate(ctx, c))

	steps := []struct {
		name   string
		at     time.Time
		reason int
	}{
		{"revoke", at(time.Minute), 1},                     // keyCompromise
		{"again keeps the first", at(2 * time.Minute), 4},  // superseded
		{"and again keeps the first", at(-time.Minute), 5}, // even if earlier
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			must(t, st.RevokeCertificate(ctx, "abc", tt.at, tt.reason))
			got, err := st.GetCertificate(ctx, "abc")
			must(t, err)
			want := c
			want.RevokedAt, want.RevocationReason = ptr(at(time.Minute)), 1
			wantCert(t, got, want)
		})
	}
	wantErr(t, "RevokeCertificate(missing)", st.RevokeCertificate(ctx, "missing", at(0), 1), store.ErrNotFound)
}

func testRevokeCertificatesBulk(t *testing.T, st *store.Store) {
	ctx := t.Context()
	now := at(time.Hour)
	certs := []store.Certificate{
		testCert("w2", "web", "int-1", at(50*time.Minute), time.Hour),
		testCert("w1", "web", "int-2", at(55*time.Minute), time.Hour),
		testCert("w-expired", "web", "int-1", at(0), 30*time.Minute),
		testCert("w-revoked", "web", "int-1", at(50*time.Minute), time.Hour),
		testCert("d1", "db", "int-1", at(50*time.Minute), time.Hour),
		testCert("d2", "db", "int-2", at(50*time.Minute), time.Hour),
	}
	for _, c := range certs {
		must(t, st.InsertCertificate(ctx, c))
	}
	must(t, st.RevokeCertificate(ctx, "w-revoked", at(55*time.Minute), 1))

	steps := []struct {
		name   string
		revoke func() ([]string, error)
		want   []string
	}{
		{"by service", func() ([]string, error) { return st.RevokeCertificatesByService(ctx, "web", now, 4) }, []string{"w1", "w2"}},
		{"by service again", func() ([]string, error) { return st.RevokeCertificatesByService(ctx, "web", now, 4) }, nil},
		{"by unknown service", func() ([]string, error) { return st.RevokeCertificatesByService(ctx, "nope", now, 4) }, nil},
		{"by issuer", func() ([]string, error) { return st.RevokeCertificatesByIssuer(ctx, "int-2", now, 2) }, []string{"d2"}},
		{"by issuer again", func() ([]string, error) { return st.RevokeCertificatesByIssuer(ctx, "int-2", now, 2) }, nil},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.revoke()
			must(t, err)
			if len(got) != 0 || len(tt.want) != 0 {
				if !slices.Equal(got, tt.want) {
					t.Errorf("revoked %v, want %v", got, tt.want)
				}
			}
		})
	}

	wantState := []struct {
		serial string
		at     *time.Time
		reason int
	}{
		{"w1", ptr(now), 4},
		{"w2", ptr(now), 4},
		{"w-expired", nil, 0},
		{"w-revoked", ptr(at(55 * time.Minute)), 1},
		{"d1", nil, 0},
		{"d2", ptr(now), 2},
	}
	for _, w := range wantState {
		got, err := st.GetCertificate(ctx, w.serial)
		must(t, err)
		wantTimePtr(t, w.serial+" RevokedAt", got.RevokedAt, w.at)
		if got.RevocationReason != w.reason {
			t.Errorf("%s reason = %d, want %d", w.serial, got.RevocationReason, w.reason)
		}
	}
}

func testRevocationLists(t *testing.T, st *store.Store) {
	ctx := t.Context()
	now := at(time.Hour)
	certs := []store.Certificate{
		testCert("b-live-revoked", "web", "int-1", at(50*time.Minute), time.Hour),
		testCert("a-live-revoked", "db", "int-1", at(50*time.Minute), time.Hour),
		testCert("c-live", "web", "int-1", at(50*time.Minute), time.Hour),
		testCert("d-expired-revoked", "web", "int-1", at(0), 30*time.Minute),
		testCert("e-expired", "web", "int-1", at(0), 30*time.Minute),
		testCert("f-other-issuer-revoked", "web", "int-2", at(50*time.Minute), time.Hour),
		testCert("g-other-issuer-live", "web", "int-2", at(50*time.Minute), time.Hour),
		testCert("h-expires-now-revoked", "web", "int-1", at(0), time.Hour), // NotAfter == now: expired
	}
	for _, c := range certs {
		must(t, st.InsertCertificate(ctx, c))
	}
	for _, serial := range []string{"b-live-revoked", "a-live-revoked", "d-expired-revoked", "f-other-issuer-revoked", "h-expires-now-revoked"} {
		must(t, st.RevokeCertificate(ctx, serial, at(10*time.Minute), 1))
	}

	crl, err := st.ListRevokedCertificates(ctx, "int-1", now)
	must(t, err)
	var serials []string
	for _, c := range crl {
		serials = append(serials, c.Serial)
		if c.RevokedAt == nil || c.RevocationReason != 1 || c.IssuerID != "int-1" {
			t.Errorf("CRL entry %+v", c)
		}
	}
	if want := []string{"a-live-revoked", "b-live-revoked"}; !slices.Equal(serials, want) {
		t.Errorf("ListRevokedCertificates(int-1) = %v, want %v", serials, want)
	}
	crl, err = st.ListRevokedCertificates(ctx, "int-3", now)
	must(t, err)
	if len(crl) != 0 {
		t.Errorf("ListRevokedCertificates(int-3) = %v, want none", crl)
	}

	all, err := st.ListRevokedSerials(ctx, now)
	must(t, err)
	if want := []string{"a-live-revoked", "b-live-revoked", "f-other-issuer-revoked"}; !slices.Equal(all, want) {
		t.Errorf("ListRevokedSerials = %v, want %v", all, want)
	}
	all, err = st.ListRevokedSerials(ctx, at(0))
	must(t, err)
	if len(all) != 5 {
		t.Errorf("ListRevokedSerials(before anything expired) = %v, want 5 serials", all)
	}

	counts := []struct {
		issuer string
		now    time.Time
		want   int
	}{
		{"int-1", now, 1},   // c-live
		{"int-2", now, 1},   // g-other-issuer-live
		{"int-1", at(0), 2}, // c-live, e-expired not yet expired
		{"int-1", at(3 * time.Hour), 0},
		{"int-3", now, 0},
	}
	for _, tt := range counts {
		n, err := st.CountActiveCertificates(ctx, tt.issuer, tt.now)
		must(t, err)
		if n != tt.want {
			t.Errorf("CountActiveCertificates(%s, %v) = %d, want %d", tt.issuer, tt.now, n, tt.want)
		}
	}
}

func testEvents(t *testing.T, st *store.Store) {
	ctx := t.Context()
	seq, err := st.LatestEventSeq(ctx)
	must(t, err)
	if seq != 0 {
		t.Errorf("LatestEventSeq on empty log = %d, want 0", seq)
	}
	evs, err := st.EventsSince(ctx, 0, 0)
	must(t, err)
	if len(evs) != 0 {
		t.Errorf("EventsSince on empty log = %v", evs)
	}

	before := time.Now().Add(-time.Second)
	appended := make([]store.Event, 0, 4)
	for i, p := range [][]byte{[]byte(`{"serials":["ab"]}`), nil, {0, 1, 0xff}, []byte(`{}`)} {
		ev, err := st.AppendEvent(ctx, fmt.Sprintf("kind-%d", i), p)
		must(t, err)
		if ev.Kind != fmt.Sprintf("kind-%d", i) || !bytes.Equal(ev.Payload, p) {
			t.Errorf("AppendEvent returned %+v", ev)
		}
		if i > 0 && ev.Seq <= appended[i-1].Seq {
			t.Errorf("seq %d after %d", ev.Seq, appended[i-1].Seq)
		}
		if ev.CreatedAt.Before(before) || ev.CreatedAt.After(time.Now().Add(time.Second)) ||
			ev.CreatedAt.Location() != time.UTC || !ev.CreatedAt.Equal(ev.CreatedAt.Truncate(time.Microsecond)) {
			t.Errorf("CreatedAt = %v, want now in UTC at µs precision", ev.CreatedAt)
		}
		appended = append(appended, ev)
	}

	same := func(t *testing.T, got, want []store.Event) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("got %d events, want %d", len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Seq != w.Seq || g.Kind != w.Kind || !bytes.Equal(g.Payload, w.Payload) || g.Payload == nil {
				t.Errorf("event %d = %+v, want %+v", i, g, w)
			}
			wantTime(t, "CreatedAt", g.CreatedAt, w.CreatedAt)
		}
	}
	tests := []struct {
		name  string
		since int64
		limit int
		want  []store.Event
	}{
		{"all", 0, 0, appended},
		{"after first", appended[0].Seq, 0, appended[1:]},
		{"limit", 0, 2, appended[:2]},
		{"after first, limit", appended[0].Seq, 1, appended[1:2]},
		{"after last", appended[3].Seq, 0, nil},
		{"negative limit is no limit", 0, -1, appended},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := st.EventsSince(ctx, tt.since, tt.limit)
			must(t, err)
			same(t, got, tt.want)
		})
	}

	seq, err = st.LatestEventSeq(ctx)
	must(t, err)
	if seq != appended[3].Seq {
		t.Errorf("LatestEventSeq = %d, want %d", seq, appended[3].Seq)
	}
}

// testEventsConcurrent appends from several goroutines while a watcher
// polls EventsSince from the last seq it saw: every seq must be unique,
// each writer's seqs must increase, and the watcher must see every event
// (an event never becomes visible before one with a smaller seq).
func testEventsConcurrent(t *testing.T, st *store.Store) {
	ctx := t.Context()
	const writers, each = 8, 25

	done := make(chan struct{})
	var seen []int64
	watcher := make(chan error, 1)
	go func() {
		var last int64
		poll := func() error {
			evs, err := st.EventsSince(ctx, last, 0)
			if err != nil {
				return err
			}
			for _, ev := range evs {
				if ev.Seq <= last {
					return fmt.Errorf("EventsSince(%d) returned seq %d", last, ev.Seq)
				}
				last = ev.Seq
				seen = append(seen, ev.Seq)
			}
			return nil
		}
		for {
			select {
			case <-done:
				watcher <- poll()
				return
			default:
			}
			if err := poll(); err != nil {
				watcher <- err
				return
			}
		}
	}()

	var wg sync.WaitGroup
	perWriter := make([][]int64, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				ev, err := st.AppendEvent(ctx, "test", fmt.Appendf(nil, `{"w":%d,"i":%d}`, w, i))
				if err != nil {
					t.Error(err)
					return
				}
				perWriter[w] = append(perWriter[w], ev.Seq)
			}
		})
	}
	wg.Wait()
	close(done)
	must(t, <-watcher)

	var all []int64
	for w, seqs := range perWriter {
		if !slices.IsSorted(seqs) {
			t.Errorf("writer %d seqs not increasing: %v", w, seqs)
		}
		all = append(all, seqs...)
	}
	slices.Sort(all)
	if len(slices.Compact(slices.Clone(all))) != writers*each {
		t.Fatalf("got %d unique seqs, want %d", len(slices.Compact(slices.Clone(all))), writers*each)
	}
	if !slices.Equal(seen, all) {
		t.Errorf("watcher saw %d events, want all %d in order (first gap or reorder breaks resumption)", len(seen), len(all))
	}
	evs, err := st.EventsSince(ctx, 0, 0)
	must(t, err)
	if len(evs) != writers*each {
		t.Fatalf("EventsSince(0) = %d events, want %d", len(evs), writers*each)
	}
	for i, ev := range evs {
		if ev.Seq != all[i] {
			t.Fatalf("EventsSince order: event %d has seq %d, want %d", i, ev.Seq, all[i])
		}
	}
	latest, err := st.LatestEventSeq(ctx)
	must(t, err)
	if latest != all[len(all)-1] {
		t.Errorf("LatestEventSeq = %d, want %d", latest, all[len(all)-1])
	}
}
