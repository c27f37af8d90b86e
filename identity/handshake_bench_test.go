package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

// BenchmarkMTLSHandshake measures one full mTLS handshake (TLS 1.3, ECDSA
// P-256, no session resumption) over an in-memory pipe: first with plain
// tls.Configs holding static certificates and CA pools (the baseline), then
// with the SDK's ServerTLSConfig/ClientTLSConfig (GetCertificate from the
// rotating SVID, SPIFFE verification in VerifyConnection, revocation check,
// authorizer). The ratio is the SDK's overhead per handshake.
func BenchmarkMTLSHandshake(b *testing.B) {
	fa, err := fakeauthority.Start(fakeauthority.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer fa.Close()
	dir := b.TempDir()
	bundle := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundle, fa.BundlePEM(), 0o644); err != nil {
		b.Fatal(err)
	}
	newSrc := func(id string) *Source {
		tok := "wardbt_" + strings.ReplaceAll(id, "/", "_")
		sid := td.IDString() + id
		fa.AddToken(tok, mustID(b, sid))
		watch := false
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		src, err := New(ctx, Config{AuthorityURL: fa.URL(), BootstrapToken: tok, BundleFile: bundle, Watch: &watch})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = src.Close() })
		return src
	}
	server, client := newSrc("/svc/api"), newSrc("/svc/web")

	// Baseline configs from the same certificates.
	roots := x509.NewCertPool()
	roots.AddCert(fa.Root().Cert)
	plainCert := func(s *x509svid.SVID) tls.Certificate {
		c := tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
		for _, x := range s.Certificates {
			c.Certificate = append(c.Certificate, x.Raw)
		}
		return c
	}
	plainServer := &tls.Config{Certificates: []tls.Certificate{plainCert(server.SVID())}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert, SessionTicketsDisabled: true}
	plainClient := &tls.Config{Certificates: []tls.Certificate{plainCert(client.SVID())}, RootCAs: roots, ServerName: "api", InsecureSkipVerify: false}
	// The SVID has no DNS SAN; the baseline verifies the chain like the SDK
	// does, without a host name.
	plainClient.InsecureSkipVerify = true
	plainClient.VerifyConnection = func(cs tls.ConnectionState) error {
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		return err
	}

	sdkServer := server.ServerTLSConfig(AuthorizeID(mustID(b, td.IDString()+"/svc/web")))
	sdkServer.SessionTicketsDisabled = true
	sdkClient := client.ClientTLSConfig(AuthorizeID(server.ID()))

	for _, bc := range []struct {
		name           string
		server, client *tls.Config
	}{
		{"plain tls.Config", plainServer, plainClient},
		{"identity SDK", sdkServer, sdkClient},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				handshake(b, bc.server, bc.client)
			}
		})
	}
}

func handshake(b *testing.B, serverConf, clientConf *tls.Config) {
	c1, c2 := net.Pipe()
	srv := tls.Server(c1, serverConf)
	cli := tls.Client(c2, clientConf)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	// Close the raw pipe ends: a TLS close_notify would block on the
	// unbuffered pipe with nobody reading.
	_ = c1.Close()
	_ = c2.Close()
}

func mustID(b *testing.B, s string) spiffeid.ID {
	id, err := spiffeid.FromString(s)
	if err != nil {
		b.Fatal(err)
	}
	return id
}
