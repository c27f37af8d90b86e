package catalog

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wardsec/ward/internal/store"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("%s differs (run go test -update if the change is intended):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func shopCatalogue() ([]store.Service, []store.AccessRequest) {
	services := []store.Service{
		service("web", "front", "L1"),
		service("orders", "shop", "L2"),
		service("payments", "fin", "L3"),
		service("whoami", "demo", "L1"),
		service("end", "ops", "L2"), // a Mermaid keyword as a name
		revokedService("legacy", "shop", "L2"),
	}
	pending := grant("req-9", "web", "payments", "charges", "create")
	pending.State = store.RequestPending
	revoked := grant("req-8", "web", "legacy", "carts", "read")
	revoked.State = store.RequestRevoked
	grants := []store.AccessRequest{
		grant("req-1", "web", "orders", "orders", "read"),
		grant("req-2", "web", "orders", "orders", "write", "read"),
		grant("req-3", "web", "orders", "carts", "read"),
		grant("req-4", "orders", "payments", "charges", "create"),
		grant("req-5", "web", "whoami", "whoami", "read"),
		grant("req-6", "orders", "ghost", "x", "read"), // a service not in the list
		grant("req-7", "legacy", "orders", "orders", "read"),
		pending,
		revoked,
	}
	return services, grants
}

func TestGraphGolden(t *testing.T) {
	services, grants := shopCatalogue()
	tests := []struct {
		name, format, file string
		services           []store.Service
		grants             []store.AccessRequest
	}{
		{"dot", FormatDOT, "graph.dot", services, grants},
		{"mermaid", FormatMermaid, "graph.mmd", services, grants},
		{"dot without grants", FormatDOT, "graph-empty.dot", services[:2], nil},
		{"mermaid without grants", FormatMermaid, "graph-empty.mmd", services[:2], nil},
		{"dot quoting", FormatDOT, "graph-quoting.dot", []store.Service{service(`we"ird\`, "x", "L1#<b>")}, nil},
		{"mermaid quoting", FormatMermaid, "graph-quoting.mmd", []store.Service{service(`we"ird\`, "x", "L1#<b>")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Graph(tt.services, tt.grants, tt.format)
			if err != nil {
				t.Fatalf("Graph: %v", err)
			}
			golden(t, tt.file, got)
		})
	}
}

func TestGraphDeterministic(t *testing.T) {
	services, grants := shopCatalogue()
	for _, format := range []string{FormatDOT, FormatMermaid} {
		t.Run(format, func(t *testing.T) {
			first, err := Graph(services, grants, format)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				s := append([]store.Service(nil), services...)
				g := append([]store.AccessRequest(nil), grants...)
				// Rotate the inputs: the output must not depend on order.
				s = append(s[i%len(s):], s[:i%len(s)]...)
				g = append(g[i%len(g):], g[:i%len(g)]...)
				got, err := Graph(s, g, format)
				if err != nil {
					t.Fatal(err)
				}
				if got != first {
					t.Fatalf("output changed with input order:\n%s\n%s", first, got)
				}
			}
		})
	}
}

func TestGraphUnknownFormat(t *testing.T) {
	for _, format := range []string{"", "DOT", "svg", "mermaid "} {
		t.Run(format, func(t *testing.T) {
			_, err := Graph(nil, nil, format)
			if !errors.Is(err, ErrUnknownFormat) || !strings.Contains(err.Error(), "want dot or mermaid") {
				t.Fatalf("Graph(%q) error %v", format, err)
			}
		})
	}
}
