package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

func testPolicyVersions(t *testing.T, st *store.Store) {
	ctx := context.Background()
	if _, err := st.GetPolicyDomain(ctx, "orders"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("domain before a push: %v, want ErrNotFound", err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	add := func(kind string, rollbackOf int64) (store.PolicyVersion, store.PolicyDomain) {
		t.Helper()
		v, d, err := st.AddPolicyVersion(ctx, store.PolicyVersion{Domain: "orders", Content: []byte(`{"policies":[]}`), Digest: "d-" + kind,
			Kind: kind, RollbackOf: rollbackOf, CreatedBy: "alice", CreatedAt: now})
		if err != nil {
			t.Fatal(err)
		}
		return v, d
	}
	steps := []struct {
		kind                    string
		rollbackOf              int64
		version, active, shadow int64
	}{
		{store.PolicyKindPush, 0, 1, 1, 0},
		{store.PolicyKindShadow, 0, 2, 1, 2},
		{store.PolicyKindPush, 0, 3, 3, 0},
		{store.PolicyKindRollback, 1, 4, 4, 0},
	}
	for _, s := range steps {
		v, d := add(s.kind, s.rollbackOf)
		if v.Version != s.version || d.Head != s.version || d.Active != s.active || d.Shadow != s.shadow {
			t.Fatalf("%s: version %d, domain %+v; want version %d active %d shadow %d", s.kind, v.Version, d, s.version, s.active, s.shadow)
		}
	}
	add(store.PolicyKindShadow, 0)
	d, err := st.ClearPolicyShadow(ctx, "orders")
	if err != nil || d.Shadow != 0 || d.Head != 6 || d.Active != 4 {
		t.Fatalf("clear shadow: %+v %v", d, err)
	}
	if _, err := st.ClearPolicyShadow(ctx, "orders"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("clear without a shadow: %v", err)
	}
	v, err := st.GetPolicyVersion(ctx, "orders", 4)
	if err != nil || v.Kind != store.PolicyKindRollback || v.RollbackOf != 1 || !v.CreatedAt.Equal(now) || v.CreatedBy != "alice" {
		t.Fatalf("version 4: %+v %v", v, err)
	}
	list, err := st.ListPolicyVersions(ctx, "orders", 2)
	if err != nil || len(list) != 2 || list[0].Version != 5 {
		t.Fatalf("list: %+v %v", list, err)
	}
	if _, err := st.GetPolicyVersion(ctx, "orders", 99); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing version: %v", err)
	}
	domains, err := st.ListPolicyDomains(ctx)
	if err != nil || len(domains) != 1 {
		t.Fatalf("domains %+v %v", domains, err)
	}

	// Status: upsert per instance, prune old reports.
	put := func(instance string, version int64, at time.Time) {
		t.Helper()
		if err := st.PutPolicyStatus(ctx, []store.PolicyStatus{{Domain: "orders", Instance: instance, SPIFFEID: "spiffe://td/svc/orders",
			Version: version, Revision: version, ReportedAt: at}}, now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	put("a", 3, now.Add(-2*time.Hour))
	put("b", 3, now)
	put("b", 4, now)
	put("c", 4, now)
	got, err := st.ListPolicyStatus(ctx, "orders", now.Add(-time.Minute))
	if err != nil || len(got) != 2 || got[0].Instance != "b" || got[0].Version != 4 || got[1].Instance != "c" {
		t.Fatalf("status %+v %v", got, err)
	}
}
