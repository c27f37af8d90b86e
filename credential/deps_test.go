package credential_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: credential is public SDK; it must not depend on ward's
// server packages or on testing.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/wardsec/ward/credential").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/wardsec/ward/internal/") || dep == "testing" {
			t.Errorf("credential depends on %s", dep)
		}
	}
}
