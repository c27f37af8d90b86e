// Package whoami is a small HTTPS service built only on ward's public SDK:
// it serves mTLS with an SVID from the identity package, enforces its
// signed access list with the guard and pep packages, and answers every
// request with JSON describing what it verified about the caller and the
// access decision that let it in. It is the debugging target for ward
// features and the first example of the SDK.
//
//	src, _ := identity.New(ctx, identity.Config{AuthorityURL: url, Dir: svidDir, BundleFile: svidDir + "/bundle.pem"})
//	go src.Run(ctx)
//	g, _ := guard.NewForSource(ctx, src, src.AuthorityURL(), guard.Config{Manifest: whoami.Manifest("whoami", whoami.Version)})
//	go g.Run(ctx)
//	pv, _ := passport.NewForSource(src, passport.Config{})
//	p, _ := pep.New(pep.Config{Guard: g, Routes: whoami.Routes(), Passports: pv})
//	srv := &http.Server{Handler: src.Middleware(p.Middleware(whoami.GuardedHandler(src, g))),
//		TLSConfig: src.ServerTLSConfig(identity.AuthorizeMemberOf(src.ID().TrustDomain()))}
package whoami

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/wardsec/ward/guard"
	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/passport"
	"github.com/wardsec/ward/pdp"
	"github.com/wardsec/ward/pep"
)

// What whoami provides in the dependency catalogue, and the version it
// declares.
const (
	Resource = "whoami"
	Action   = "read"
	Version  = "1.0.0"
)

// Response is what whoami answers. Later features add passport and
// decision fields.
type Response struct {
	CallerSPIFFEID string              `json:"caller_spiffe_id"`
	ServerSPIFFEID string              `json:"server_spiffe_id"`
	Method         string              `json:"method"`
	Path           string              `json:"path"`
	Headers        map[string][]string `json:"headers"`
	TLSVersion     string              `json:"tls_version"`
	// Access is the access-list decision that let the request in; nil
	// when whoami runs without a PEP.
	Access *Access `json:"access,omitempty"`
	// Passport holds the verified claims of the request's passport (the
	// end user a gateway authenticated); nil when it carried none.
	Passport *passport.Claims `json:"passport,omitempty"`
	// Decision is the policy decision point's answer: the Cedar policy
	// version and the policies that allowed the request; nil when whoami
	// runs without a PDP.
	Decision *pdp.Decision `json:"decision,omitempty"`
}

// Access describes the PEP's decision for the request.
type Access struct {
	Allowed  bool   `json:"allowed"`
	Resource string `json:"resource"`
	Action   string `json:"action"`
	Reason   string `json:"reason"`
	// ListVersion is the version of the access list the guard holds (0
	// when unknown).
	ListVersion int64 `json:"list_version"`
}

// ListVersioner reports the version of the access list a guard enforces.
// *guard.Guard implements it.
type ListVersioner interface {
	Version() int64
}

var _ ListVersioner = (*guard.Guard)(nil)

// Manifest returns whoami's catalogue manifest (ward.yaml) for the named
// service: it provides the resource "whoami" with the action "read" and
// consumes nothing.
func Manifest(service, version string) []byte {
	type provided struct {
		Resource string   `yaml:"resource"`
		Actions  []string `yaml:"actions,flow"`
	}
	doc := struct {
		Service  string     `yaml:"service"`
		Version  string     `yaml:"version"`
		Provides []provided `yaml:"provides"`
	}{
		Service:  service,
		Version:  version,
		Provides: []provided{{Resource: Resource, Actions: []string{Action}}},
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil { // strings only: cannot fail
		panic(fmt.Sprintf("whoami: manifest: %v", err))
	}
	_ = enc.Close()
	return buf.Bytes()
}

// Routes is whoami's route table: GET (and so HEAD) on / and every path
// below it exercise whoami/read; other methods match no route and are
// refused.
func Routes() []pep.Route {
	return []pep.Route{{Pattern: "GET /", Resource: Resource, Action: Action}}
}

// Handler answers any path with a Response. It must run behind
// Source.Middleware (which establishes and re-checks the peer identity).
// Behind a PEP, Response.Access reports its decision.
func Handler(src *identity.Source) http.Handler {
	return newHandler(src.ID, identity.PeerIDFromContext, nil)
}

// GuardedHandler is Handler that also reports the version of the access
// list g holds. Serve it behind src.Middleware(p.Middleware(...)).
func GuardedHandler(src *identity.Source, g ListVersioner) http.Handler {
	return newHandler(src.ID, identity.PeerIDFromContext, g)
}

// newHandler builds the handler from what it reads: the server's ID, the
// verified peer of a request, and optionally the guard's list version.
func newHandler(server func() spiffeid.ID, peer func(context.Context) (spiffeid.ID, bool), lists ListVersioner) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := peer(r.Context())
		if !ok {
			http.Error(w, "no verified peer", http.StatusForbidden)
			return
		}
		hdr := make(map[string][]string, len(r.Header))
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			hdr[k] = r.Header[k]
		}
		resp := Response{
			CallerSPIFFEID: id.String(),
			ServerSPIFFEID: server().String(),
			Method:         r.Method,
			Path:           r.URL.Path,
			Headers:        hdr,
		}
		if r.TLS != nil {
			resp.TLSVersion = tlsVersion(r.TLS.Version)
		}
		if d, ok := pep.DecisionFromContext(r.Context()); ok {
			resp.Access = &Access{Allowed: d.Allowed, Resource: d.Resource, Action: d.Action, Reason: d.Reason}
			if lists != nil {
				resp.Access.ListVersion = lists.Version()
			}
			resp.Decision = d.Policy
		}
		if c, ok := passport.FromContext(r.Context()); ok {
			resp.Passport = c
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

func tlsVersion(v uint16) string {
	switch v {
	case 0x0304:
		return "TLS1.3"
	case 0x0303:
		return "TLS1.2"
	default:
		return fmt.Sprintf("0x%04x", v)
	}
}
