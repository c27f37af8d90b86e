package catalog

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/internal/store"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

const ordersManifest = `service: orders
version: "2"
provides:
  - {resource: orders, actions: [read, write, delete]}
  - {resource: invoices, actions: [read]}
`

func TestCompile(t *testing.T) {
	decl := declaration(t, 7, ordersManifest)
	tests := []struct {
		name    string
		st      store.AccessListState
		revoked map[string]bool
		want    []guard.Consumer
	}{
		{
			name: "no declaration provides nothing",
			st:   store.AccessListState{Version: 3, Grants: []store.AccessRequest{grant("req-1", "web", "orders", "orders", "read")}},
			want: []guard.Consumer{},
		},
		{
			name: "no grants",
			st:   store.AccessListState{Version: 1, Declaration: &decl},
			want: []guard.Consumer{},
		},
		{
			name: "one grant",
			st:   store.AccessListState{Version: 1, Declaration: &decl, Grants: []store.AccessRequest{grant("req-1", "web", "orders", "orders", "read")}},
			want: []guard.Consumer{{ID: "spiffe://example.org/svc/web", Grants: []guard.Grant{{Resource: "orders", Actions: []string{"read"}}}}},
		},
		{
			name: "actions no longer provided are filtered",
			st: store.AccessListState{Version: 1, Declaration: &decl, Grants: []store.AccessRequest{
				grant("req-1", "web", "orders", "orders", "read", "refund"),
				grant("req-2", "web", "orders", "invoices", "write"),
				grant("req-3", "web", "orders", "archive", "read"),
			}},
			want: []guard.Consumer{{ID: "spiffe://example.org/svc/web", Grants: []guard.Grant{{Resource: "orders", Actions: []string{"read"}}}}},
		},
		{
			name: "a consumer with nothing left is dropped",
			st: store.AccessListState{Version: 1, Declaration: &decl, Grants: []store.AccessRequest{
				grant("req-1", "web", "orders", "archive", "read"),
				grant("req-2", "api", "orders", "invoices", "read"),
			}},
			want: []guard.Consumer{{ID: "spiffe://example.org/svc/api", Grants: []guard.Grant{{Resource: "invoices", Actions: []string{"read"}}}}},
		},
		{
			name: "grants of one consumer are merged",
			st: store.AccessListState{Version: 1, Declaration: &decl, Grants: []store.AccessRequest{
				grant("req-3", "web", "orders", "orders", "write", "read"),
				grant("req-1", "web", "orders", "invoices", "read"),
				grant("req-2", "web", "orders", "orders", "read", "delete"),
			}},
			want: []guard.Consumer{{ID: "spiffe://example.org/svc/web", Grants: []guard.Grant{
				{Resource: "invoices", Actions: []string{"read"}},
				{Resource: "orders", Actions: []string{"delete", "read", "write"}},
			}}},
		},
		{
			name:    "revoked consumers are left out",
			revoked: map[string]bool{"web": true, "orders": true},
			st: store.AccessListState{Version: 1, Declaration: &decl, Grants: []store.AccessRequest{
				grant("req-1", "web", "orders", "orders", "read"),
				grant("req-2", "api", "orders", "orders", "read"),
			}},
			want: []guard.Consumer{{ID: "spiffe://example.org/svc/api", Grants: []guard.Grant{{Resource: "orders", Actions: []string{"read"}}}}},
		},
		{
			name: "consumers ordered by ID",
			st: store.AccessListState{Version: 1, Declaration: &decl, Grants: []store.AccessRequest{
				grant("req-1", "web-b", "orders", "orders", "read"),
				grant("req-2", "web", "orders", "orders", "read"),
				grant("req-3", "api", "orders", "orders", "read"),
				grant("req-4", "web-a", "orders", "orders", "read"),
			}},
			want: []guard.Consumer{
				{ID: "spiffe://example.org/svc/api", Grants: []guard.Grant{{Resource: "orders", Actions: []string{"read"}}}},
				{ID: "spiffe://example.org/svc/web", Grants: []guard.Grant{{Resource: "orders", Actions: []string{"read"}}}},
				{ID: "spiffe://example.org/svc/web-a", Grants: []guard.Grant{{Resource: "orders", Actions: []string{"read"}}}},
				{ID: "spiffe://example.org/svc/web-b", Grants: []guard.Grant{{Resource: "orders", Actions: []string{"read"}}}},
			},
		},
		{
			name: "rows that are not grants of the provider are ignored",
			st: store.AccessListState{Version: 1, Declaration: &decl, Grants: []store.AccessRequest{
				withState(grant("req-1", "web", "orders", "orders", "read"), store.RequestPending),
				withState(grant("req-2", "web", "orders", "orders", "read"), store.RequestRevoked),
				grant("req-3", "web", "billing", "orders", "read"),
			}},
			want: []guard.Consumer{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list, err := Compile(td, "orders", tt.st, tt.revoked, t0)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if list.Issuer != "spiffe://example.org/ward/authority" || list.Subject != "spiffe://example.org/svc/orders" {
				t.Errorf("issuer %q, subject %q", list.Issuer, list.Subject)
			}
			if list.Version != tt.st.Version || list.IssuedAt != t0.Unix() {
				t.Errorf("version %d, issued at %d", list.Version, list.IssuedAt)
			}
			if !reflect.DeepEqual(list.Consumers, tt.want) {
				t.Fatalf("consumers:\ngot  %+v\nwant %+v", list.Consumers, tt.want)
			}
			// The wire form has a list, never null.
			b, err := json.Marshal(list)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), "null") {
				t.Fatalf("null in %s", b)
			}
		})
	}
}

func TestCompileDoesNotShareSlices(t *testing.T) {
	decl := declaration(t, 1, ordersManifest)
	g := grant("req-1", "web", "orders", "orders", "write", "read")
	st := store.AccessListState{Version: 1, Declaration: &decl, Grants: []store.AccessRequest{g}}
	list, err := Compile(td, "orders", st, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	list.Consumers[0].Grants[0].Actions[0] = "changed"
	if !reflect.DeepEqual(g.Actions, []string{"write", "read"}) {
		t.Fatalf("Compile changed the grant's actions: %v", g.Actions)
	}
}

func TestCompileErrors(t *testing.T) {
	decl := declaration(t, 1, ordersManifest)
	other := declaration(t, 2, "service: billing\nversion: v1\n")
	mislabelled := other
	mislabelled.Service = "orders"
	corrupt := decl
	corrupt.Manifest = []byte(`{"service":"orders"}`)
	tests := []struct {
		name     string
		td       spiffeid.TrustDomain
		provider string
		st       store.AccessListState
		want     string
	}{
		{"zero trust domain", spiffeid.TrustDomain{}, "orders", store.AccessListState{}, "empty trust domain"},
		{"invalid provider", td, "Orders", store.AccessListState{}, `service "Orders": not a valid service name`},
		{"declaration of another service", td, "orders", store.AccessListState{Declaration: &other}, `declaration 2 is of service "billing"`},
		{"manifest of another service", td, "orders", store.AccessListState{Declaration: &mislabelled}, `declaration 2 names service "billing"`},
		{"corrupt declaration", td, "orders", store.AccessListState{Declaration: &corrupt}, "version: required"},
		{"invalid consumer", td, "orders", store.AccessListState{Declaration: &decl, Grants: []store.AccessRequest{grant("req-1", "Web/x", "orders", "orders", "read")}}, `consumer: catalog: service "Web/x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.td, tt.provider, tt.st, nil, t0)
			if err == nil || !strings.HasPrefix(err.Error(), "catalog: ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestServiceID(t *testing.T) {
	id, err := ServiceID(td, "web")
	if err != nil || id.String() != "spiffe://example.org/svc/web" {
		t.Fatalf("ServiceID = %v, %v", id, err)
	}
	id, err = AuthorityID(td)
	if err != nil || id.String() != "spiffe://example.org/ward/authority" {
		t.Fatalf("AuthorityID = %v, %v", id, err)
	}
	if _, err := AuthorityID(spiffeid.TrustDomain{}); err == nil {
		t.Fatal("AuthorityID of the zero trust domain")
	}
	for _, bad := range []string{"", "..", "a/b", "Web", "a" + strings.Repeat("b", 63)} {
		if _, err := ServiceID(td, bad); err == nil {
			t.Errorf("ServiceID(%q) succeeded", bad)
		}
	}
}

func TestConsumerID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("ward.test")
	for name, want := range map[string]string{
		"web":          "spiffe://ward.test/svc/web",
		"ward/gateway": "spiffe://ward.test/ward/gateway",
	} {
		id, err := ConsumerID(td, name)
		if err != nil || id.String() != want {
			t.Errorf("ConsumerID(%q) = %v, %v; want %s", name, id, err, want)
		}
	}
	for _, bad := range []string{"ward/", "ward/Bad", "ward/a/b", "x/y", ""} {
		if id, err := ConsumerID(td, bad); err == nil {
			t.Errorf("ConsumerID(%q) = %v", bad, id)
		}
	}
}
