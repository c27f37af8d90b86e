package catalog

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/wardsec/ward/internal/store"
)

// Posture rules: the Rule of a Violation.
const (
	// RuleL3ApprovalNotSecurity (high): a grant to an L3 provider decided
	// by a role other than security or admin (automatic approval included).
	RuleL3ApprovalNotSecurity = "l3-approval-not-security"
	// RuleL1ToL3Unjustified (high): an L1 consumer's grant to an L3
	// provider whose reason is shorter than MinJustification.
	RuleL1ToL3Unjustified = "l1-to-l3-unjustified"
	// RuleAutoApprovalInvalid (medium): an automatic grant the rules would
	// not approve automatically today: consumer or provider not L1, or the
	// provider's current declaration no longer opts in.
	RuleAutoApprovalInvalid = "auto-approval-invalid"
	// RuleAutoApproveIgnored (low): a declaration sets auto_approve_l1 on a
	// provider that is not L1; the authority ignores it.
	RuleAutoApproveIgnored = "auto-approve-ignored"
	// RuleGrantToRevokedService (low): the consumer or the provider of a
	// grant is revoked.
	RuleGrantToRevokedService = "grant-to-revoked-service"
	// RuleStaleGrant (low): granted actions the provider's current
	// declaration no longer provides; they are not in its access list.
	RuleStaleGrant = "stale-grant"
	// RuleUnusedGrant (low): granted actions the consumer's current
	// declaration no longer consumes (not for ward/<component> consumers,
	// whose grants gateway routes record and withdraw).
	RuleUnusedGrant = "unused-grant"
)

// Severities of a Violation.
const (
	SeverityHigh   = "high"
	SeverityMedium = "medium"
	SeverityLow    = "low"
)

// PostureInput is the state of the catalogue Posture reads.
type PostureInput struct {
	Services     []store.Service
	Declarations []store.Declaration   // the latest per service
	Grants       []store.AccessRequest // approved requests (other states are ignored)
	Pending      []store.AccessRequest // pending requests (other states are ignored)
}

// Report is the catalogue's posture: every service with its grants, and
// every grant or declaration that breaks a rule as the catalogue stands
// now.
type Report struct {
	Services []ServicePosture `json:"services"` // ordered by name
	// Violations holds every violation once, ordered by severity (high
	// first), service, grant ID, rule and detail.
	Violations []Violation `json:"violations"`
}

// ServicePosture is one service in a Report.
type ServicePosture struct {
	Name          string         `json:"name"`
	Team          string         `json:"team"`
	Level         string         `json:"level"`
	Revoked       bool           `json:"revoked,omitempty"`
	Declared      string         `json:"declared_version,omitempty"` // version of the latest declaration, "" if none
	AutoApproveL1 bool           `json:"auto_approve_l1,omitempty"`
	Provides      []Provided     `json:"provides"`   // from the latest declaration
	GrantsIn      []GrantSummary `json:"grants_in"`  // grants where it is the provider, by consumer, resource, ID
	GrantsOut     []GrantSummary `json:"grants_out"` // grants where it is the consumer, by provider, resource, ID
	Pending       int            `json:"pending"`    // pending requests where it is consumer or provider
	// Violations touching the service: about it, or about a grant where it
	// is consumer or provider. Same order as Report.Violations.
	Violations []Violation `json:"violations"`
}

// GrantSummary is a grant as a Report shows it.
type GrantSummary struct {
	ID         string   `json:"id"`
	Consumer   string   `json:"consumer"`
	Provider   string   `json:"provider"`
	Resource   string   `json:"resource"`
	Actions    []string `json:"actions"`
	ApprovedBy string   `json:"approved_by"`
	Role       string   `json:"role"`
	Auto       bool     `json:"auto"`
	Reason     string   `json:"reason"`
}

// Violation is a grant or declaration that breaks a catalogue rule.
type Violation struct {
	Rule     string `json:"rule"`     // one of the Rule* constants
	Severity string `json:"severity"` // SeverityHigh, SeverityMedium or SeverityLow
	Service  string `json:"service"`  // the service the violation is about
	GrantID  string `json:"grant_id,omitempty"`
	Detail   string `json:"detail"`
}

var severityRank = map[string]int{SeverityHigh: 0, SeverityMedium: 1, SeverityLow: 2}

func compareViolations(a, b Violation) int {
	return cmp.Or(
		cmp.Compare(severityRank[a.Severity], severityRank[b.Severity]),
		strings.Compare(a.Service, b.Service),
		strings.Compare(a.GrantID, b.GrantID),
		strings.Compare(a.Rule, b.Rule),
		strings.Compare(a.Detail, b.Detail),
	)
}

// A violation and the services it touches.
type finding struct {
	v       Violation
	parties [2]string
}

// Posture checks the catalogue against its rules as they hold now: levels,
// revocations and declarations may have changed since a grant was
// approved. The report is deterministic for a given input.
func Posture(in PostureInput) Report {
	services := make(map[string]store.Service, len(in.Services))
	for _, s := range in.Services {
		services[s.Name] = s
	}
	level := func(name string) string { return services[name].Level }
	revoked := func(name string) bool {
		s, ok := services[name]
		return ok && s.RevokedAt != nil
	}

	latest := make(map[string]store.Declaration, len(in.Declarations))
	for _, d := range in.Declarations {
		if cur, ok := latest[d.Service]; !ok || d.Seq > cur.Seq {
			latest[d.Service] = d
		}
	}
	// A declaration that does not decode provides and consumes nothing.
	manifests := make(map[string]Manifest, len(latest))
	for name, d := range latest {
		if m, err := DecodeStored(d.Manifest); err == nil {
			manifests[name] = m
		}
	}

	var findings []finding
	add := func(rule, severity, service string, g *store.AccessRequest, format string, args ...any) {
		f := finding{v: Violation{Rule: rule, Severity: severity, Service: service, Detail: fmt.Sprintf(format, args...)}}
		f.parties[0] = service
		if g != nil {
			f.v.GrantID = g.ID
			f.parties = [2]string{g.Consumer, g.Provider}
		}
		findings = append(findings, f)
	}

	grants := make([]store.AccessRequest, 0, len(in.Grants))
	for _, g := range in.Grants {
		if g.State == store.RequestApproved {
			grants = append(grants, g)
		}
	}
	for i := range grants {
		g := &grants[i]
		cl, pl := level(g.Consumer), level(g.Provider)
		if pl == levelL3 && g.DecidedRole != roleSecurity && g.DecidedRole != roleAdmin {
			how := fmt.Sprintf("by role %q", g.DecidedRole)
			if g.Auto {
				how = "automatically"
			}
			add(RuleL3ApprovalNotSecurity, SeverityHigh, g.Provider, g,
				"access of %s to L3 provider %s was approved %s, not by security or admin", g.Consumer, g.Provider, how)
		}
		if cl == levelL1 && pl == levelL3 && !Justified(g.Reason) {
			add(RuleL1ToL3Unjustified, SeverityHigh, g.Provider, g,
				"L1 consumer %s has access to L3 provider %s with a justification of %d characters, at least %d required",
				g.Consumer, g.Provider, utf8.RuneCountInString(strings.TrimSpace(g.Reason)), MinJustification)
		}
		if g.Auto {
			var why []string
			if cl != levelL1 {
				why = append(why, fmt.Sprintf("consumer %s is %s", g.Consumer, levelOrUnknown(cl)))
			}
			if pl != levelL1 {
				why = append(why, fmt.Sprintf("provider %s is %s", g.Provider, levelOrUnknown(pl)))
			}
			if m, ok := manifests[g.Provider]; !ok || !m.AutoApproveL1 {
				why = append(why, fmt.Sprintf("provider %s no longer declares auto_approve_l1", g.Provider))
			}
			if len(why) > 0 {
				add(RuleAutoApprovalInvalid, SeverityMedium, g.Provider, g,
					"automatic approval would not hold today: %s", strings.Join(why, "; "))
			}
		}
		for _, name := range []string{g.Consumer, g.Provider} {
			if revoked(name) {
				role := "consumer"
				if name == g.Provider {
					role = "provider"
				}
				add(RuleGrantToRevokedService, SeverityLow, name, g, "%s %s of the grant is revoked", role, name)
			}
		}
		if stale := missing(g.Actions, manifests[g.Provider].ProvidedActions(g.Resource)); len(stale) > 0 {
			add(RuleStaleGrant, SeverityLow, g.Provider, g,
				"%s no longer provides %s on %s; left out of its access list", g.Provider, strings.Join(stale, ", "), g.Resource)
		}
		// A component's grants (the gateway's) follow its routes, not a
		// declaration.
		if unused := missing(g.Actions, consumedActions(manifests[g.Consumer], g.Provider, g.Resource)); len(unused) > 0 && !strings.HasPrefix(g.Consumer, ComponentPrefix) {
			add(RuleUnusedGrant, SeverityLow, g.Consumer, g,
				"%s no longer consumes %s on %s of %s", g.Consumer, strings.Join(unused, ", "), g.Resource, g.Provider)
		}
	}
	for name, m := range manifests {
		if m.AutoApproveL1 && level(name) != levelL1 {
			add(RuleAutoApproveIgnored, SeverityLow, name, nil,
				"%s declares auto_approve_l1 but is %s; the authority ignores it", name, levelOrUnknown(level(name)))
		}
	}
	slices.SortFunc(findings, func(a, b finding) int { return compareViolations(a.v, b.v) })

	report := Report{
		Services:   make([]ServicePosture, 0, len(in.Services)),
		Violations: make([]Violation, 0, len(findings)),
	}
	for _, f := range findings {
		report.Violations = append(report.Violations, f.v)
	}
	grantsIn, grantsOut := make(map[string][]GrantSummary), make(map[string][]GrantSummary)
	for _, g := range grants {
		grantsIn[g.Provider] = append(grantsIn[g.Provider], summarize(g))
		grantsOut[g.Consumer] = append(grantsOut[g.Consumer], summarize(g))
	}
	pending := make(map[string]int)
	for _, r := range in.Pending {
		if r.State == store.RequestPending {
			pending[r.Consumer]++
			if r.Provider != r.Consumer {
				pending[r.Provider]++
			}
		}
	}
	touching := make(map[string][]Violation)
	for _, f := range findings {
		touching[f.parties[0]] = append(touching[f.parties[0]], f.v)
		if f.parties[1] != f.parties[0] && f.parties[1] != "" {
			touching[f.parties[1]] = append(touching[f.parties[1]], f.v)
		}
	}

	names := make([]string, 0, len(services))
	for name := range services {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		s := services[name]
		p := ServicePosture{
			Name:       s.Name,
			Team:       s.Team,
			Level:      s.Level,
			Revoked:    s.RevokedAt != nil,
			Provides:   []Provided{},
			GrantsIn:   append([]GrantSummary{}, grantsIn[name]...),
			GrantsOut:  append([]GrantSummary{}, grantsOut[name]...),
			Pending:    pending[name],
			Violations: append([]Violation{}, touching[name]...),
		}
		if d, ok := latest[name]; ok {
			p.Declared = d.Version
		}
		if m, ok := manifests[name]; ok {
			p.AutoApproveL1 = m.AutoApproveL1
			for _, pr := range m.Provides {
				p.Provides = append(p.Provides, Provided{Resource: pr.Resource, Actions: slices.Clone(pr.Actions)})
			}
		}
		slices.SortFunc(p.GrantsIn, func(a, b GrantSummary) int {
			return cmp.Or(strings.Compare(a.Consumer, b.Consumer), strings.Compare(a.Resource, b.Resource), strings.Compare(a.ID, b.ID))
		})
		slices.SortFunc(p.GrantsOut, func(a, b GrantSummary) int {
			return cmp.Or(strings.Compare(a.Provider, b.Provider), strings.Compare(a.Resource, b.Resource), strings.Compare(a.ID, b.ID))
		})
		report.Services = append(report.Services, p)
	}
	return report
}

func summarize(g store.AccessRequest) GrantSummary {
	return GrantSummary{
		ID:         g.ID,
		Consumer:   g.Consumer,
		Provider:   g.Provider,
		Resource:   g.Resource,
		Actions:    slices.Clone(g.Actions),
		ApprovedBy: g.DecidedBy,
		Role:       g.DecidedRole,
		Auto:       g.Auto,
		Reason:     g.Reason,
	}
}

func levelOrUnknown(level string) string {
	if level == "" {
		return "of unknown level"
	}
	return level
}

// consumedActions returns the actions m consumes on resource of provider.
func consumedActions(m Manifest, provider, resource string) []string {
	for _, c := range m.Consumes {
		if c.Service == provider && c.Resource == resource {
			return c.Actions
		}
	}
	return nil
}

// missing returns the actions of granted not in have, sorted and unique.
func missing(granted, have []string) []string {
	var out []string
	for _, a := range granted {
		if !slices.Contains(have, a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}
