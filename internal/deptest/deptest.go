// Package deptest holds the dependency check every public SDK package runs
// in its tests: the SDK must not pull in ward's server packages (anything
// under internal/) nor the testing package.
//
//	func TestDependencies(t *testing.T) { deptest.Check(t) }
package deptest

import (
	"os/exec"
	"strings"
	"testing"
)

// Check lists the dependencies of the package in the current directory
// (`go list -deps .`) and fails t for each forbidden one.
func Check(t *testing.T) {
	t.Helper()
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
			t.Errorf("the package depends on %s", dep)
		case dep == "github.com/wardsec/ward/internal" || strings.HasPrefix(dep, "github.com/wardsec/ward/internal/"):
			t.Errorf("the package depends on server package %s", dep)
		}
	}
}
