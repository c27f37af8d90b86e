package catalog

import (
	"strings"
	"testing"
)

func TestRuleFor(t *testing.T) {
	tests := []struct {
		name               string
		consumer, provider string
		optIn              bool
		want               Rule
	}{
		{"L1 to L1 opted in", "L1", "L1", true, Rule{Auto: true}},
		{"L1 to L1 not opted in", "L1", "L1", false, Rule{}},
		{"L2 to L1 opted in", "L2", "L1", true, Rule{}},
		{"L3 to L1 opted in", "L3", "L1", true, Rule{}},
		{"L1 to L2 opted in", "L1", "L2", true, Rule{}},
		{"L2 to L2", "L2", "L2", false, Rule{}},
		{"L3 to L2", "L3", "L2", false, Rule{}},
		{"L1 to L3", "L1", "L3", false, Rule{SecurityOnly: true, NeedsJustification: true}},
		{"L1 to L3 opted in", "L1", "L3", true, Rule{SecurityOnly: true, NeedsJustification: true}},
		{"L2 to L3", "L2", "L3", false, Rule{SecurityOnly: true}},
		{"L3 to L3", "L3", "L3", true, Rule{SecurityOnly: true}},
		{"unknown provider level is L3", "L2", "L9", true, Rule{SecurityOnly: true}},
		{"empty provider level is L3", "L2", "", false, Rule{SecurityOnly: true}},
		{"unknown consumer level to L3 needs justification", "", "L3", false, Rule{SecurityOnly: true, NeedsJustification: true}},
		{"unknown consumer level is never automatic", "l1", "L1", true, Rule{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RuleFor(tt.consumer, tt.provider, tt.optIn); got != tt.want {
				t.Fatalf("RuleFor(%q, %q, %v) = %+v, want %+v", tt.consumer, tt.provider, tt.optIn, got, tt.want)
			}
		})
	}
}

func TestMayApprove(t *testing.T) {
	l3 := RuleFor("L2", "L3", false)
	l2 := RuleFor("L2", "L2", false)
	tests := []struct {
		name       string
		rule       Rule
		role, team string
		want       bool
	}{
		{"security on L3", l3, "security", "pay", true},
		{"admin on L3", l3, "admin", "pay", true},
		{"team on L3", l3, "team:pay", "pay", false},
		{"security on L2", l2, "security", "pay", true},
		{"admin on L2", l2, "admin", "pay", true},
		{"own team on L2", l2, "team:pay", "pay", true},
		{"other team on L2", l2, "team:shop", "pay", false},
		{"team role without a team", l2, "team:", "", false},
		{"unknown role", l2, "auditor", "pay", false},
		{"auto is not a reviewer", l2, "auto", "pay", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rule.MayApprove(tt.role, tt.team); got != tt.want {
				t.Fatalf("%+v.MayApprove(%q, %q) = %v", tt.rule, tt.role, tt.team, got)
			}
		})
	}
}

func TestJustified(t *testing.T) {
	tests := []struct {
		name   string
		reason string
		want   bool
	}{
		{"empty", "", false},
		{"nine characters", "123456789", false},
		{"ten characters", "1234567890", true},
		{"padded nine", "   123456789 \n", false},
		{"ten runes", strings.Repeat("é", 10), true},
		{"nine runes of two bytes", strings.Repeat("é", 9), false},
		{"sentence", "ticket SEC-1234: fraud scoring", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Justified(tt.reason); got != tt.want {
				t.Fatalf("Justified(%q) = %v", tt.reason, got)
			}
		})
	}
}
