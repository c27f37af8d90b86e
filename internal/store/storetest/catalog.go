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

func wantDeclaration(t *testing.T, got, want store.Declaration) {
	t.Helper()
	if got.Seq != want.Seq || got.Service != want.Service || got.Version != want.Version || got.Serial != want.Serial {
		t.Errorf("Declaration = %+v, want %+v", got, want)
	}
	if !bytes.Equal(got.Manifest, want.Manifest) || got.Manifest == nil {
		t.Errorf("Declaration %d Manifest = %q, want %q (non-nil)", want.Seq, got.Manifest, want.Manifest)
	}
	wantTime(t, "Declaration.DeclaredAt", got.DeclaredAt, want.DeclaredAt)
}

func wantAccessRequest(t *testing.T, got, want store.AccessRequest) {
	t.Helper()
	if got.ID != want.ID || got.Consumer != want.Consumer || got.Provider != want.Provider || got.Resource != want.Resource ||
		!slices.Equal(got.Actions, want.Actions) || got.ConsumerVersion != want.ConsumerVersion || got.State != want.State ||
		got.Auto != want.Auto || got.DecidedBy != want.DecidedBy || got.DecidedByID != want.DecidedByID ||
		got.DecidedRole != want.DecidedRole || got.Reason != want.Reason ||
		got.RevokedBy != want.RevokedBy || got.RevokedByID != want.RevokedByID || got.RevokeReason != want.RevokeReason {
		t.Errorf("AccessRequest = %+v, want %+v", got, want)
	}
	wantTime(t, "AccessRequest.RequestedAt", got.RequestedAt, want.RequestedAt)
	wantTimePtr(t, "AccessRequest.DecidedAt", got.DecidedAt, want.DecidedAt)
	wantTimePtr(t, "AccessRequest.RevokedAt", got.RevokedAt, want.RevokedAt)
}

// pendingRequest is a fresh request of consumer for provider's resource.
func pendingRequest(id, consumer, provider, resource string, requested time.Time) store.AccessRequest {
	return store.AccessRequest{
		ID: id, Consumer: consumer, Provider: provider, Resource: resource,
		Actions: []string{"read"}, ConsumerVersion: "1.0.0",
		State: store.RequestPending, RequestedAt: requested,
	}
}

// autoApproved is pendingRequest approved by rule.
func autoApproved(id, consumer, provider, resource string, requested time.Time) store.AccessRequest {
	r := pendingRequest(id, consumer, provider, resource, requested)
	r.State = store.RequestApproved
	r.Auto = true
	r.DecidedBy, r.DecidedRole = "auto", "auto"
	r.DecidedAt = ptr(requested)
	return r
}

func requestIDs(rs []store.AccessRequest) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return ids
}

func wantVersion(t *testing.T, st *store.Store, provider string, want int64) {
	t.Helper()
	v, err := st.AccessListVersion(t.Context(), provider)
	must(t, err)
	if v != want {
		t.Errorf("AccessListVersion(%q) = %d, want %d", provider, v, want)
	}
}

func testDeclarations(t *testing.T, st *store.Store) {
	ctx := t.Context()
	_, err := st.LatestDeclaration(ctx, "web")
	wantErr(t, "LatestDeclaration(none)", err, store.ErrNotFound)
	list, err := st.ListLatestDeclarations(ctx)
	must(t, err)
	if len(list) != 0 {
		t.Errorf("ListLatestDeclarations on an empty store = %+v", list)
	}

	decls := []store.Declaration{
		{Service: "web", Version: "1.0.0", Manifest: []byte(`{"service":"web","version":"1.0.0"}`), Serial: "0a", DeclaredAt: at(0)},
		{Service: "whoami", Version: "0.1.0", Manifest: []byte{0, 1, 0xfe, 0xff}, Serial: "0b", DeclaredAt: at(time.Second)},
		// Declared "earlier" (a replica's clock): Seq, not DeclaredAt, makes it the latest.
		{Service: "web", Version: "1.1.0", Manifest: []byte(`{"service":"web","version":"1.1.0"}`), Serial: "0c", DeclaredAt: at(-time.Hour)},
		{Service: "api", Version: "2.0.0+build.7", Manifest: nil, Serial: "0d", DeclaredAt: at(3 * time.Second)},
	}
	for i := range decls {
		got, v, err := st.PutDeclaration(ctx, decls[i], false)
		must(t, err)
		if v != 0 {
			t.Errorf("PutDeclaration(%s, no bump) version = %d, want 0", decls[i].Service, v)
		}
		if i > 0 && got.Seq <= decls[i-1].Seq {
			t.Errorf("declaration %d Seq %d after %d", i, got.Seq, decls[i-1].Seq)
		}
		want := decls[i]
		want.Seq = got.Seq
		if got.Service != want.Service || got.Version != want.Version || got.Serial != want.Serial ||
			!bytes.Equal(got.Manifest, want.Manifest) || !got.DeclaredAt.Equal(want.DeclaredAt) {
			t.Errorf("PutDeclaration returned %+v, want its input %+v with Seq", got, want)
		}
		decls[i].Seq = got.Seq
	}
	decls[3].Manifest = []byte{} // nil is stored as empty

	latest := []struct {
		service string
		want    store.Declaration
	}{
		{"web", decls[2]},
		{"whoami", decls[1]},
		{"api", decls[3]},
	}
	for _, tt := range latest {
		t.Run("latest "+tt.service, func(t *testing.T) {
			got, err := st.LatestDeclaration(ctx, tt.service)
			must(t, err)
			wantDeclaration(t, got, tt.want)
		})
	}
	_, err = st.LatestDeclaration(ctx, "missing")
	wantErr(t, "LatestDeclaration(missing)", err, store.ErrNotFound)

	list, err = st.ListLatestDeclarations(ctx)
	must(t, err)
	want := []store.Declaration{decls[3], decls[2], decls[1]} // by service
	if len(list) != len(want) {
		t.Fatalf("ListLatestDeclarations returned %d declarations, want %d", len(list), len(want))
	}
	for i := range want {
		wantDeclaration(t, list[i], want[i])
	}
}

// testDeclarationHistory: the newest DeclarationsKept declarations of a
// service are kept, newest first; other services' are untouched.
func testDeclarationHistory(t *testing.T, st *store.Store) {
	ctx := t.Context()
	other, _, err := st.PutDeclaration(ctx, store.Declaration{Service: "other", Version: "1", Manifest: []byte("{}"), DeclaredAt: at(0)}, false)
	must(t, err)
	var last store.Declaration
	for i := range store.DeclarationsKept + 5 {
		last, _, err = st.PutDeclaration(ctx, store.Declaration{Service: "web", Version: fmt.Sprintf("1.0.%d", i), Manifest: []byte("{}"), DeclaredAt: at(time.Duration(i) * time.Second)}, false)
		must(t, err)
	}
	hist, err := st.ListDeclarations(ctx, "web")
	must(t, err)
	if len(hist) != store.DeclarationsKept {
		t.Fatalf("kept %d declarations, want %d", len(hist), store.DeclarationsKept)
	}
	if hist[0].Seq != last.Seq || hist[0].Version != fmt.Sprintf("1.0.%d", store.DeclarationsKept+4) || hist[len(hist)-1].Version != "1.0.5" {
		t.Fatalf("history runs from %s to %s", hist[0].Version, hist[len(hist)-1].Version)
	}
	for i := 1; i < len(hist); i++ {
		if hist[i].Seq >= hist[i-1].Seq {
			t.Fatalf("history not newest first at %d", i)
		}
	}
	o, err := st.ListDeclarations(ctx, "other")
	must(t, err)
	if len(o) != 1 || o[0].Seq != other.Seq {
		t.Fatalf("another service's history changed: %+v", o)
	}
}

func testAccessRequests(t *testing.T, st *store.Store) {
	ctx := t.Context()
	full := store.AccessRequest{
		ID: "req-00000000000000a1", Consumer: "web", Provider: "whoami", Resource: "whoami",
		Actions: []string{"list", "read"}, ConsumerVersion: "1.4.0", State: store.RequestRevoked, RequestedAt: at(0),
		Auto: true, DecidedBy: "auto", DecidedRole: "auto", DecidedAt: ptr(at(time.Second)), Reason: "L1 to L1, opted in",
		RevokedBy: "alice", RevokedByID: "adm-1", RevokedAt: ptr(at(time.Hour)), RevokeReason: "service retired",
	}
	pending := pendingRequest("req-00000000000000a2", "web", "orders", "orders", at(time.Minute))
	pending.Actions = []string{"create", "read", "update"}
	approved := autoApproved("req-00000000000000a3", "api", "cart", "items", at(2*time.Minute))

	creates := []struct {
		name    string
		r       store.AccessRequest
		version int64
	}{
		{"every field set", full, 0},
		{"pending, nil pointers", pending, 0},
		{"approved bumps the provider", approved, 1},
	}
	for _, tt := range creates {
		t.Run(tt.name, func(t *testing.T) {
			v, err := st.CreateAccessRequest(ctx, tt.r)
			must(t, err)
			if v != tt.version {
				t.Errorf("CreateAccessRequest version = %d, want %d", v, tt.version)
			}
			got, err := st.GetAccessRequest(ctx, tt.r.ID)
			must(t, err)
			wantAccessRequest(t, got, tt.r)
		})
	}
	wantVersion(t, st, "cart", 1)
	wantVersion(t, st, "whoami", 0) // created revoked: no bump
	wantVersion(t, st, "orders", 0)

	_, err := st.GetAccessRequest(ctx, "req-missing")
	wantErr(t, "GetAccessRequest(missing)", err, store.ErrNotFound)

	errTests := []struct {
		name   string
		r      store.AccessRequest
		target error // nil: any error but ErrConflict and ErrNotFound
	}{
		{"duplicate ID", pendingRequest(full.ID, "x", "y", "z", at(0)), store.ErrConflict},
		{"duplicate ID, approved", autoApproved(approved.ID, "x", "y", "z", at(0)), store.ErrConflict},
		{"second pending request", pendingRequest("req-00000000000000b1", "web", "orders", "orders", at(time.Hour)), store.ErrConflict},
		{"unknown state", func() store.AccessRequest {
			r := pendingRequest("req-00000000000000b2", "a", "b", "c", at(0))
			r.State = "granted"
			return r
		}(), nil},
		{"empty state", func() store.AccessRequest {
			r := pendingRequest("req-00000000000000b3", "a", "b", "c", at(0))
			r.State = ""
			return r
		}(), nil},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := st.CreateAccessRequest(ctx, tt.r)
			if err == nil {
				t.Fatal("CreateAccessRequest succeeded")
			}
			if v != 0 {
				t.Errorf("failed CreateAccessRequest returned version %d", v)
			}
			if tt.target != nil {
				wantErr(t, "CreateAccessRequest", err, tt.target)
			} else if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
				t.Errorf("CreateAccessRequest: err = %v, want neither ErrConflict nor ErrNotFound", err)
			}
		})
	}
	for _, id := range []string{"req-00000000000000b1", "req-00000000000000b2", "req-00000000000000b3"} {
		_, err := st.GetAccessRequest(ctx, id)
		wantErr(t, "GetAccessRequest of a rejected request", err, store.ErrNotFound)
	}
	got, err := st.GetAccessRequest(ctx, approved.ID)
	must(t, err)
	wantAccessRequest(t, got, approved) // the failed duplicate changed nothing
	wantVersion(t, st, "cart", 1)       // nor bumped the version
	wantVersion(t, st, "y", 0)

	// Only pending requests are unique per (consumer, provider, resource).
	oks := []store.AccessRequest{
		pendingRequest("req-00000000000000c1", "web", "orders", "invoices", at(0)), // another resource
		pendingRequest("req-00000000000000c2", "api", "orders", "orders", at(0)),   // another consumer
		autoApproved("req-00000000000000c3", "web", "orders", "orders", at(0)),     // approved beside a pending one
		func() store.AccessRequest {
			r := pendingRequest("req-00000000000000c4", "web", "orders", "orders", at(0))
			r.State = store.RequestDenied
			return r
		}(),
	}
	for _, r := range oks {
		_, err := st.CreateAccessRequest(ctx, r)
		must(t, err)
	}
}

func testListAccessRequests(t *testing.T, st *store.Store) {
	ctx := t.Context()
	withState := func(r store.AccessRequest, state string) store.AccessRequest {
		r.State = state
		return r
	}
	// Created out of ID order; req-2 and req-3 share a time.
	rs := []store.AccessRequest{
		pendingRequest("req-1", "web", "whoami", "whoami", at(2*time.Second)),
		autoApproved("req-3", "api", "whoami", "whoami", at(time.Second)),
		pendingRequest("req-2", "web", "orders", "orders", at(time.Second)),
		withState(pendingRequest("req-4", "api", "whoami", "admin", at(3*time.Second)), store.RequestDenied),
		withState(pendingRequest("req-5", "cart", "orders", "orders", at(0)), store.RequestRevoked),
	}
	for _, r := range rs {
		_, err := st.CreateAccessRequest(ctx, r)
		must(t, err)
	}

	tests := []struct {
		name string
		f    store.AccessRequestFilter
		want []string
	}{
		{"all", store.AccessRequestFilter{}, []string{"req-5", "req-2", "req-3", "req-1", "req-4"}},
		{"pending", store.AccessRequestFilter{States: []string{store.RequestPending}}, []string{"req-2", "req-1"}},
		{"pending or approved", store.AccessRequestFilter{States: []string{store.RequestApproved, store.RequestPending}}, []string{"req-2", "req-3", "req-1"}},
		{"consumer", store.AccessRequestFilter{Consumer: "web"}, []string{"req-2", "req-1"}},
		{"provider", store.AccessRequestFilter{Provider: "whoami"}, []string{"req-3", "req-1", "req-4"}},
		{"provider and resource", store.AccessRequestFilter{Provider: "whoami", Resource: "whoami"}, []string{"req-3", "req-1"}},
		{"resource", store.AccessRequestFilter{Resource: "orders"}, []string{"req-5", "req-2"}},
		{"consumer and state", store.AccessRequestFilter{Consumer: "api", States: []string{store.RequestDenied}}, []string{"req-4"}},
		{"every field", store.AccessRequestFilter{States: []string{store.RequestRevoked}, Consumer: "cart", Provider: "orders", Resource: "orders"}, []string{"req-5"}},
		{"no such consumer", store.AccessRequestFilter{Consumer: "nobody"}, nil},
		{"no such state", store.AccessRequestFilter{States: []string{"granted"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := st.ListAccessRequests(ctx, tt.f)
			must(t, err)
			if ids := requestIDs(got); !slices.Equal(ids, tt.want) {
				t.Errorf("ListAccessRequests(%+v) = %v, want %v", tt.f, ids, tt.want)
			}
		})
	}

	got, err := st.ListAccessRequests(ctx, store.AccessRequestFilter{States: []string{store.RequestApproved}})
	must(t, err)
	if len(got) != 1 {
		t.Fatalf("approved requests = %v", requestIDs(got))
	}
	wantAccessRequest(t, got[0], rs[1]) // every field survives listing
}

func testDecideAccessRequest(t *testing.T, st *store.Store) {
	ctx := t.Context()
	for _, r := range []store.AccessRequest{
		pendingRequest("req-p1", "web", "whoami", "whoami", at(0)),
		pendingRequest("req-p2", "web", "whoami", "admin", at(time.Second)),
		pendingRequest("req-p3", "api", "whoami", "whoami", at(2*time.Second)),
		pendingRequest("req-p4", "cart", "whoami", "whoami", at(3*time.Second)),
	} {
		_, err := st.CreateAccessRequest(ctx, r)
		must(t, err)
	}
	v, err := st.CreateAccessRequest(ctx, autoApproved("req-g1", "db", "whoami", "whoami", at(0)))
	must(t, err)
	if v != 1 {
		t.Fatalf("auto-approved request: version %d, want 1", v)
	}

	decision := func(state string, d time.Duration) store.AccessDecision {
		return store.AccessDecision{State: state, By: "alice", ByID: "adm-7", Role: "security", Reason: "needed for the checkout page", At: at(d)}
	}
	tests := []struct {
		name      string
		id        string
		d         store.AccessDecision
		wantState string // state of the returned request
		version   int64
		target    error // ErrConflict, ErrNotFound, errAny or nil
	}{
		{"approve", "req-p1", decision(store.RequestApproved, time.Hour), store.RequestApproved, 2, nil},
		{"approve twice", "req-p1", decision(store.RequestApproved, 2*time.Hour), store.RequestApproved, 0, store.ErrConflict},
		{"deny an approved one", "req-p1", decision(store.RequestDenied, 2*time.Hour), store.RequestApproved, 0, store.ErrConflict},
		{"deny", "req-p2", decision(store.RequestDenied, time.Hour), store.RequestDenied, 0, nil},
		{"approve a denied one", "req-p2", decision(store.RequestApproved, 2*time.Hour), store.RequestDenied, 0, store.ErrConflict},
		{"supersede", "req-p3", store.AccessDecision{State: store.RequestSuperseded, At: at(time.Hour)}, store.RequestSuperseded, 0, nil},
		{"approve an auto-approved one", "req-g1", decision(store.RequestApproved, time.Hour), store.RequestApproved, 0, store.ErrConflict},
		{"missing", "req-missing", decision(store.RequestApproved, time.Hour), "", 0, store.ErrNotFound},
		{"revoked is not a decision", "req-p4", decision(store.RequestRevoked, time.Hour), "", 0, errAny},
		{"pending is not a decision", "req-p4", decision(store.RequestPending, time.Hour), "", 0, errAny},
		{"empty is not a decision", "req-p4", store.AccessDecision{At: at(time.Hour)}, "", 0, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := st.GetAccessRequest(ctx, tt.id)
			got, v, err := st.DecideAccessRequest(ctx, tt.id, tt.d)
			switch tt.target {
			case nil:
				must(t, err)
			case errAny:
				if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
					t.Errorf("err = %v, want an error that is neither ErrConflict nor ErrNotFound", err)
				}
			default:
				wantErr(t, "DecideAccessRequest", err, tt.target)
			}
			if v != tt.version {
				t.Errorf("version = %d, want %d", v, tt.version)
			}
			if got.State != tt.wantState {
				t.Errorf("returned State = %q, want %q", got.State, tt.wantState)
			}
			after, _ := st.GetAccessRequest(ctx, tt.id)
			if tt.target != nil {
				// Nothing changed, and a conflict returns the request as it is.
				wantAccessRequest(t, after, before)
				if tt.target == store.ErrConflict {
					wantAccessRequest(t, got, before)
				}
				return
			}
			want := before
			want.State = tt.d.State
			want.DecidedBy, want.DecidedByID, want.DecidedRole, want.Reason = tt.d.By, tt.d.ByID, tt.d.Role, tt.d.Reason
			want.DecidedAt = ptr(tt.d.At)
			wantAccessRequest(t, got, want)
			wantAccessRequest(t, after, want)
		})
	}
	wantVersion(t, st, "whoami", 2) // only the approval bumped it

	// Decided requests free their (consumer, provider, resource) for a new
	// pending request.
	for _, r := range []store.AccessRequest{
		pendingRequest("req-p5", "web", "whoami", "whoami", at(time.Hour)),
		pendingRequest("req-p6", "web", "whoami", "admin", at(time.Hour)),
		pendingRequest("req-p7", "api", "whoami", "whoami", at(time.Hour)),
	} {
		_, err := st.CreateAccessRequest(ctx, r)
		must(t, err)
	}
}

// errAny marks a test case that expects some error other than the
// sentinels.
var errAny = errors.New("any error")

func testRevokeAccessGrant(t *testing.T, st *store.Store) {
	ctx := t.Context()
	grant := autoApproved("req-g1", "web", "whoami", "whoami", at(0))
	_, err := st.CreateAccessRequest(ctx, grant)
	must(t, err)
	_, err = st.CreateAccessRequest(ctx, pendingRequest("req-p1", "api", "whoami", "whoami", at(time.Second)))
	must(t, err)
	wantVersion(t, st, "whoami", 1)

	revocation := func(d time.Duration) store.AccessDecision {
		// State is ignored by RevokeAccessGrant.
		return store.AccessDecision{State: store.RequestApproved, By: "bob", ByID: "adm-9", Role: "admin", Reason: "incident 42", At: at(d)}
	}
	pendingBefore, err := st.GetAccessRequest(ctx, "req-p1")
	must(t, err)
	got, v, err := st.RevokeAccessGrant(ctx, "req-p1", revocation(time.Hour))
	wantErr(t, "RevokeAccessGrant(pending)", err, store.ErrConflict)
	if v != 0 || got.State != store.RequestPending {
		t.Errorf("RevokeAccessGrant(pending) = state %q, version %d; want the pending request, 0", got.State, v)
	}
	wantAccessRequest(t, got, pendingBefore)

	got, v, err = st.RevokeAccessGrant(ctx, grant.ID, revocation(time.Hour))
	must(t, err)
	if v != 2 {
		t.Errorf("RevokeAccessGrant version = %d, want 2", v)
	}
	want := grant
	want.State = store.RequestRevoked
	want.RevokedBy, want.RevokedByID, want.RevokeReason, want.RevokedAt = "bob", "adm-9", "incident 42", ptr(at(time.Hour))
	wantAccessRequest(t, got, want) // the decision fields are kept
	after, err := st.GetAccessRequest(ctx, grant.ID)
	must(t, err)
	wantAccessRequest(t, after, want)

	got, v, err = st.RevokeAccessGrant(ctx, grant.ID, revocation(2*time.Hour))
	wantErr(t, "RevokeAccessGrant(twice)", err, store.ErrConflict)
	if v != 0 {
		t.Errorf("second RevokeAccessGrant version = %d, want 0", v)
	}
	wantAccessRequest(t, got, want) // the first revocation is kept

	_, v, err = st.RevokeAccessGrant(ctx, "req-missing", revocation(time.Hour))
	wantErr(t, "RevokeAccessGrant(missing)", err, store.ErrNotFound)
	if v != 0 {
		t.Errorf("RevokeAccessGrant(missing) version = %d", v)
	}

	_, v, err = st.DecideAccessRequest(ctx, "req-p1", store.AccessDecision{State: store.RequestApproved, By: "carol", Role: "team:core", At: at(time.Hour)})
	must(t, err)
	if v != 3 {
		t.Errorf("approval version = %d, want 3", v)
	}
	_, v, err = st.RevokeAccessGrant(ctx, "req-p1", revocation(2*time.Hour))
	must(t, err)
	if v != 4 {
		t.Errorf("revocation version = %d, want 4", v)
	}
	_, _, err = st.DecideAccessRequest(ctx, grant.ID, store.AccessDecision{State: store.RequestApproved, At: at(3 * time.Hour)})
	wantErr(t, "DecideAccessRequest(revoked)", err, store.ErrConflict)
	wantVersion(t, st, "whoami", 4)
}

func testAccessListVersions(t *testing.T, st *store.Store) {
	ctx := t.Context()
	wantVersion(t, st, "unknown", 0)

	bumps := []struct {
		provider string
		want     int64
	}{{"a", 1}, {"a", 2}, {"b", 1}, {"a", 3}}
	for _, b := range bumps {
		v, err := st.BumpAccessListVersion(ctx, b.provider)
		must(t, err)
		if v != b.want {
			t.Errorf("BumpAccessListVersion(%q) = %d, want %d", b.provider, v, b.want)
		}
	}
	wantVersion(t, st, "a", 3)
	wantVersion(t, st, "b", 1)

	decls := []struct {
		name string
		bump bool
		want int64
	}{
		{"first, no bump", false, 0},
		{"bump creates the version", true, 1},
		{"no bump returns the current version", false, 1},
		{"bump again", true, 2},
	}
	for i, tt := range decls {
		t.Run(tt.name, func(t *testing.T) {
			d := store.Declaration{Service: "c", Version: fmt.Sprintf("1.0.%d", i), Manifest: []byte("{}"), Serial: "01", DeclaredAt: at(0)}
			_, v, err := st.PutDeclaration(ctx, d, tt.bump)
			must(t, err)
			if v != tt.want {
				t.Errorf("PutDeclaration(bump %v) version = %d, want %d", tt.bump, v, tt.want)
			}
			wantVersion(t, st, "c", tt.want)
		})
	}

	creates := []struct {
		name  string
		r     store.AccessRequest
		want  int64 // returned
		after int64 // AccessListVersion("c") afterwards
	}{
		{"pending", pendingRequest("req-1", "x", "c", "r", at(0)), 0, 2},
		{"auto-approved", autoApproved("req-2", "y", "c", "r", at(0)), 3, 3},
		{"another provider", autoApproved("req-3", "y", "d", "r", at(0)), 1, 3},
	}
	for _, tt := range creates {
		t.Run(tt.name, func(t *testing.T) {
			v, err := st.CreateAccessRequest(ctx, tt.r)
			must(t, err)
			if v != tt.want {
				t.Errorf("CreateAccessRequest version = %d, want %d", v, tt.want)
			}
			wantVersion(t, st, "c", tt.after)
		})
	}

	// Concurrent bumps: every one counts, each returns a distinct value.
	const goroutines, each = 8, 10
	got := make([][]int64, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				v, err := st.BumpAccessListVersion(ctx, "e")
				if err != nil {
					t.Error(err)
					return
				}
				got[g] = append(got[g], v)
			}
		})
	}
	wg.Wait()
	all := slices.Concat(got...)
	slices.Sort(all)
	for i, v := range all {
		if v != int64(i+1) {
			t.Fatalf("concurrent bumps returned %v, want 1..%d", all, goroutines*each)
		}
	}
	wantVersion(t, st, "e", goroutines*each)
}

// testConcurrentApprovals: N reviewers approving N requests of one
// provider at once end at version N, each seeing a distinct version; two
// reviewers deciding the same request at once: exactly one wins.
func testConcurrentApprovals(t *testing.T, st *store.Store) {
	ctx := t.Context()
	const n = 16
	for i := range n {
		_, err := st.CreateAccessRequest(ctx, pendingRequest(fmt.Sprintf("req-%02d", i), fmt.Sprintf("svc-%02d", i), "whoami", "whoami", at(0)))
		must(t, err)
	}
	versions := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, v, err := st.DecideAccessRequest(ctx, fmt.Sprintf("req-%02d", i),
				store.AccessDecision{State: store.RequestApproved, By: "alice", Role: "security", At: at(time.Hour)})
			if err != nil {
				t.Error(err)
				return
			}
			if r.State != store.RequestApproved {
				t.Errorf("request %d state %q", i, r.State)
			}
			versions[i] = v
		})
	}
	wg.Wait()
	slices.Sort(versions)
	for i, v := range versions {
		if v != int64(i+1) {
			t.Fatalf("approval versions = %v, want 1..%d", versions, n)
		}
	}
	wantVersion(t, st, "whoami", n)
	grants, err := st.ListAccessRequests(ctx, store.AccessRequestFilter{Provider: "whoami", States: []string{store.RequestApproved}})
	must(t, err)
	if len(grants) != n {
		t.Errorf("%d grants, want %d", len(grants), n)
	}

	// Races on one request: an approval and a denial, per request.
	const races = 8
	for i := range races {
		_, err := st.CreateAccessRequest(ctx, pendingRequest(fmt.Sprintf("race-%d", i), fmt.Sprintf("svc-%02d", i), "orders", "orders", at(0)))
		must(t, err)
	}
	type outcome struct {
		state    string
		conflict bool
	}
	outcomes := make([][2]outcome, races)
	for i := range races {
		for j, state := range []string{store.RequestApproved, store.RequestDenied} {
			wg.Go(func() {
				_, _, err := st.DecideAccessRequest(ctx, fmt.Sprintf("race-%d", i), store.AccessDecision{State: state, By: "r", Role: "admin", At: at(time.Hour)})
				if err != nil && !errors.Is(err, store.ErrConflict) {
					t.Error(err)
				}
				outcomes[i][j] = outcome{state, err != nil}
			})
		}
	}
	wg.Wait()
	approvals := 0
	for i, o := range outcomes {
		if o[0].conflict == o[1].conflict {
			t.Errorf("race %d: outcomes %+v, want exactly one conflict", i, o)
			continue
		}
		winner := o[0]
		if o[0].conflict {
			winner = o[1]
		}
		r, err := st.GetAccessRequest(ctx, fmt.Sprintf("race-%d", i))
		must(t, err)
		if r.State != winner.state {
			t.Errorf("race %d: stored state %q, winner %q", i, r.State, winner.state)
		}
		if winner.state == store.RequestApproved {
			approvals++
		}
	}
	wantVersion(t, st, "orders", int64(approvals))
}

func testAccessListState(t *testing.T, st *store.Store) {
	ctx := t.Context()
	empty, err := st.AccessListState(ctx, "whoami")
	must(t, err)
	if empty.Version != 0 || empty.Declaration != nil || len(empty.Grants) != 0 {
		t.Errorf("AccessListState of an unknown provider = %+v, want zero", empty)
	}

	_, _, err = st.PutDeclaration(ctx, store.Declaration{Service: "whoami", Version: "1.0.0", Manifest: []byte("old"), Serial: "01", DeclaredAt: at(0)}, true)
	must(t, err)
	decl, _, err := st.PutDeclaration(ctx, store.Declaration{Service: "whoami", Version: "1.1.0", Manifest: []byte("new"), Serial: "02", DeclaredAt: at(time.Second)}, true)
	must(t, err)
	_, _, err = st.PutDeclaration(ctx, store.Declaration{Service: "other", Version: "9.0.0", Manifest: []byte("other"), Serial: "03", DeclaredAt: at(2 * time.Second)}, true)
	must(t, err)

	withState := func(r store.AccessRequest, state string) store.AccessRequest {
		r.State = state
		return r
	}
	grants := []store.AccessRequest{
		autoApproved("req-b-x", "b", "whoami", "x", at(0)),
		autoApproved("req-a-y", "a", "whoami", "y", at(time.Second)),
		autoApproved("req-a-x2", "a", "whoami", "x", at(2*time.Second)),
		autoApproved("req-a-x1", "a", "whoami", "x", at(3*time.Second)),
	}
	grants[1].Actions = []string{"read", "write"}
	others := []store.AccessRequest{
		pendingRequest("req-pending", "c", "whoami", "x", at(0)),
		withState(pendingRequest("req-denied", "d", "whoami", "x", at(0)), store.RequestDenied),
		withState(pendingRequest("req-superseded", "d", "whoami", "y", at(0)), store.RequestSuperseded),
		autoApproved("req-other", "a", "other", "x", at(0)),
		autoApproved("req-revoked", "e", "whoami", "x", at(0)),
	}
	for _, r := range slices.Concat(grants, others) {
		_, err := st.CreateAccessRequest(ctx, r)
		must(t, err)
	}
	_, _, err = st.RevokeAccessGrant(ctx, "req-revoked", store.AccessDecision{By: "bob", At: at(time.Hour)})
	must(t, err)

	got, err := st.AccessListState(ctx, "whoami")
	must(t, err)
	// 2 declarations + 5 approvals + 1 revocation.
	if got.Version != 8 {
		t.Errorf("Version = %d, want 8", got.Version)
	}
	if got.Declaration == nil {
		t.Fatal("Declaration = nil")
	}
	wantDeclaration(t, *got.Declaration, decl)
	want := []store.AccessRequest{grants[3], grants[2], grants[1], grants[0]} // consumer, resource, ID
	if ids := requestIDs(got.Grants); !slices.Equal(ids, requestIDs(want)) {
		t.Fatalf("Grants = %v, want %v", ids, requestIDs(want))
	}
	for i := range want {
		wantAccessRequest(t, got.Grants[i], want[i])
	}

	other, err := st.AccessListState(ctx, "other")
	must(t, err)
	if other.Version != 2 || other.Declaration == nil || other.Declaration.Service != "other" || !slices.Equal(requestIDs(other.Grants), []string{"req-other"}) {
		t.Errorf("AccessListState(other) = version %d, declaration %+v, grants %v", other.Version, other.Declaration, requestIDs(other.Grants))
	}

	t.Run("consistent under writes", func(t *testing.T) { testAccessListStateConsistent(t, st) })
}

// testAccessListStateConsistent reads AccessListState while a writer
// declares once and then approves grants one by one: every snapshot must
// show version == 1 + grants once declared (0 and no grants before).
// Reading the three parts outside one snapshot would break that.
func testAccessListStateConsistent(t *testing.T, st *store.Store) {
	ctx := t.Context()
	const provider, approvals, readers = "busy", 30, 4
	for i := range approvals {
		_, err := st.CreateAccessRequest(ctx, pendingRequest(fmt.Sprintf("busy-%02d", i), fmt.Sprintf("svc-%02d", i), provider, "r", at(0)))
		must(t, err)
	}

	done := make(chan struct{})
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		reads int
	)
	for range readers {
		wg.Go(func() {
			for {
				s, err := st.AccessListState(ctx, provider)
				if err != nil {
					t.Error(err)
					return
				}
				want := int64(0)
				if s.Declaration != nil {
					want = 1 + int64(len(s.Grants))
				} else if len(s.Grants) != 0 {
					t.Errorf("snapshot has %d grants and no declaration", len(s.Grants))
					return
				}
				if s.Version != want {
					t.Errorf("inconsistent snapshot: version %d, declared %v, %d grants", s.Version, s.Declaration != nil, len(s.Grants))
					return
				}
				mu.Lock()
				reads++
				mu.Unlock()
				select {
				case <-done:
					return
				default:
				}
			}
		})
	}

	_, _, err := st.PutDeclaration(ctx, store.Declaration{Service: provider, Version: "1", Manifest: []byte("{}"), Serial: "01", DeclaredAt: at(0)}, true)
	if err != nil {
		t.Error(err)
	}
	for i := range approvals {
		_, _, err := st.DecideAccessRequest(ctx, fmt.Sprintf("busy-%02d", i), store.AccessDecision{State: store.RequestApproved, By: "alice", Role: "security", At: at(time.Hour)})
		if err != nil {
			t.Error(err)
			break
		}
	}
	close(done)
	wg.Wait()
	if reads == 0 {
		t.Error("no snapshot was read")
	}

	final, err := st.AccessListState(ctx, provider)
	must(t, err)
	if final.Version != approvals+1 || len(final.Grants) != approvals {
		t.Errorf("final state: version %d, %d grants; want %d, %d", final.Version, len(final.Grants), approvals+1, approvals)
	}
}
