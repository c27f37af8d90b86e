package audit_test

import (
	"testing"

	"github.com/wardsec/ward/internal/deptest"
)

// TestDependencies: audit is public SDK; it must not depend on ward's
// server packages nor on testing.
func TestDependencies(t *testing.T) { deptest.Check(t) }
