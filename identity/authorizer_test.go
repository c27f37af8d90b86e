package identity

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

func TestAuthorizers(t *testing.T) {
	t.Parallel()
	other := spiffeid.RequireFromString("spiffe://other.test/svc/web")
	tests := []struct {
		name  string
		authz Authorizer
		id    spiffeid.ID
		ok    bool
	}{
		{name: "any accepts", authz: AuthorizeAny(), id: webID, ok: true},
		{name: "id accepts listed", authz: AuthorizeID(apiID, webID), id: webID, ok: true},
		{name: "id refuses unlisted", authz: AuthorizeID(apiID), id: webID},
		{name: "id with no ids refuses all", authz: AuthorizeID(), id: webID},
		{name: "id refuses same path in other domain", authz: AuthorizeID(webID), id: other},
		{name: "member accepts", authz: AuthorizeMemberOf(td), id: apiID, ok: true},
		{name: "member refuses other domain", authz: AuthorizeMemberOf(td), id: other},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.authz(tc.id)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrNotAuthorized) {
				t.Fatalf("got %v, want ErrNotAuthorized", err)
			}
		})
	}
}

// TestTLSAuthorization runs real handshakes: the server's and the client's
// authorizers, foreign CAs, missing and revoked certificates.
func TestTLSAuthorization(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	server := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), false)
	client := newSourceT(t, sourceConfig(t, fa, apiID), fastTuning(), false)

	foreignRoot, err := fakeauthority.NewRoot(td) // same trust domain, not in the bundle
	if err != nil {
		t.Fatal(err)
	}
	foreignSVID, err := foreignRoot.NewSVID(apiID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	revokedSVID, err := fa.Issuer().NewSVID(apiID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server.revoked.Store(&revokedSet{revokedSVID.Certificates[0].SerialNumber.Text(16): {}})
	expiredSVID, err := fa.Issuer().NewSVID(apiID, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	// Leaf issued straight by the root, no intermediate: still a valid chain.
	rootIssued, err := fa.Root().NewSVID(apiID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		serverAuth Authorizer
		client     func() *tls.Config
		ok         bool
		clientErr  error // when the client side detects the refusal
	}{
		{name: "both authorize", serverAuth: AuthorizeID(apiID), client: func() *tls.Config { return client.ClientTLSConfig(AuthorizeID(webID)) }, ok: true},
		{name: "nil authorizers mean any", serverAuth: nil, client: func() *tls.Config { return client.ClientTLSConfig(nil) }, ok: true},
		{name: "server refuses client id", serverAuth: AuthorizeID(webID), client: func() *tls.Config { return client.ClientTLSConfig(AuthorizeAny()) }},
		{name: "client refuses server id", serverAuth: AuthorizeAny(), client: func() *tls.Config { return client.ClientTLSConfig(AuthorizeID(apiID)) }, clientErr: ErrNotAuthorized},
		{name: "server refuses other trust domain", serverAuth: AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString("other.test")), client: func() *tls.Config { return client.ClientTLSConfig(nil) }},
		{name: "client from foreign CA", serverAuth: AuthorizeAny(), client: func() *tls.Config { return rawTLSConfig(foreignSVID) }},
		{name: "client without certificate", serverAuth: AuthorizeAny(), client: func() *tls.Config { return rawTLSConfig(nil) }},
		{name: "revoked client", serverAuth: AuthorizeAny(), client: func() *tls.Config { return rawTLSConfig(revokedSVID) }},
		{name: "expired client", serverAuth: AuthorizeAny(), client: func() *tls.Config { return rawTLSConfig(expiredSVID) }},
		{name: "client issued by the root", serverAuth: AuthorizeID(apiID), client: func() *tls.Config { return rawTLSConfig(rootIssued) }, ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := startServer(t, server, tc.serverAuth, echoPeer())
			body, _, err := get(httpClient(tc.client(), false), url)
			if tc.ok && (err != nil || body != apiID.String()) {
				t.Fatalf("refused: %q %v", body, err)
			}
			if !tc.ok && err == nil {
				t.Fatal("accepted")
			}
			if tc.clientErr != nil && !errors.Is(err, tc.clientErr) {
				t.Fatalf("got %v, want %v", err, tc.clientErr)
			}
		})
	}
}
