package guard

import (
	"context"
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// guardWith returns a guard holding a list of n consumers, each allowed
// read on whoami, and the consumers' IDs.
func guardWith(tb testing.TB, n int) (*Guard, []spiffeid.ID) {
	a := newTestAuthority(tb)
	names := make([]string, n)
	ids := make([]spiffeid.ID, n)
	for i := range n {
		names[i] = fmt.Sprintf("consumer-%05d", i)
		ids[i] = svc(names[i])
	}
	a.setList(1, names)
	g := newTestGuard(tb, a, nil)
	if err := g.Refresh(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return g, ids
}

// TestAllowedDoesNotAllocate pins the hot path at zero allocations.
func TestAllowedDoesNotAllocate(t *testing.T) {
	g, ids := guardWith(t, 10000)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		if !g.Allowed(ids[i%len(ids)], "whoami", "read") {
			t.Fatal("not allowed")
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("Allowed allocates %.1f times per call", allocs)
	}
	allocs = testing.AllocsPerRun(1000, func() {
		if err := g.Check(context.Background(), ids[0], "whoami", "read"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Check on a hit allocates %.1f times per call", allocs)
	}
}

// BenchmarkAllowed measures a hit at 10,000 entries against a baseline in
// the same run: a map keyed by the concatenated ID string (what a naive
// implementation would build per request).
func BenchmarkAllowed(b *testing.B) {
	g, ids := guardWith(b, 10000)
	b.Run("guard", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if !g.Allowed(ids[i%len(ids)], "whoami", "read") {
				b.Fatal("not allowed")
			}
		}
	})
	b.Run("guard-check", func(b *testing.B) {
		b.ReportAllocs()
		ctx := context.Background()
		for i := 0; b.Loop(); i++ {
			if g.Check(ctx, ids[i%len(ids)], "whoami", "read") != nil {
				b.Fatal("not allowed")
			}
		}
	})
	b.Run("baseline-string-map", func(b *testing.B) {
		m := make(map[string]bool, len(ids))
		for _, id := range ids {
			m[id.String()+" whoami read"] = true
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if !m[ids[i%len(ids)].String()+" whoami read"] {
				b.Fatal("not allowed")
			}
		}
	})
}
