package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/wardsec/ward/internal/authority"
	"github.com/wardsec/ward/internal/bus"
	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/internal/store"
	"github.com/wardsec/ward/internal/telemetry"
)

// openStore opens the configured store, creating the data directory for a
// SQLite file.
func openStore(ctx context.Context, cfg *Config) (*store.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	return store.Open(ctx, cfg.Store.DSN)
}

// openKMS builds the key-encryption layer. With create, a missing KEK file
// (or passphrase salt) is generated; otherwise it must exist.
func openKMS(ctx context.Context, cfg *Config, st *store.Store, create bool) (kms.KMS, error) {
	if cfg.KMS.PassphraseEnv != "" {
		pass := os.Getenv(cfg.KMS.PassphraseEnv)
		if pass == "" {
			return nil, fmt.Errorf("kms: environment variable %s (kms.passphrase_env) is empty", cfg.KMS.PassphraseEnv)
		}
		salt, err := st.GetMeta(ctx, "kek_salt")
		if errors.Is(err, store.ErrNotFound) && create {
			salt = make([]byte, 16)
			if _, err := rand.Read(salt); err != nil {
				return nil, err
			}
			err = st.PutMeta(ctx, "kek_salt", salt)
		}
		if err != nil {
			return nil, fmt.Errorf("kms: passphrase salt: %w", err)
		}
		kek, err := kms.DeriveKEK([]byte(pass), salt)
		if err != nil {
			return nil, err
		}
		return kms.NewLocal(kek)
	}
	if _, err := os.Stat(cfg.KMS.KEKFile); errors.Is(err, os.ErrNotExist) && create {
		if err := kms.GenerateKEKFile(cfg.KMS.KEKFile); err != nil {
			return nil, err
		}
	}
	kek, err := kms.LoadKEKFile(cfg.KMS.KEKFile)
	if err != nil {
		return nil, err
	}
	return kms.NewLocal(kek)
}

// serverConfig loads the config (file and WARD_* environment) and the
// process logger it describes: the start of every long-running command.
func (g *globals) serverConfig() (*Config, *slog.Logger, error) {
	cfg, err := LoadConfig(g.configPath, os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	log, err := g.logger(cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, log, nil
}

// logger builds the process logger from the config.
func (g *globals) logger(cfg *Config) (*slog.Logger, error) {
	return telemetry.NewLogger(g.stderr, cfg.Log.Level, cfg.Log.Format)
}

// lateBus lets the authority be constructed before the bus connection exists
// (the bus's TLS certificates are issued by that authority). Subscriptions
// made before attach are replayed on attach; publishing before attach fails.
type lateBus struct {
	mu   sync.Mutex
	conn *bus.Conn
	subs []*lateSub
}

type lateSub struct {
	subject string
	fn      func(string, []byte)
	unsub   func() error
	dead    bool
}

var _ authority.Bus = (*lateBus)(nil)

func (b *lateBus) Publish(ctx context.Context, subject string, data []byte) error {
	b.mu.Lock()
	c := b.conn
	b.mu.Unlock()
	if c == nil {
		return errors.New("bus: not connected yet")
	}
	return c.Publish(ctx, subject, data)
}

func (b *lateBus) Subscribe(subject string, fn func(string, []byte)) (func() error, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &lateSub{subject: subject, fn: fn}
	if b.conn != nil {
		u, err := b.conn.Subscribe(subject, fn)
		if err != nil {
			return nil, err
		}
		s.unsub = u
	}
	b.subs = append(b.subs, s)
	return func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		s.dead = true
		if s.unsub != nil {
			return s.unsub()
		}
		return nil
	}, nil
}

func (b *lateBus) attach(c *bus.Conn) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.conn = c
	for _, s := range b.subs {
		if s.dead || s.unsub != nil {
			continue
		}
		u, err := c.Subscribe(s.subject, s.fn)
		if err != nil {
			return err
		}
		s.unsub = u
	}
	return nil
}

// componentCert is a ward component's SVID (spiffe://<td>/ward/<name>)
// issued in-process by the authority. It is re-issued when half of its
// lifetime has passed or when the authority's own intermediate changed (CA
// rotation); the replaced certificate is revoked as superseded, so that a
// retiring CA is left with nothing live chaining to it.
type componentCert struct {
	a       *authority.Authority
	name    string
	serving *tls.Config

	mu  sync.Mutex
	cur *tls.Certificate
}

func (c *componentCert) get() (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil && sameIssuerAsServing(c.cur.Leaf, c.serving) {
		half := c.cur.Leaf.NotBefore.Add(c.cur.Leaf.NotAfter.Sub(c.cur.Leaf.NotBefore) / 2)
		if time.Now().Before(half) {
			return c.cur, nil
		}
	}
	next, err := c.a.ComponentCertificate(c.name, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	if err != nil {
		return nil, err
	}
	if next.Leaf == nil {
		if next.Leaf, err = x509.ParseCertificate(next.Certificate[0]); err != nil {
			return nil, err
		}
	}
	if old := c.cur; old != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.a.RevokeSuperseded(ctx, old.Leaf); err != nil {
			return nil, fmt.Errorf("%s certificate: revoke superseded: %w", c.name, err)
		}
	}
	c.cur = &next
	return c.cur, nil
}

// refresh re-checks the certificate every interval, so that a long-lived
// connection's endpoint (the embedded NATS server) moves to a rotated CA
// without waiting for a new handshake.
func (c *componentCert) refresh(ctx context.Context, interval time.Duration, log *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := c.get(); err != nil {
				log.Warn("component certificate refresh failed", "component", c.name, "error", err)
			}
		}
	}
}

// componentTLS returns a TLS config presenting the component certificate c
// for both server and client use.
func componentTLS(c *componentCert) (*tls.Config, error) {
	if _, err := c.get(); err != nil {
		return nil, fmt.Errorf("%s certificate: %w", c.name, err)
	}
	a := c.a
	roots := func() *x509.CertPool {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(a.BundlePEM())
		return pool
	}
	td := a.TrustDomain().String()
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		GetCertificate:       func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.get() },
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c.get() },
		// Peers on the bus must be ward components of this trust domain;
		// the chain is verified against the current bundle on every
		// handshake (including resumed ones).
		ClientAuth:         tls.RequireAnyClientCert,
		InsecureSkipVerify: true, // verification is done in VerifyConnection below, against the live bundle
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyComponentPeer(cs, roots(), td)
		},
	}, nil
}

// verifyComponentPeer checks the peer chain against roots and requires a
// spiffe://<td>/ward/<component> identity.
func verifyComponentPeer(cs tls.ConnectionState, roots *x509.CertPool, td string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("bus: peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("bus: peer certificate: %w", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].Scheme != "spiffe" || leaf.URIs[0].Host != td || !strings.HasPrefix(leaf.URIs[0].Path, "/ward/") {
		return errors.New("bus: peer is not a ward component of this trust domain")
	}
	return nil
}

// sameIssuerAsServing reports whether leaf was issued by the intermediate
// that issued the authority's current serving certificate, i.e. the active
// default intermediate. After a CA rotation it is false, and component
// certificates move to the new hierarchy at their next handshake.
func sameIssuerAsServing(leaf *x509.Certificate, serving *tls.Config) bool {
	if serving == nil || serving.GetCertificate == nil {
		return true
	}
	sc, err := serving.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || sc == nil || len(sc.Certificate) == 0 {
		return true
	}
	sl := sc.Leaf
	if sl == nil {
		if sl, err = x509.ParseCertificate(sc.Certificate[0]); err != nil {
			return true
		}
	}
	return bytes.Equal(sl.AuthorityKeyId, leaf.AuthorityKeyId)
}
