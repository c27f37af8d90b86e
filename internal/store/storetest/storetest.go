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
		{"Declarations", testDeclarations},
		{"DeclarationHistory", testDeclarationHistory},
		{"AccessRequests", testAccessRequests},
		{"ListAccessRequests", testListAccessRequests},
		{"DecideAccessRequest", testDecideAccessRequest},
		{"RevokeAccessGrant", testRevokeAccessGrant},
		{"AccessListVersions", testAccessListVersions},
		{"ConcurrentApprovals", testConcurrentApprovals},
		{"AccessListState", testAccessListState},
		{"OAuthClients", testOAuthClients},
		{"APIKeys", testAPIKeys},
		{"RevokedTokens", testRevokedTokens},
		{"SigningKeys", testSigningKeys},
		{"ComponentTokens", testComponentTokens},
		{"GatewayRoutes", testGatewayRoutes},
		{"PolicyVersions", testPolicyVersions},
		{"AgentEntries", testAgentEntries},
		{"PassportKeys", testPassportKeys},
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
