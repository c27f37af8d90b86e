package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// readyTimeout bounds how long StartEmbedded waits for the server.
const readyTimeout = 10 * time.Second

// Errors returned by StartEmbedded for a bad configuration.
var (
	ErrPlaintext  = errors.New("bus: plaintext NATS is only allowed on a loopback host")
	ErrNotStarted = errors.New("bus: embedded NATS did not start")
)

// EmbeddedConfig configures an in-process NATS server.
type EmbeddedConfig struct {
	// Host is the interface to listen on. "" means 127.0.0.1.
	Host string
	// Port is the client port. 0 means a free port picked by the kernel
	// (read it back with ClientURL); ward never assumes 4222.
	Port int
	// TLS is the server's TLS configuration (certificate, ideally the
	// spiffe://<td>/ward/nats SVID). nil means plaintext, refused unless Host
	// is a loopback address. The config is cloned; MinVersion is raised to
	// TLS 1.2.
	TLS *tls.Config
	// ClientCAs, when set, turns on mutual TLS: every client must present a
	// certificate chaining to these roots (TLS required). nil leaves client
	// authentication to TLS.ClientAuth as given.
	ClientCAs *x509.CertPool
	// AuthorizeClient, when set with ClientCAs, is called with the SPIFFE ID
	// of each verified client certificate during the handshake; an error
	// refuses the connection. Use it to admit only ward components
	// (spiffe://<td>/ward/...) and keep workloads off the bus. nil admits any
	// client whose certificate verifies.
	AuthorizeClient func(id spiffeid.ID) error
	// Permissions, when set, decides what each client may do from the
	// SPIFFE ID of its certificate, at every connection: an identity it
	// refuses (false) cannot connect. Needs client certificates:
	// ClientCAs, or a TLS config that requires them and verifies them
	// itself (VerifyConnection).
	Permissions func(id spiffeid.ID) (Permissions, bool)
	// StoreDir turns on JetStream with its files under this directory.
	// "" means JetStream off.
	StoreDir string
	// Logger receives the server's log lines. nil discards them.
	Logger *slog.Logger
}

// Permissions are the subjects a client identity may publish to and
// subscribe to (NATS wildcards allowed). Nothing else is allowed.
type Permissions struct {
	Publish   []string
	Subscribe []string
}

// spiffeAuth admits a client whose (already verified) certificate names an
// identity Permissions accepts, with exactly those permissions.
type spiffeAuth struct {
	permissions func(spiffeid.ID) (Permissions, bool)
}

func (a *spiffeAuth) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	cs := c.GetTLSConnectionState()
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return false
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return false
	}
	p, ok := a.permissions(id)
	if !ok {
		return false
	}
	c.RegisterUser(&server.User{Username: id.String(), Permissions: &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: append([]string(nil), p.Publish...)},
		Subscribe: &server.SubjectPermission{Allow: append([]string(nil), p.Subscribe...)},
	}})
	return true
}

// Server is an in-process NATS server.
type Server struct {
	ns  *server.Server
	url string
}

// StartEmbedded starts an in-process NATS server and returns once it accepts
// connections (or fails after 10s).
func StartEmbedded(cfg EmbeddedConfig) (*Server, error) {
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded NATS: %w", err)
	}
	logger := &natsLogger{log: cfg.Logger}
	if logger.log == nil {
		logger.log = slog.New(slog.DiscardHandler)
	}
	ns.SetLoggerV2(logger, logger.log.Enabled(context.Background(), slog.LevelDebug), false, false)
	ns.Start()
	// Wait for readiness, but give up at once on a fatal error (port in
	// use...): the server then never becomes ready.
	deadline := time.Now().Add(readyTimeout)
	for !ns.ReadyForConnections(20 * time.Millisecond) {
		fatal := logger.fatalError()
		if fatal == "" && time.Now().Before(deadline) {
			continue
		}
		ns.Shutdown()
		ns.WaitForShutdown()
		if fatal != "" {
			return nil, fmt.Errorf("%w: %s", ErrNotStarted, fatal)
		}
		if last := logger.lastError(); last != "" {
			return nil, fmt.Errorf("%w within %s: %s", ErrNotStarted, readyTimeout, last)
		}
		return nil, fmt.Errorf("%w within %s", ErrNotStarted, readyTimeout)
	}
	return &Server{ns: ns, url: ns.ClientURL()}, nil
}

func (cfg EmbeddedConfig) options() (*server.Options, error) {
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	switch {
	case port == 0:
		port = server.RANDOM_PORT
	case port < 0 || port > 65535:
		return nil, fmt.Errorf("bus: EmbeddedConfig.Port %d out of range", cfg.Port)
	}
	if cfg.TLS == nil {
		if !isLoopback(host) {
			return nil, fmt.Errorf("%w (EmbeddedConfig.Host %q without TLS)", ErrPlaintext, host)
		}
		if cfg.ClientCAs != nil || cfg.AuthorizeClient != nil {
			return nil, errors.New("bus: EmbeddedConfig.ClientCAs and AuthorizeClient need TLS")
		}
	}
	if cfg.AuthorizeClient != nil && cfg.ClientCAs == nil {
		return nil, errors.New("bus: EmbeddedConfig.AuthorizeClient needs ClientCAs")
	}
	if cfg.Permissions != nil && (cfg.TLS == nil || (cfg.ClientCAs == nil && cfg.TLS.ClientAuth < tls.RequireAnyClientCert)) {
		return nil, errors.New("bus: EmbeddedConfig.Permissions needs client certificates (ClientCAs, or a TLS config that requires and verifies them)")
	}
	opts := &server.Options{
		Host:                   host,
		Port:                   port,
		NoSigs:                 true,
		NoLog:                  cfg.Logger == nil,
		JetStream:              cfg.StoreDir != "",
		StoreDir:               cfg.StoreDir,
		DisableJetStreamBanner: true,
	}
	if cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		if tc.MinVersion < tls.VersionTLS12 {
			tc.MinVersion = tls.VersionTLS12
		}
		if cfg.ClientCAs != nil {
			tc.ClientCAs = cfg.ClientCAs
			tc.ClientAuth = tls.RequireAndVerifyClientCert
			tc.VerifyConnection = verifyClient(tc.VerifyConnection, cfg.AuthorizeClient)
		}
		opts.TLSConfig = tc
		opts.TLSVerify = tc.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = 5
	}
	if cfg.Permissions != nil {
		opts.CustomClientAuthentication = &spiffeAuth{permissions: cfg.Permissions}
	}
	return opts, nil
}

// verifyClient runs after the standard chain verification against ClientCAs:
// it calls the caller's own VerifyConnection, then authorize with the
// client's SPIFFE ID.
func verifyClient(prev func(tls.ConnectionState) error, authorize func(spiffeid.ID) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if authorize == nil {
			return nil
		}
		if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
			return errors.New("bus: client certificate not verified")
		}
		id, err := x509svid.IDFromCert(cs.VerifiedChains[0][0])
		if err != nil {
			return fmt.Errorf("bus: client certificate: %w", err)
		}
		if err := authorize(id); err != nil {
			return fmt.Errorf("bus: client %s not authorized: %w", id, err)
		}
		return nil
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ClientURL returns the URL clients connect to: nats://HOST:PORT, or
// tls://HOST:PORT when the server has TLS.
func (s *Server) ClientURL() string { return s.url }

// Shutdown stops the server and waits until it has stopped. Calling it again
// is harmless.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// Run blocks until ctx is done, then shuts the server down. It lets the
// embedded server run among a process's other tasks.
func (s *Server) Run(ctx context.Context) error {
	stopped := make(chan struct{})
	go func() {
		s.ns.WaitForShutdown()
		close(stopped)
	}()
	select {
	case <-ctx.Done():
		s.Shutdown()
		return nil
	case <-stopped:
		return errors.New("bus: embedded NATS stopped")
	}
}

// natsLogger adapts slog to the server's logger and remembers the last error
// and the first fatal one, so StartEmbedded can say why the server did not
// start.
type natsLogger struct {
	log   *slog.Logger
	mu    sync.Mutex
	err   string
	fatal string
}

func (l *natsLogger) logf(level slog.Level, format string, v []any) string {
	msg := fmt.Sprintf(format, v...)
	l.log.Log(context.Background(), level, msg, "component", "nats")
	return msg
}

func (l *natsLogger) record(msg string) {
	l.mu.Lock()
	l.err = msg
	l.mu.Unlock()
}

func (l *natsLogger) fatalError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

func (l *natsLogger) lastError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *natsLogger) Noticef(format string, v ...any) {
	if l.log.Enabled(context.Background(), slog.LevelInfo) {
		l.logf(slog.LevelInfo, format, v)
	}
}

func (l *natsLogger) Warnf(format string, v ...any) {
	if l.log.Enabled(context.Background(), slog.LevelWarn) {
		l.logf(slog.LevelWarn, format, v)
	}
}

// Fatalf logs at error level: the embedded server must never exit the process.
func (l *natsLogger) Fatalf(format string, v ...any) {
	msg := l.logf(slog.LevelError, format, v)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = msg
	if l.fatal == "" {
		l.fatal = msg
	}
}

func (l *natsLogger) Errorf(format string, v ...any) { l.record(l.logf(slog.LevelError, format, v)) }

func (l *natsLogger) Debugf(format string, v ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.logf(slog.LevelDebug, format, v)
	}
}

func (l *natsLogger) Tracef(format string, v ...any) {}
