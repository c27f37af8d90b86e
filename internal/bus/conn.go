package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Reconnect and flow-control defaults.
const (
	// MinReconnectDelay and MaxReconnectDelay bound the exponential backoff
	// between connection attempts (±20% jitter on top).
	MinReconnectDelay = 250 * time.Millisecond
	MaxReconnectDelay = 10 * time.Second

	// DefaultPendingMsgs and DefaultPendingBytes bound what a subscription
	// buffers for a slow handler; beyond them messages are dropped and the
	// drop is logged. Notifications are hints (the store is the truth), so a
	// bounded loss beats unbounded memory.
	DefaultPendingMsgs  = 8192
	DefaultPendingBytes = 16 << 20

	// maxRefusals consecutive certificate or authorization failures end
	// the first connection attempt: retrying will not fix them, but one
	// could be a server restarting mid-handshake.
	maxRefusals = 3

	dialTimeout  = 5 * time.Second
	flushTimeout = 5 * time.Second
)

// ErrClosed is returned when using a closed Conn.
var ErrClosed = errors.New("bus: connection closed")

// Conn is a NATS client connection that reconnects forever in the background.
// It is safe for concurrent use.
type Conn struct {
	nc      *nats.Conn
	log     *slog.Logger
	pending [2]int // messages, bytes
}

// Option tunes Connect.
type Option func(*options)

type options struct {
	log          *slog.Logger
	pendingMsgs  int
	pendingBytes int
}

// WithLogger logs disconnections, reconnections and dropped messages to l.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// WithPendingLimits sets the per-subscription buffer bounds (defaults
// DefaultPendingMsgs and DefaultPendingBytes; a value ≤ 0 keeps the default).
func WithPendingLimits(msgs, bytes int) Option {
	return func(o *options) {
		if msgs > 0 {
			o.pendingMsgs = msgs
		}
		if bytes > 0 {
			o.pendingBytes = bytes
		}
	}
}

// Connect dials the NATS server(s) at url (comma-separated for a cluster)
// with tlsConfig (nil: plaintext, unless the server demands TLS) and name as
// the client name shown by the server.
//
// The first connection is retried with backoff until it succeeds or ctx is
// done; certificate and authorization failures are final after three
// consecutive ones (under a second). Once connected, the Conn reconnects
// forever with backoff and jitter (even after authorization errors, which
// nats.go would otherwise give up on), buffering publishes meanwhile and
// restoring subscriptions.
func Connect(ctx context.Context, url string, tlsConfig *tls.Config, name string, opts ...Option) (*Conn, error) {
	o := options{pendingMsgs: DefaultPendingMsgs, pendingBytes: DefaultPendingBytes}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if strings.TrimSpace(url) == "" {
		return nil, errors.New("bus: connect: empty URL")
	}
	shown := redact(url)
	log := o.log.With("component", "bus", "name", name)

	natsOpts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectWait(MinReconnectDelay),
		nats.CustomReconnectDelay(backoff),
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("bus: disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("bus: reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("bus: asynchronous error", "subject", subject, "err", err)
		}),
	}
	if tlsConfig != nil {
		natsOpts = append(natsOpts, nats.Secure(tlsConfig))
	}

	var lastErr error
	refusals := 0
	for attempt := 0; ; attempt++ {
		nc, err := dial(ctx, url, natsOpts)
		if err == nil {
			log.Debug("bus: connected", "url", nc.ConnectedUrlRedacted())
			return &Conn{nc: nc, log: log, pending: [2]int{o.pendingMsgs, o.pendingBytes}}, nil
		}
		if ctx.Err() != nil {
			return nil, connectError(shown, ctx.Err(), lastErr)
		}
		if permanent(err) {
			refusals++
			if refusals >= maxRefusals {
				return nil, fmt.Errorf("bus: connect %s: %w", shown, err)
			}
		} else {
			refusals = 0
		}
		lastErr = err
		log.Debug("bus: connect failed, retrying", "url", shown, "attempt", attempt+1, "err", err)
		t := time.NewTimer(backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, connectError(shown, ctx.Err(), lastErr)
		case <-t.C:
		}
	}
}

// dial makes one pass over the servers of url. It returns when ctx is done
// even if nats.Connect has not: a late connection is then closed.
func dial(ctx context.Context, url string, natsOpts []nats.Option) (*nats.Conn, error) {
	timeout := dialTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, max(time.Until(dl), time.Millisecond))
	}
	natsOpts = append(natsOpts[:len(natsOpts):len(natsOpts)], nats.Timeout(timeout))

	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(url, natsOpts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		return r.nc, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func connectError(url string, ctxErr, last error) error {
	if last == nil {
		return fmt.Errorf("bus: connect %s: %w", url, ctxErr)
	}
	return fmt.Errorf("bus: connect %s: %w (last error: %w)", url, ctxErr, last)
}

// permanent reports errors that retrying will not fix: a certificate refused
// by either side, or a refused authorization.
func permanent(err error) bool {
	var (
		verr     *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		op       *net.OpError
		nerr     net.Error
	)
	switch {
	case errors.As(err, &verr), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		return true // we refuse the server's certificate
	case errors.As(err, &op) && op.Op == "remote error":
		return true // a TLS alert from the server: "certificate required", "bad certificate"...
	case errors.Is(err, nats.ErrTLS):
		// The server closed the connection right after the handshake: it
		// refused our certificate in its own verification. Timeouts are
		// transient.
		return !(errors.As(err, &nerr) && nerr.Timeout())
	}
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) ||
		errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted) ||
		errors.Is(err, nats.ErrClientCertOrRootCAsRequired)
}

// backoff returns the delay before attempt n (0-based): 250ms doubling to
// 10s, ±20% jitter so that replicas do not reconnect in lockstep.
func backoff(n int) time.Duration {
	d := MinReconnectDelay << min(max(n, 0), 6)
	d = min(d, MaxReconnectDelay)
	jitter := d / 5
	return d - jitter + rand.N(2*jitter+1)
}

// redact hides passwords and tokens in a (comma-separated) NATS URL.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := url.Parse(p); err == nil && u.User != nil {
			if _, hasPass := u.User.Password(); hasPass {
				p = u.Redacted()
			} else {
				u.User = url.User("xxxxx") // a bare user part is a token
				p = u.String()
			}
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// Publish sends data on subject, which must pass ValidateSubject. Delivery
// is at most once: while disconnected, messages are buffered (bounded) and
// sent on reconnect. Use Flush to wait until the server has them.
func (c *Conn) Publish(ctx context.Context, subject string, data []byte) error {
	if err := ValidateSubject(subject); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bus: publish %s: %w", subject, err)
	}
	if err := c.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("bus: publish %s: %w", subject, natsErr(err))
	}
	return nil
}

// Subscribe calls fn for each message on subject, which must pass
// ValidateFilter (wildcards allowed). Calls are sequential per subscription,
// on a goroutine of the Conn; data belongs to fn. At most the pending limits
// are buffered for a slow fn, beyond that messages are dropped and logged.
//
// When connected, Subscribe returns once the server has registered the
// interest (bounded by 5s), so a later publish by anyone is delivered.
// unsubscribe may be called more than once.
func (c *Conn) Subscribe(subject string, fn func(subject string, data []byte)) (unsubscribe func() error, err error) {
	if err := ValidateFilter(subject); err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, errors.New("bus: subscribe: nil handler")
	}
	sub, err := c.nc.Subscribe(subject, func(m *nats.Msg) { fn(m.Subject, m.Data) })
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe %s: %w", subject, natsErr(err))
	}
	if err := sub.SetPendingLimits(c.pending[0], c.pending[1]); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
	}
	if c.nc.IsConnected() {
		// Best effort: on failure the subscription is still registered
		// when the connection comes back.
		if err := c.nc.FlushTimeout(flushTimeout); err != nil {
			c.log.Debug("bus: subscribe flush", "subject", subject, "err", err)
		}
	}
	var once sync.Once
	var unsubErr error
	return func() error {
		once.Do(func() {
			err := sub.Unsubscribe()
			if err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
				unsubErr = fmt.Errorf("bus: unsubscribe %s: %w", subject, err)
			}
		})
		return unsubErr
	}, nil
}

// Flush waits until the server has processed everything published so far.
func (c *Conn) Flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, flushTimeout)
		defer cancel()
	}
	if err := c.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("bus: flush: %w", natsErr(err))
	}
	return nil
}

// Connected reports whether the Conn is connected right now (it reconnects
// by itself otherwise).
func (c *Conn) Connected() bool { return c.nc.IsConnected() }

// NATS returns the underlying nats.go connection, for what this package does
// not wrap (JetStream, request/reply). Do not close it directly.
func (c *Conn) NATS() *nats.Conn { return c.nc }

// Close closes the connection after sending what is buffered. Subscriptions
// end. Calling it again is harmless.
func (c *Conn) Close() { c.nc.Close() }

func natsErr(err error) error {
	if errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("%w (%w)", ErrClosed, err)
	}
	return err
}
