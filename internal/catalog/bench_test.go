package catalog

import (
	"fmt"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/wardsec/ward/internal/store"
)

// BenchmarkParseManifest parses a manifest of 20 provides and 20 consumes
// entries. The baseline only parses the same bytes into a yaml.Node, so
// the ratio shows the cost of the strict checks and validation.
func BenchmarkParseManifest(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("service: shop\nversion: 1.2.3\nprovides:\n")
	for i := range 20 {
		fmt.Fprintf(&sb, "  - resource: res%d\n    actions: [read, write, delete]\n", i)
	}
	sb.WriteString("consumes:\n")
	for i := range 20 {
		fmt.Fprintf(&sb, "  - service: svc%d\n    resource: res%d\n    actions: [read]\n", i, i)
	}
	data := []byte(sb.String())

	b.Run("baseline-yaml-node", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			var n yaml.Node
			if err := yaml.Unmarshal(data, &n); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := ParseManifest(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCompile compiles an access list from 10,000 grants of 1,000
// consumers. The baseline groups the same grants by consumer in a map,
// the least any compilation does.
func BenchmarkCompile(b *testing.B) {
	decl := declaration(b, 1, "service: orders\nversion: v1\nprovides:\n"+
		"  - {resource: r0, actions: [read, write]}\n  - {resource: r1, actions: [read, write]}\n"+
		"  - {resource: r2, actions: [read]}\n  - {resource: r3, actions: [read]}\n  - {resource: r4, actions: [read]}\n"+
		"  - {resource: r5, actions: [read]}\n  - {resource: r6, actions: [read]}\n  - {resource: r7, actions: [read]}\n"+
		"  - {resource: r8, actions: [read]}\n  - {resource: r9, actions: [read]}\n")
	st := store.AccessListState{Version: 1, Declaration: &decl}
	for i := range 10_000 {
		st.Grants = append(st.Grants, grant(fmt.Sprintf("req-%016x", i), fmt.Sprintf("c%d", i/10), "orders", fmt.Sprintf("r%d", i%10), "read", "write"))
	}

	b.Run("baseline-group", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := make(map[string][]store.AccessRequest)
			for _, g := range st.Grants {
				m[g.Consumer] = append(m[g.Consumer], g)
			}
		}
	})
	b.Run("compile", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Compile(td, "orders", st, nil, t0); err != nil {
				b.Fatal(err)
			}
		}
	})
}
