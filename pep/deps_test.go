package pep_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: the public SDK must not pull in ward's server packages
// (everything under internal/) nor the testing package.
func TestDependencies(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("suspiciously few dependencies: %v", deps)
	}
	for _, dep := range deps {
		switch {
		case dep == "testing" || strings.HasPrefix(dep, "testing/"):
			t.Errorf("pep depends on %s", dep)
		case dep == "github.com/wardsec/ward/internal" || strings.HasPrefix(dep, "github.com/wardsec/ward/internal/"):
			t.Errorf("pep depends on server package %s", dep)
		}
	}
}
