package catalog

import (
	"strings"
	"unicode/utf8"
)

// Service levels (store.Service.Level). L3 is the most sensitive.
const (
	levelL1 = "L1"
	levelL2 = "L2"
	levelL3 = "L3"
)

// Roles that decide requests (store.AccessRequest.DecidedRole); a
// provider's team decides as "team:<team>".
const (
	roleAdmin    = "admin"
	roleSecurity = "security"
)

// MinJustification is the least number of characters (after trimming
// spaces) of the reason an approval of an L1 consumer's access to an L3
// provider must carry.
const MinJustification = 10

// Rule is what the catalogue requires to approve a consumption.
type Rule struct {
	// Auto: approved without review (an L1 consumer of an L1 provider that
	// opted in with auto_approve_l1).
	Auto bool
	// SecurityOnly: only the security (or admin) role may approve
	// (provider L3). Otherwise the provider's team may approve as well.
	SecurityOnly bool
	// NeedsJustification: the approval must carry a reason Justified
	// accepts (L1 consumer of an L3 provider).
	NeedsJustification bool
}

// RuleFor returns the approval rule for a consumer of level consumerLevel
// calling a provider of level providerLevel whose current declaration sets
// auto_approve_l1 to providerAutoApproveL1.
//
// A level other than L1, L2 and L3 gets the strictest reading: an unknown
// provider level is treated as L3, an unknown consumer level as L1 (never
// automatic).
func RuleFor(consumerLevel, providerLevel string, providerAutoApproveL1 bool) Rule {
	providerL3 := providerLevel != levelL1 && providerLevel != levelL2
	consumerL1 := consumerLevel != levelL2 && consumerLevel != levelL3
	return Rule{
		Auto:               consumerLevel == levelL1 && providerLevel == levelL1 && providerAutoApproveL1,
		SecurityOnly:       providerL3,
		NeedsJustification: consumerL1 && providerL3,
	}
}

// Justified reports whether reason is long enough to justify an approval
// that needs one: at least MinJustification characters once leading and
// trailing white space is removed.
func Justified(reason string) bool {
	return utf8.RuneCountInString(strings.TrimSpace(reason)) >= MinJustification
}

// MayApprove reports whether a reviewer holding role may approve under r a
// request to a provider owned by team: security and admin always, the
// provider's team ("team:<team>") unless r is SecurityOnly.
func (r Rule) MayApprove(role, team string) bool {
	switch {
	case role == roleSecurity || role == roleAdmin:
		return true
	case r.SecurityOnly || team == "":
		return false
	default:
		return role == "team:"+team
	}
}
