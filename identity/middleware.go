package identity

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type peerIDKey struct{}

// PeerIDFromContext returns the peer ID that Middleware stored in the
// request context.
func PeerIDFromContext(ctx context.Context) (spiffeid.ID, bool) {
	id, ok := ctx.Value(peerIDKey{}).(spiffeid.ID)
	return id, ok
}

// Middleware checks the TLS peer of every request with PeerID: requests
// without a client certificate get 401, requests from a peer revoked since
// the handshake get 403 (and the connection is closed after the answer),
// both as RFC 9457 problem+json. Accepted requests carry the peer ID in
// their context (PeerIDFromContext). Use it behind ServerTLSConfig, which
// verified the chain at the handshake.
func (s *Source) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.PeerID(r.TLS)
		switch {
		case err == nil:
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerIDKey{}, id)))
		case errors.Is(err, ErrNoPeerCertificate):
			writeProblem(w, http.StatusUnauthorized, "unauthenticated", "Client certificate required",
				"the request did not arrive over mutual TLS with a client certificate")
		case errors.Is(err, ErrRevoked):
			w.Header().Set("Connection", "close")
			writeProblem(w, http.StatusForbidden, "revoked", "Peer certificate revoked",
				"a certificate of the peer chain has been revoked")
		default:
			writeProblem(w, http.StatusForbidden, "forbidden", "Peer not accepted",
				"the peer certificate is not a valid SPIFFE X509-SVID")
		}
	})
}

// writeProblem writes an RFC 9457 body. slug, title and detail are
// constants of this package, so they are written without an encoder.
func writeProblem(w http.ResponseWriter, status int, slug, title, detail string) {
	body := `{"type":"https://ward.dev/problems/` + slug + `","title":"` + title +
		`","status":` + strconv.Itoa(status) + `,"detail":"` + detail + `"}` + "\n"
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}
