package workloadapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workload "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("ward.test")

// testCA issues SVIDs (the agent's issuer in production gets them from
// the authority).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey

	mu     sync.Mutex
	svids  map[spiffeid.ID]*x509svid.SVID
	serial int64
}

func newTestCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: td.Name()}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, svids: map[spiffeid.ID]*x509svid.SVID{}, serial: 1}
}

// issue makes a new SVID for id and remembers it as current.
func (c *testCA) issue(t *testing.T, id spiffeid.ID) *x509svid.SVID {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.serial++
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(c.serial), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{id.URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	s := &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: crypto.Signer(key)}
	c.svids[id] = s
	return s
}

func (c *testCA) SVID(_ context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.svids[id], nil
}

func serve(t *testing.T, entries []Entry, ca *testCA) (*Server, string) {
	t.Helper()
	s, err := New(Config{Entries: func() []Entry { return entries }, Issuer: ca,
		Bundle: func() *x509bundle.Bundle { return x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.cert}) }})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, sock
}

// TestGoSpiffeClient: go-spiffe's own workloadapi client gets the SVID
// unchanged and sees a rotation pushed on the stream.
func TestGoSpiffeClient(t *testing.T) {
	ca := newTestCA(t)
	id := spiffeid.RequireFromPath(td, "/svc/orders")
	first := ca.issue(t, id)
	uid := os.Getuid()
	s, sock := serve(t, []Entry{{ID: id, UID: &uid}}, ca)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+sock)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got, err := src.GetX509SVID()
	if err != nil || got.ID != id || !got.Certificates[0].Equal(first.Certificates[0]) {
		t.Fatalf("svid %v %v", got, err)
	}
	if b, err := src.GetX509BundleForTrustDomain(td); err != nil || !b.HasX509Authority(ca.cert) {
		t.Fatalf("bundle %v %v", b, err)
	}
	// Rotation: a new SVID, announced; the client's source follows.
	second := ca.issue(t, id)
	s.Notify()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ = src.GetX509SVID()
		if got.Certificates[0].Equal(second.Certificates[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rotation was not pushed on the stream")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSpecErrors(t *testing.T) {
	ca := newTestCA(t)
	id := spiffeid.RequireFromPath(td, "/svc/orders")
	ca.issue(t, id)
	other := os.Getuid() + 1
	_, sock := serve(t, []Entry{{ID: id, UID: &other}, {ID: spiffeid.RequireFromPath(td, "/svc/none")}}, ca)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := workload.NewSpiffeWorkloadAPIClient(conn)
	recv := func(ctx context.Context) error {
		st, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := recv(ctx); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("without the security header: %v", err)
	}
	hctx := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	if err := recv(hctx); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("an unregistered caller: %v", err)
	}
	if _, err := c.FetchJWTSVID(hctx, &workload.JWTSVIDRequest{Audience: []string{"x"}}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("JWT-SVIDs: %v", err)
	}
	// The bundle stream needs only the header.
	st, err := c.FetchX509Bundles(hctx, &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil || len(resp.Bundles["spiffe://ward.test"]) == 0 {
		t.Fatalf("bundles %v %v", resp, err)
	}
}

func TestEntryMatches(t *testing.T) {
	uid, gid := 1000, 50
	c := Caller{UID: 1000, GID: 50, Path: "/usr/bin/orders"}
	for _, tc := range []struct {
		e    Entry
		want bool
	}{
		{Entry{UID: &uid}, true},
		{Entry{UID: &uid, Path: "/usr/bin/orders"}, true},
		{Entry{UID: &uid, Path: "/usr/bin/other"}, false},
		{Entry{GID: &gid}, true},
		{Entry{}, false}, // no selector: never
	} {
		if got := tc.e.Matches(c); got != tc.want {
			t.Errorf("%+v: %v", tc.e, got)
		}
	}
}

// A client that closes its stream ends the server's stream (no leak), and
// a header with another value than "true" is no header.
func TestClosedStreamAndWrongHeader(t *testing.T) {
	ca := newTestCA(t)
	id := spiffeid.RequireFromPath(td, "/svc/orders")
	ca.issue(t, id)
	uid := os.Getuid()
	s, sock := serve(t, []Entry{{ID: id, UID: &uid}}, ca)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := workload.NewSpiffeWorkloadAPIClient(conn)
	for _, v := range []string{"false", "TRUE", ""} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", v)
		st, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("header %q: %v", v, err)
		}
	}
	for range 20 {
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true"))
		st, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	// Notify after the clients went away: nothing blocks, new streams work.
	s.Notify()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true"), 5*time.Second)
	defer cancel()
	st, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := st.Recv(); err != nil || resp.Svids[0].SpiffeId != id.String() {
		t.Fatalf("after closed streams: %v %v", resp, err)
	}
}
