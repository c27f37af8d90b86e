package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

func testAgentEntries(t *testing.T, st *store.Store) {
	ctx := context.Background()
	uid := 1000
	now := time.Now().UTC().Truncate(time.Second)
	for _, e := range []store.AgentEntry{
		{ID: "ae-1", Service: "orders", UID: &uid, CreatedBy: "alice", CreatedAt: now},
		{ID: "ae-2", Service: "payments", Host: "node-1", Path: "/usr/bin/payments", CreatedBy: "alice", CreatedAt: now},
		{ID: "ae-3", Service: "shipping", Host: "node-2", UID: &uid, CreatedBy: "alice", CreatedAt: now},
	} {
		if err := st.CreateAgentEntry(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateAgentEntry(ctx, store.AgentEntry{ID: "ae-1", Service: "x", CreatedAt: now}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate: %v", err)
	}
	got, err := st.ListAgentEntries(ctx, "node-1")
	if err != nil || len(got) != 2 || got[0].Service != "orders" || got[0].UID == nil || *got[0].UID != 1000 || got[1].Path != "/usr/bin/payments" || got[1].UID != nil {
		t.Fatalf("node-1: %+v %v", got, err)
	}
	if all, _ := st.ListAgentEntries(ctx, "*"); len(all) != 3 {
		t.Fatalf("all: %d", len(all))
	}
	if e, err := st.DeleteAgentEntry(ctx, "ae-2"); err != nil || e.Service != "payments" {
		t.Fatalf("delete: %+v %v", e, err)
	}
	if _, err := st.DeleteAgentEntry(ctx, "ae-2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}
