package whoami

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/internal/catalog"
	"github.com/wardsec/ward/pep"
)

var (
	serverID = spiffeid.RequireFromString("spiffe://ward.test/svc/whoami")
	webID    = spiffeid.RequireFromString("spiffe://ward.test/svc/web")
	evilID   = spiffeid.RequireFromString("spiffe://ward.test/svc/evil")
)

// TestManifest: the manifest is one the authority's catalogue accepts,
// whatever the version looks like to YAML.
func TestManifest(t *testing.T) {
	t.Parallel()
	tests := []struct{ service, version string }{
		{"whoami", Version},
		{"whoami-eu", "1.0"}, // a YAML float if unquoted
		{"w", "2026.1+build_3"},
		{"who", "1e3"},
	}
	for _, tc := range tests {
		t.Run(tc.service+"@"+tc.version, func(t *testing.T) {
			t.Parallel()
			m, err := catalog.ParseManifest(Manifest(tc.service, tc.version))
			if err != nil {
				t.Fatalf("%v\n%s", err, Manifest(tc.service, tc.version))
			}
			if m.Service != tc.service || m.Version != tc.version || len(m.Consumes) != 0 ||
				!m.ProvidesAction(Resource, Action) || len(m.Provides) != 1 || len(m.ProvidedActions(Resource)) != 1 {
				t.Fatalf("parsed %+v", m)
			}
		})
	}
}

type peerKey struct{}

func testPeer(ctx context.Context) (spiffeid.ID, bool) {
	id, ok := ctx.Value(peerKey{}).(spiffeid.ID)
	return id, ok
}

// grantsWeb is a guard whose list (version 7) grants web whoami/read.
type grantsWeb struct{}

func (grantsWeb) Check(_ context.Context, caller spiffeid.ID, resource, action string) error {
	switch {
	case caller != webID:
		return guard.ErrUnknownCaller
	case resource != Resource || action != Action:
		return guard.ErrActionNotAllowed
	}
	return nil
}

func (grantsWeb) Version() int64 { return 7 }

// TestGuardedHandler: whoami behind a PEP with its Routes answers GET and
// HEAD anywhere to granted callers, with the decision in the answer.
func TestGuardedHandler(t *testing.T) {
	t.Parallel()
	p, err := pep.New(pep.Config{
		Guard:  grantsWeb{},
		Routes: Routes(),
		PeerID: func(r *http.Request) (spiffeid.ID, error) {
			if id, ok := testPeer(r.Context()); ok {
				return id, nil
			}
			return spiffeid.ID{}, pep.ErrNoPeer
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := p.Middleware(newHandler(func() spiffeid.ID { return serverID }, testPeer, grantsWeb{}))
	tests := []struct {
		name   string
		method string
		path   string
		caller spiffeid.ID
		status int
	}{
		{name: "GET /", method: "GET", path: "/", caller: webID, status: 200},
		{name: "GET below /", method: "GET", path: "/a/b?c=d", caller: webID, status: 200},
		{name: "HEAD", method: "HEAD", path: "/x", caller: webID, status: 200},
		{name: "POST matches no route", method: "POST", path: "/", caller: webID, status: 403},
		{name: "caller without a grant", method: "GET", path: "/", caller: evilID, status: 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(tc.method, tc.path, nil)
			req = req.WithContext(context.WithValue(req.Context(), peerKey{}, tc.caller))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status != 200 || tc.method == "HEAD" {
				return
			}
			var resp Response
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			want := Access{Allowed: true, Resource: Resource, Action: Action, Reason: pep.ReasonGranted, ListVersion: 7}
			if resp.Access == nil || *resp.Access != want {
				t.Fatalf("access %+v, want %+v", resp.Access, want)
			}
			if resp.CallerSPIFFEID != webID.String() || resp.ServerSPIFFEID != serverID.String() || resp.Method != tc.method {
				t.Fatalf("response %+v", resp)
			}
		})
	}
}

// TestUnguardedHandler: without a PEP there is no access member.
func TestUnguardedHandler(t *testing.T) {
	t.Parallel()
	h := newHandler(func() spiffeid.ID { return serverID }, testPeer, nil)
	req := httptest.NewRequest("POST", "/anything", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req.WithContext(context.WithValue(req.Context(), peerKey{}, webID)))
	if rec.Code != 200 || strings.Contains(rec.Body.String(), `"access"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusForbidden {
		t.Fatalf("no peer: %d", rec.Code)
	}
}

func TestServiceName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want string // "" for an error
	}{
		{"spiffe://ward.test/svc/whoami", "whoami"},
		{"spiffe://ward.test/svc/a/b", ""},
		{"spiffe://ward.test/ward/authority", ""},
		{"spiffe://ward.test/svc", ""},
	}
	for _, tc := range tests {
		got, err := serviceName(spiffeid.RequireFromString(tc.id))
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("serviceName(%s) = %q, %v; want %q", tc.id, got, err, tc.want)
		}
	}
}

func TestRunNeedsSVIDDir(t *testing.T) {
	t.Parallel()
	err := Run(t.Context(), Config{AuthorityURL: "https://127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "SVIDDir") {
		t.Fatalf("Run = %v", err)
	}
}
