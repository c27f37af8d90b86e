package catalog

import (
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// declaration parses a YAML manifest and returns it as the store keeps it.
func declaration(t testing.TB, seq int64, manifest string) store.Declaration {
	t.Helper()
	m, err := ParseManifest([]byte(manifest))
	if err != nil {
		t.Fatalf("ParseManifest: %v", err)
	}
	return store.Declaration{Seq: seq, Service: m.Service, Version: m.Version, Manifest: m.Canonical(), Serial: "1a", DeclaredAt: t0}
}

// grant returns an approved request, decided by security.
func grant(id, consumer, provider, resource string, actions ...string) store.AccessRequest {
	at := t0.Add(time.Minute)
	return store.AccessRequest{
		ID: id, Consumer: consumer, Provider: provider, Resource: resource, Actions: actions,
		ConsumerVersion: "1", State: store.RequestApproved, RequestedAt: t0,
		DecidedBy: "alice", DecidedByID: "tok-1", DecidedRole: "security", DecidedAt: &at,
		Reason: "needed for checkout",
	}
}

func service(name, team, level string) store.Service {
	return store.Service{Name: name, Team: team, Level: level, SVIDTTL: time.Hour, CreatedAt: t0}
}

func revokedService(name, team, level string) store.Service {
	s := service(name, team, level)
	at := t0.Add(time.Hour)
	s.RevokedAt = &at
	return s
}

func withState(g store.AccessRequest, state string) store.AccessRequest {
	g.State = state
	return g
}
