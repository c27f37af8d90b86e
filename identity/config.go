package identity

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// Config configures a Source. The zero value of every optional field
// selects the documented default.
type Config struct {
	// AuthorityURL is the base URL of the ward authority,
	// "https://host:port". Required; only https is accepted.
	AuthorityURL string

	// BootstrapToken ("wardbt_...") is used to obtain an SVID when no
	// valid one is on disk or in memory, and again when the SVID expired
	// or was refused by the authority. Optional when Dir holds a valid
	// SVID. Never logged.
	BootstrapToken string

	// BundleFile is a PEM file of root certificates trusted to
	// authenticate the authority on first contact.
	BundleFile string

	// RootFingerprint is the hex SHA-256 of one root certificate (colons
	// and case are ignored), as printed by `ward authority init`. The
	// Source fetches GET /v1/bundle and accepts it only when the
	// authority's certificate chains to the root with this fingerprint.
	// Used when BundleFile is empty. One of BundleFile, RootFingerprint
	// or a Dir holding a bundle is required.
	RootFingerprint string

	// WorkloadAPIAddr, if set ("unix:///run/ward/agent.sock", as in
	// SPIFFE_ENDPOINT_SOCKET), obtains the SVID and the first trust bundle
	// from the node agent's SPIFFE Workload API instead of a bootstrap
	// token: the agent renews the SVID and pushes each renewal, which
	// the Source follows. The watch stream still comes from the authority.
	WorkloadAPIAddr string

	// Dir is optional. When set, svid.pem, svid.key and bundle.pem are
	// loaded from it at start and written back (atomic rename, key mode
	// 0600) after every renewal and bundle change.
	Dir string

	// Logger receives operational logs. nil discards them. Secrets are
	// never logged; certificates are identified by serial number.
	Logger *slog.Logger

	// Watch subscribes to the authority's watch stream for trust bundle
	// updates and revocations. nil means true.
	Watch *bool

	// Now is the clock used for certificate validity checks. nil means
	// time.Now.
	Now func() time.Time
}

// Limits and timings of the wire protocol.
const (
	maxResponseBytes = 1 << 20 // authority JSON responses and OCSP responses
	maxLineBytes     = 1 << 20 // one watch stream line
	maxRoots         = 64      // roots accepted in one bundle
	maxChainCerts    = 8       // certificates accepted in one chain
	requestTimeout   = 30 * time.Second
	dialTimeout      = 10 * time.Second
)

// tuning holds the timings of the background loops. Tests shorten them.
type tuning struct {
	backoffMin       time.Duration // first retry delay after a failure
	backoffMax       time.Duration // retry delay cap
	minRenewDelay    time.Duration // floor of a scheduled renewal
	watchIdle        time.Duration // no line for this long: stream is dead (3 heartbeats)
	signerRefresh    time.Duration // minimum spacing of signing-cert refreshes after a bad signature
	stapleRetry      time.Duration // retry delay of a failed OCSP fetch
	stapleDefault    time.Duration // refresh delay when an OCSP response has no NextUpdate
	watchMinInterval time.Duration // minimum spacing of stream starts after a healthy stream
	reconnectJitter  time.Duration // delay spread of a reconnect after a healthy stream ended
}

func defaultTuning() tuning {
	return tuning{
		backoffMin:       time.Second,
		backoffMax:       30 * time.Second,
		minRenewDelay:    100 * time.Millisecond,
		watchIdle:        45 * time.Second,
		signerRefresh:    2 * time.Second,
		stapleRetry:      10 * time.Second,
		stapleDefault:    time.Hour,
		watchMinInterval: time.Second,
		reconnectJitter:  100 * time.Millisecond,
	}
}

// normalized returns a copy of the config with its authority URL checked
// and cleaned up.
func (c Config) normalized() (Config, error) {
	if c.AuthorityURL == "" {
		return c, fmt.Errorf("identity: Config.AuthorityURL is required")
	}
	u, err := url.Parse(c.AuthorityURL)
	if err != nil {
		return c, fmt.Errorf("identity: Config.AuthorityURL: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return c, fmt.Errorf("identity: Config.AuthorityURL must be https://host[:port], got scheme %q", u.Scheme)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return c, fmt.Errorf("identity: Config.AuthorityURL must not carry user info, query or fragment")
	}
	c.AuthorityURL = strings.TrimRight(u.String(), "/")
	if c.RootFingerprint != "" {
		if _, err := parseFingerprint(c.RootFingerprint); err != nil {
			return c, err
		}
	}
	return c, nil
}

// checkTrustSource fails when the config gives no way to authenticate the
// authority on first contact.
func (c Config) checkTrustSource() error {
	if c.BundleFile == "" && c.RootFingerprint == "" && c.Dir == "" && c.WorkloadAPIAddr == "" {
		return fmt.Errorf("identity: one of Config.BundleFile, Config.RootFingerprint or Config.Dir is required to trust the authority")
	}
	return nil
}

func (c Config) watchEnabled() bool { return c.Watch == nil || *c.Watch }

// parseFingerprint decodes a hex SHA-256 fingerprint, ignoring colons,
// spaces and case, and an optional "sha256:" prefix.
func parseFingerprint(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:")
	s = strings.NewReplacer(":", "", " ", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("identity: Config.RootFingerprint must be a hex SHA-256 (64 hex digits)")
	}
	return b, nil
}
