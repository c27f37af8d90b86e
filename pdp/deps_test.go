package pdp_test

import (
	"testing"

	"github.com/wardsec/ward/internal/deptest"
)

// TestDependencies: pdp is public SDK; it must not depend on ward's
// server packages nor on testing.
func TestDependencies(t *testing.T) { deptest.Check(t) }
