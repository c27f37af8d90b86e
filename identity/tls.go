package identity

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// revokedSet is an immutable set of revoked serials (lower-case hex,
// serial.Text(16)). Writers copy it; readers load it from an atomic
// pointer, so a check never blocks and never touches the network.
type revokedSet map[string]struct{}

// Revoked reports whether the certificate serial is in the revoked set
// pushed by the authority.
func (s *Source) Revoked(serial *big.Int) bool {
	if serial == nil {
		return false
	}
	_, ok := (*s.revoked.Load())[serial.Text(16)]
	return ok
}

// checkRevoked fails with ErrRevoked if any certificate is revoked.
func (s *Source) checkRevoked(certs []*x509.Certificate) error {
	set := *s.revoked.Load()
	if len(set) == 0 {
		return nil
	}
	for _, c := range certs {
		if _, ok := set[c.SerialNumber.Text(16)]; ok {
			return fmt.Errorf("%w: serial %s", ErrRevoked, c.SerialNumber.Text(16))
		}
	}
	return nil
}

// verifyPeer is the full peer check run in VerifyConnection: the chain
// must verify against the current bundle (x509svid.Verify), no certificate
// of any verified chain may be revoked, and authorize must accept the ID.
func (s *Source) verifyPeer(cs tls.ConnectionState, authorize Authorizer) error {
	if len(cs.PeerCertificates) == 0 {
		return ErrNoPeerCertificate
	}
	id, chains, err := x509svid.Verify(cs.PeerCertificates, s.trust.Load().bundle, x509svid.WithTime(s.now()))
	if err != nil {
		return fmt.Errorf("identity: verify peer: %w", err)
	}
	for _, chain := range chains {
		if err := s.checkRevoked(chain); err != nil {
			return err
		}
	}
	if err := authorize(id); err != nil {
		return err
	}
	return nil
}

// getCertificate returns the current SVID as a TLS certificate (with its
// OCSP staple). It reads an atomic pointer: a renewal swaps the pointer,
// new handshakes use the new certificate, established connections keep
// theirs.
func (s *Source) getCertificate() (*tls.Certificate, error) {
	st := s.svid.Load()
	if st == nil {
		return nil, ErrNoSVID
	}
	return st.cert, nil
}

// ServerTLSConfig returns a TLS server config that presents the current
// SVID and requires every client to present an X509-SVID that verifies
// against the current trust bundle, is not revoked, and is accepted by
// authorize (nil means AuthorizeAny).
//
// ClientAuth is RequireAnyClientCert and the whole verification happens
// in VerifyConnection (which also runs on resumed sessions): the trust
// bundle changes at runtime, so the static ClientCAs pool is not used.
// Do not set Certificates on the returned config; it would take
// precedence over GetCertificate for clients that send no SNI.
func (s *Source) ServerTLSConfig(authorize Authorizer) *tls.Config {
	if authorize == nil {
		authorize = AuthorizeAny()
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.getCertificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return s.verifyPeer(cs, authorize)
		},
	}
}

// ClientTLSConfig returns a TLS client config that presents the current
// SVID and accepts only servers whose X509-SVID verifies against the
// current trust bundle, is not revoked, and is accepted by authorize (nil
// means AuthorizeAny).
//
// InsecureSkipVerify is true: it turns off crypto/tls's web PKI checks
// (system roots and DNS host names), which do not apply to SPIFFE
// identities. It is always paired with VerifyConnection, which performs
// the full SPIFFE verification on every handshake (the same pattern as
// go-spiffe's tlsconfig package), so no connection is established to an
// unverified server.
func (s *Source) ClientTLSConfig(authorize Authorizer) *tls.Config {
	if authorize == nil {
		authorize = AuthorizeAny()
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, //nolint:gosec // full verification in VerifyConnection
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.getCertificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return s.verifyPeer(cs, authorize)
		},
	}
}

// PeerID returns the SPIFFE ID of the peer of a connection established
// with ServerTLSConfig or ClientTLSConfig, and re-checks every certificate
// the peer presented against the revoked set, so that a peer revoked after
// the handshake is refused on its next request over a kept-alive
// connection. The chain itself was verified during the handshake and is
// not verified again (a connection from another tls.Config must not be
// passed here).
func (s *Source) PeerID(cs *tls.ConnectionState) (spiffeid.ID, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, ErrNoPeerCertificate
	}
	if err := s.checkRevoked(cs.PeerCertificates); err != nil {
		return spiffeid.ID{}, err
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: peer certificate: %w", err)
	}
	return id, nil
}
