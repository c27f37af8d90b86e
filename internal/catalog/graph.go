package catalog

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/wardsec/ward/internal/store"
)

// Graph formats.
const (
	FormatDOT     = "dot"
	FormatMermaid = "mermaid"
)

// ErrUnknownFormat is returned by Graph for a format other than FormatDOT
// and FormatMermaid.
var ErrUnknownFormat = errors.New("catalog: unknown graph format")

type edge struct {
	consumer, provider string
	label              string
}

// Graph draws who may call whom. Nodes are services, labelled "name (L2)"
// (and "revoked" for revoked ones), every service of services included;
// each (consumer, provider) pair with approved grants is one edge from
// consumer to provider, labelled "resource: a, b; resource2: c". A
// service a grant names that is not in services is drawn with its name
// alone. format is FormatDOT (digraph ward { ... }) or FormatMermaid
// (flowchart LR). The output is deterministic.
func Graph(services []store.Service, grants []store.AccessRequest, format string) (string, error) {
	if format != FormatDOT && format != FormatMermaid {
		return "", fmt.Errorf("%w %s (want %s or %s)", ErrUnknownFormat, quote(format), FormatDOT, FormatMermaid)
	}

	labels := make(map[string]string, len(services))
	for _, s := range services {
		label := fmt.Sprintf("%s (%s)", s.Name, s.Level)
		if s.RevokedAt != nil {
			label = fmt.Sprintf("%s (%s, revoked)", s.Name, s.Level)
		}
		labels[s.Name] = label
	}

	type pair struct{ consumer, provider string }
	byPair := make(map[pair]map[string]map[string]bool) // → resource → actions
	for _, g := range grants {
		if g.State != store.RequestApproved {
			continue
		}
		for _, name := range []string{g.Consumer, g.Provider} {
			if _, ok := labels[name]; !ok {
				labels[name] = name
			}
		}
		p := pair{g.Consumer, g.Provider}
		resources := byPair[p]
		if resources == nil {
			resources = make(map[string]map[string]bool)
			byPair[p] = resources
		}
		set := resources[g.Resource]
		if set == nil {
			set = make(map[string]bool)
			resources[g.Resource] = set
		}
		for _, a := range g.Actions {
			set[a] = true
		}
	}

	edges := make([]edge, 0, len(byPair))
	for p, resources := range byPair {
		parts := make([]string, 0, len(resources))
		for _, r := range sortedKeys(boolKeys(resources)) {
			parts = append(parts, r+": "+strings.Join(sortedKeys(resources[r]), ", "))
		}
		edges = append(edges, edge{p.consumer, p.provider, strings.Join(parts, "; ")})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		return cmp.Or(strings.Compare(a.consumer, b.consumer), strings.Compare(a.provider, b.provider))
	})
	names := sortedKeys(boolKeys(labels))

	var b strings.Builder
	if format == FormatDOT {
		writeDOT(&b, names, labels, edges)
	} else {
		writeMermaid(&b, names, labels, edges)
	}
	return b.String(), nil
}

func boolKeys[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func writeDOT(b *strings.Builder, names []string, labels map[string]string, edges []edge) {
	b.WriteString("digraph ward {\n\trankdir=LR;\n\tnode [shape=box];\n")
	for _, n := range names {
		fmt.Fprintf(b, "\t%s [label=%s];\n", dotQuote(n), dotQuote(labels[n]))
	}
	for _, e := range edges {
		fmt.Fprintf(b, "\t%s -> %s [label=%s];\n", dotQuote(e.consumer), dotQuote(e.provider), dotQuote(e.label))
	}
	b.WriteString("}\n")
}

// dotQuote makes s a DOT double-quoted ID.
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`)
	return `"` + r.Replace(s) + `"`
}

func writeMermaid(b *strings.Builder, names []string, labels map[string]string, edges []edge) {
	// Mermaid node IDs are generated (s0, s1, ...): service names could
	// collide with Mermaid keywords such as "end".
	ids := make(map[string]string, len(names))
	b.WriteString("flowchart LR\n")
	for i, n := range names {
		ids[n] = fmt.Sprintf("s%d", i)
		fmt.Fprintf(b, "    %s[%s]\n", ids[n], mermaidQuote(labels[n]))
	}
	for _, e := range edges {
		fmt.Fprintf(b, "    %s -->|%s| %s\n", ids[e.consumer], mermaidQuote(e.label), ids[e.provider])
	}
}

// mermaidQuote makes s a Mermaid quoted label; quotes and markup become
// entity codes.
func mermaidQuote(s string) string {
	r := strings.NewReplacer("#", "#35;", `"`, "#quot;", "<", "#lt;", ">", "#gt;", "\n", " ", "\r", " ")
	return `"` + r.Replace(s) + `"`
}
