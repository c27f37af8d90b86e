package bus

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	natsID      = spiffeid.RequireFromString("spiffe://ward.test/ward/nats")
	authorityID = spiffeid.RequireFromString("spiffe://ward.test/ward/authority")
	wardTD      = spiffeid.RequireTrustDomainFromString("ward.test")
)

// uniqueSubject returns a subject no other test run uses, so tests can share
// an external server.
func uniqueSubject(t *testing.T, name string) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	s := Subject("test", name, hex.EncodeToString(b))
	if s == "" {
		t.Fatalf("bad subject for %q", name)
	}
	return s
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func startEmbedded(t *testing.T, cfg EmbeddedConfig) *Server {
	t.Helper()
	srv, err := StartEmbedded(cfg)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

func connect(t *testing.T, url string, tc *tls.Config, name string) *Conn {
	t.Helper()
	c, err := Connect(testCtx(t, 10*time.Second), url, tc, name)
	if err != nil {
		t.Fatalf("Connect(%s): %v", name, err)
	}
	t.Cleanup(c.Close)
	return c
}

type msg struct {
	subject string
	data    string
}

// subscribe subscribes c to subject and returns a channel of what arrives.
func subscribe(t *testing.T, c *Conn, subject string) (<-chan msg, func() error) {
	t.Helper()
	ch := make(chan msg, 64)
	unsub, err := c.Subscribe(subject, func(subject string, data []byte) {
		ch <- msg{subject, string(data)}
	})
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", subject, err)
	}
	return ch, unsub
}

func receive(t *testing.T, ch <-chan msg) msg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return msg{}
	}
}

func expectNone(t *testing.T, ch <-chan msg, d time.Duration) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected message %+v", m)
	case <-time.After(d):
	}
}

// roundTrip publishes on pub and checks sub receives it.
func roundTrip(t *testing.T, pub, sub *Conn, subject string) {
	t.Helper()
	ch, unsub := subscribe(t, sub, subject)
	defer func() {
		if err := unsub(); err != nil {
			t.Errorf("unsubscribe: %v", err)
		}
	}()
	want := fmt.Sprintf(`{"seq":%d,"kind":"test"}`, time.Now().UnixNano())
	if err := pub.Publish(t.Context(), subject, []byte(want)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if m := receive(t, ch); m.subject != subject || m.data != want {
		t.Fatalf("got %+v, want %s %s", m, subject, want)
	}
}

// authorizeWard admits only ward components.
func authorizeWard(id spiffeid.ID) error {
	if id.MemberOf(wardTD) && strings.HasPrefix(id.Path(), "/ward/") {
		return nil
	}
	return errors.New("not a ward component")
}

// clientTLS trusts ca and checks the server is the ward NATS server; cert,
// when not nil, is presented to the server.
func clientTLS(ca *testCA, cert *tls.Certificate) *tls.Config {
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    ca.pool(),
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
			if err != nil {
				return err
			}
			if id != natsID {
				return fmt.Errorf("server is %s, want %s", id, natsID)
			}
			return nil
		},
	}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return tc
}

func TestEmbeddedMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	serverCert := ca.issue(t, natsID.String(), net.IPv4(127, 0, 0, 1))
	var serverLog syncBuffer
	srv := startEmbedded(t, EmbeddedConfig{
		TLS:             &tls.Config{Certificates: []tls.Certificate{serverCert}},
		ClientCAs:       ca.pool(),
		AuthorizeClient: authorizeWard,
		Logger:          slog.New(slog.NewTextHandler(&serverLog, nil)),
	})
	if !strings.HasPrefix(srv.ClientURL(), "tls://127.0.0.1:") || strings.HasSuffix(srv.ClientURL(), ":4222") {
		t.Fatalf("ClientURL = %s", srv.ClientURL())
	}

	authorityCert := ca.issue(t, authorityID.String())
	t.Run("round trip", func(t *testing.T) {
		pub := connect(t, srv.ClientURL(), clientTLS(ca, &authorityCert), "ward-authority-1")
		sub := connect(t, srv.ClientURL(), clientTLS(ca, &authorityCert), "ward-authority-2")
		roundTrip(t, pub, sub, uniqueSubject(t, "mtls"))
		state, err := pub.NATS().TLSConnectionState()
		if err != nil || state.Version != tls.VersionTLS13 {
			t.Fatalf("TLS state %v, %v", state.Version, err)
		}
	})

	otherCA := newTestCA(t)
	workloadCert := ca.issue(t, "spiffe://ward.test/svc/web")
	foreignCert := otherCA.issue(t, authorityID.String())
	refused := []struct {
		name      string
		tc        *tls.Config
		serverLog string // what the server logs about it, if anything
	}{
		{name: "no client certificate", tc: clientTLS(ca, nil)},
		{name: "workload certificate", tc: clientTLS(ca, &workloadCert), serverLog: "spiffe://ward.test/svc/web not authorized"},
		{name: "certificate from another CA", tc: clientTLS(ca, &foreignCert)},
		{name: "client does not trust server", tc: clientTLS(otherCA, &authorityCert)},
		{name: "plaintext client", tc: nil},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			c, err := Connect(testCtx(t, 10*time.Second), srv.ClientURL(), tt.tc, "intruder")
			if err == nil {
				c.Close()
				t.Fatal("Connect succeeded")
			}
			if errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("refusal not recognised as final: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "bus: ") {
				t.Errorf("error %q does not name the package", err)
			}
			t.Logf("refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
			if tt.serverLog != "" && !strings.Contains(serverLog.String(), tt.serverLog) {
				t.Errorf("server log lacks %q:\n%s", tt.serverLog, serverLog.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestEmbeddedServersDoNotCollide(t *testing.T) {
	a := startEmbedded(t, EmbeddedConfig{})
	b := startEmbedded(t, EmbeddedConfig{})
	if a.ClientURL() == b.ClientURL() {
		t.Fatalf("both servers at %s", a.ClientURL())
	}
	subject := uniqueSubject(t, "collide")
	ca := connect(t, a.ClientURL(), nil, "a")
	cb := connect(t, b.ClientURL(), nil, "b")
	chB, _ := subscribe(t, cb, subject)
	roundTrip(t, ca, ca, subject)
	expectNone(t, chB, 200*time.Millisecond) // b never sees a's traffic
	roundTrip(t, cb, cb, subject)
}

func TestEmbeddedJetStream(t *testing.T) {
	srv := startEmbedded(t, EmbeddedConfig{StoreDir: t.TempDir()})
	c := connect(t, srv.ClientURL(), nil, "js")
	ctx := testCtx(t, 10*time.Second)

	js, err := jetstream.New(c.NATS())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "WARD_EVENTS", Subjects: []string{SubjectEvents}})
	if err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	for i := range 3 {
		if err := c.Publish(ctx, SubjectEvents, fmt.Appendf(nil, `{"seq":%d}`, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream holds %d messages, want 3", info.State.Msgs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestJetStreamOffWithoutStoreDir(t *testing.T) {
	srv := startEmbedded(t, EmbeddedConfig{})
	c := connect(t, srv.ClientURL(), nil, "nojs")
	js, err := jetstream.New(c.NATS())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(testCtx(t, 5*time.Second)); err == nil {
		t.Fatal("JetStream answered without StoreDir")
	}
}

func TestReconnectRestoresSubscription(t *testing.T) {
	srv, err := StartEmbedded(EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	url := srv.ClientURL()
	_, portStr, _ := net.SplitHostPort(strings.TrimPrefix(url, "nats://"))
	var port int
	fmt.Sscan(portStr, &port)

	c := connect(t, url, nil, "survivor")
	subject := uniqueSubject(t, "reconnect")
	ch, _ := subscribe(t, c, subject)

	srv.Shutdown()
	srv2 := startEmbedded(t, EmbeddedConfig{Port: port})
	if srv2.ClientURL() != url {
		t.Fatalf("restarted at %s, want %s", srv2.ClientURL(), url)
	}
	// Right after Shutdown the client may not have noticed the loss yet
	// (Connected can still be true, and a flush then fails while it
	// switches to reconnecting): wait until a flush round-trips on the new
	// server, which also means the subscription has been replayed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		err := c.Flush(ctx)
		cancel()
		if err == nil && c.Connected() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("did not reconnect within 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	other := connect(t, url, nil, "publisher")
	if err := other.Publish(t.Context(), subject, []byte("after restart")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch); m.data != "after restart" {
		t.Fatalf("got %+v", m)
	}
}

func TestConnectHonoursContext(t *testing.T) {
	// A port nothing listens on: grab one, then close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	start := time.Now()
	_, err = Connect(testCtx(t, 700*time.Millisecond), "nats://"+addr, nil, "late")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Connect took %v past a 700ms deadline", d)
	}

	// The server appears while Connect is retrying.
	srvCh := make(chan *Server, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, port, _ := net.SplitHostPort(addr)
		var p int
		fmt.Sscan(port, &p)
		s, err := StartEmbedded(EmbeddedConfig{Port: p})
		if err != nil {
			t.Error(err)
		}
		srvCh <- s
	}()
	c, err := Connect(testCtx(t, 10*time.Second), "nats://"+addr, nil, "patient")
	if s := <-srvCh; s != nil {
		t.Cleanup(s.Shutdown)
	}
	if err != nil {
		t.Fatalf("Connect while server starts: %v", err)
	}
	c.Close()
}

func TestConnectErrors(t *testing.T) {
	ctx := testCtx(t, time.Second)
	if _, err := Connect(ctx, "", nil, "x"); err == nil {
		t.Fatal("empty URL accepted")
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Connect(canceled, "nats://127.0.0.1:1", nil, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled ctx: %v", err)
	}
	_, err := Connect(ctx, "nats://user:s3cret@127.0.0.1:1", nil, "x")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error leaks password or is nil: %v", err)
	}
}

func TestEmbeddedConfigErrors(t *testing.T) {
	ca := newTestCA(t)
	cert := ca.issue(t, natsID.String(), net.IPv4(127, 0, 0, 1))
	tests := []struct {
		name    string
		cfg     EmbeddedConfig
		wantErr error
	}{
		{name: "plaintext on all interfaces", cfg: EmbeddedConfig{Host: "0.0.0.0"}, wantErr: ErrPlaintext},
		{name: "plaintext on a LAN address", cfg: EmbeddedConfig{Host: "10.1.2.3"}, wantErr: ErrPlaintext},
		{name: "bad port", cfg: EmbeddedConfig{Port: 70000}},
		{name: "client CAs without TLS", cfg: EmbeddedConfig{ClientCAs: ca.pool()}},
		{name: "authorize without client CAs", cfg: EmbeddedConfig{
			TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, AuthorizeClient: authorizeWard}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := StartEmbedded(tt.cfg)
			if err == nil {
				srv.Shutdown()
				t.Fatal("StartEmbedded succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestEmbeddedPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	_, err = StartEmbedded(EmbeddedConfig{Port: port})
	if !errors.Is(err, ErrNotStarted) {
		t.Fatalf("err = %v, want ErrNotStarted", err)
	}
	t.Log(err)
}

func TestPublishSubscribeRules(t *testing.T) {
	srv := startEmbedded(t, EmbeddedConfig{})
	c := connect(t, srv.ClientURL(), nil, "rules")

	if err := c.Publish(t.Context(), "other.subject", nil); !errors.Is(err, ErrInvalidSubject) {
		t.Fatalf("Publish outside ward.v1: %v", err)
	}
	if err := c.Publish(t.Context(), "ward.v1.>", nil); !errors.Is(err, ErrInvalidSubject) {
		t.Fatalf("Publish to wildcard: %v", err)
	}
	if err := c.Publish(t.Context(), Subject("a b"), nil); !errors.Is(err, ErrInvalidSubject) {
		t.Fatalf("Publish to invalid Subject(): %v", err)
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Publish(canceled, SubjectEvents, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with canceled ctx: %v", err)
	}
	if _, err := c.Subscribe(">", func(string, []byte) {}); !errors.Is(err, ErrInvalidSubject) {
		t.Fatalf("Subscribe to >: %v", err)
	}
	if _, err := c.Subscribe(SubjectEvents, nil); err == nil {
		t.Fatal("nil handler accepted")
	}

	// Wildcard subscription, unsubscribe, double unsubscribe.
	base := uniqueSubject(t, "wild")
	ch, unsub := subscribe(t, c, base+".>")
	if err := c.Publish(t.Context(), base+".x.y", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch); m.subject != base+".x.y" {
		t.Fatalf("got %+v", m)
	}
	if err := unsub(); err != nil {
		t.Fatal(err)
	}
	if err := unsub(); err != nil {
		t.Fatalf("second unsubscribe: %v", err)
	}
	if err := c.Publish(t.Context(), base+".x.y", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	expectNone(t, ch, 100*time.Millisecond)

	c.Close()
	c.Close()
	if err := c.Publish(t.Context(), SubjectEvents, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
}

func TestServerRun(t *testing.T) {
	srv, err := StartEmbedded(EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	c := connect(t, srv.ClientURL(), nil, "run")
	roundTrip(t, c, c, uniqueSubject(t, "run"))
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestExternalServer runs against a NATS server started outside the test,
// e.g. WARD_TEST_NATS_URL=nats://127.0.0.1:4222.
func TestExternalServer(t *testing.T) {
	url := os.Getenv("WARD_TEST_NATS_URL")
	if url == "" {
		t.Skip("WARD_TEST_NATS_URL not set (e.g. nats://127.0.0.1:4222); skipping external NATS test")
	}
	pub := connect(t, url, nil, "ward-test-pub")
	sub := connect(t, url, nil, "ward-test-sub")
	roundTrip(t, pub, sub, uniqueSubject(t, "external"))
}

// BenchmarkPublish measures Publish (validation + buffered write) up to the
// server acknowledging everything.
func BenchmarkPublish(b *testing.B) {
	srv, err := StartEmbedded(EmbeddedConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	c, err := Connect(b.Context(), srv.ClientURL(), nil, "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	data := []byte(`{"seq":123456,"kind":"svid.issued"}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Publish(b.Context(), SubjectEvents, data); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Flush(b.Context()); err != nil {
		b.Fatal(err)
	}
}

// TestEmbeddedPermissions: with Permissions, each identity may publish and
// subscribe only where its permissions say; other identities are refused.
func TestEmbeddedPermissions(t *testing.T) {
	ca := newTestCA(t)
	serverCert := ca.issue(t, natsID.String(), net.IPv4(127, 0, 0, 1))
	agentID := "spiffe://ward.test/ward/agent"
	srv := startEmbedded(t, EmbeddedConfig{
		TLS:             &tls.Config{Certificates: []tls.Certificate{serverCert}},
		ClientCAs:       ca.pool(),
		AuthorizeClient: authorizeWard,
		Permissions: func(id spiffeid.ID) (Permissions, bool) {
			switch id.String() {
			case authorityID.String():
				return Permissions{Publish: []string{"ward.v1.events"}, Subscribe: []string{"ward.v1.events", "ward.v1.audit.>"}}, true
			case agentID:
				return Permissions{Publish: []string{"ward.v1.audit.events.*"}, Subscribe: []string{"_INBOX.>"}}, true
			}
			return Permissions{}, false
		},
	})
	authorityCert, agentCert, otherCert := ca.issue(t, authorityID.String()), ca.issue(t, agentID), ca.issue(t, "spiffe://ward.test/ward/other")
	authority := connect(t, srv.ClientURL(), clientTLS(ca, &authorityCert), "authority")
	agent := connect(t, srv.ClientURL(), clientTLS(ca, &agentCert), "agent")

	events, _ := subscribe(t, authority, "ward.v1.events")
	audit, _ := subscribe(t, authority, "ward.v1.audit.events.host-1")
	// The agent may publish audit events, not the authority's change log.
	if err := agent.Publish(testCtx(t, 5*time.Second), "ward.v1.audit.events.host-1", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	_ = agent.Flush(testCtx(t, 5*time.Second))
	if m := receive(t, audit); string(m.data) != "ok" {
		t.Fatalf("audit event %q", m.data)
	}
	_ = agent.Publish(testCtx(t, 5*time.Second), "ward.v1.events", []byte("forged"))
	_ = agent.Flush(testCtx(t, 5*time.Second))
	expectNone(t, events, 300*time.Millisecond)
	// An identity without permissions cannot connect.
	if c, err := Connect(testCtx(t, 10*time.Second), srv.ClientURL(), clientTLS(ca, &otherCert), "other"); err == nil {
		c.Close()
		t.Fatal("an unmapped identity connected")
	}
	if _, err := (EmbeddedConfig{Permissions: func(spiffeid.ID) (Permissions, bool) { return Permissions{}, true }}).options(); err == nil {
		t.Fatal("Permissions without client certificates accepted")
	}
}
