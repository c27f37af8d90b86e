package cli

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var update = flag.Bool("update", false, "rewrite golden files (docs/reference/cli.md)")

// TestCLIReference keeps docs/reference/cli.md equal to the command tree's
// help. Refresh with: go test ./internal/cli -run TestCLIReference -update
func TestCLIReference(t *testing.T) {
	for _, k := range []string{"WARD_CONFIG", "WARD_AUTHORITY", "WARD_CA_BUNDLE"} {
		t.Setenv(k, "")
	}
	g := &globals{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	root := newRoot(g)
	var b bytes.Buffer
	b.WriteString("# CLI reference\n\n")
	b.WriteString("Generated from the command tree by `go test ./internal/cli -run TestCLIReference -update`.\n\n")
	b.WriteString("Every command takes the global flags listed at the end. `--output json` (`-o json`) prints snake_case JSON; errors are one line on stderr, exit status 1 (2 for usage errors). ")
	b.WriteString("Client commands read `WARD_AUTHORITY`, `WARD_CA_BUNDLE` and `WARD_ADMIN_TOKEN` (`source <data>/dev.env` sets them all).\n")
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if c.Runnable() {
			fmt.Fprintf(&b, "\n## %s\n\n%s\n\n```\n%s", c.CommandPath(), c.Short, c.UseLine()+"\n")
			if fl := c.LocalFlags().FlagUsages(); fl != "" {
				b.WriteString("\nFlags:\n" + fl)
			}
			b.WriteString("```\n")
			if c.Long != "" && c.Parent() != nil {
				b.WriteString("\n" + c.Long + "\n")
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	fmt.Fprintf(&b, "\n## Global flags\n\n```\n%s```\n", root.PersistentFlags().FlagUsages())
	got := b.Bytes()

	const path = "../../docs/reference/cli.md"
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/reference/cli.md is stale; run: go test ./internal/cli -run TestCLIReference -update\n%s", firstDiff(string(want), string(got)))
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, al[i], bl[i])
		}
	}
	return "length differs"
}
