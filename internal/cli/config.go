package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxConfigSize bounds the YAML config file.
const maxConfigSize = 1 << 20

// Config is ward's server configuration, read from a YAML file (--config or
// WARD_CONFIG) and then overridden by WARD_* environment variables. Every
// field documents its default; the zero value means "use the default".
type Config struct {
	// TrustDomain is the SPIFFE trust domain chosen at init (default ward.test).
	// Env WARD_TRUST_DOMAIN.
	TrustDomain string `yaml:"trust_domain"`
	// DataDir holds the SQLite database, the KEK file and dev.env (default ./ward-data).
	// Env WARD_DATA_DIR.
	DataDir string `yaml:"data_dir"`
	Store   struct {
		// DSN selects the store: a postgres:// URL, or a SQLite file path
		// (default <data_dir>/ward.db). Env WARD_STORE_DSN.
		DSN string `yaml:"dsn"`
	} `yaml:"store"`
	KMS struct {
		// KEKFile is a file with the 32-byte key-encryption key (default
		// <data_dir>/kek; created at init). Env WARD_KEK_FILE.
		KEKFile string `yaml:"kek_file"`
		// PassphraseEnv names an environment variable holding a passphrase
		// to derive the KEK from (argon2id) instead of a file. Env WARD_KEK_PASSPHRASE_ENV.
		PassphraseEnv string `yaml:"passphrase_env"`
	} `yaml:"kms"`
	Authority struct {
		// Listen is the HTTPS listen address (default 127.0.0.1:8443). Env WARD_AUTHORITY_LISTEN.
		Listen string `yaml:"listen"`
		// PublicURL is how workloads reach the authority; it is written into
		// certificates (OCSP and CRL URLs) (default https://<listen>). Env WARD_AUTHORITY_PUBLIC_URL.
		PublicURL string `yaml:"public_url"`
		// Hostnames are extra DNS names or IPs for the serving certificate.
		Hostnames []string `yaml:"hostnames"`
		// SVIDTTL overrides the SVID lifetime per level (defaults L1 1h, L2 1h, L3 15m; at most 24h).
		SVIDTTL map[string]string `yaml:"svid_ttl"`
		// AuthFailureBurst is how many failed authentications a client
		// address may make at once before it gets 429s (refilling at a
		// tenth per second); 0 means 50, negative turns the limit off
		// (behind a load balancer that hides client addresses).
		AuthFailureBurst int `yaml:"auth_failure_burst"`
	} `yaml:"authority"`
	Bus struct {
		// URL of an external NATS server (nats:// or tls://). Empty runs an
		// embedded server on a loopback port. Env WARD_BUS_URL.
		URL string `yaml:"url"`
		// CAFile is the PEM bundle that verifies an external NATS server
		// (default: the authority's own trust bundle). Env WARD_BUS_CA_FILE.
		CAFile string `yaml:"ca_file"`
	} `yaml:"bus"`
	// Gateway configures ward gateway run (and the gateway of ward dev).
	Gateway GatewayConfig `yaml:"gateway"`
	// Audit configures the audit pipeline (agent, collector, ward audit).
	Audit AuditConfig `yaml:"audit"`
	Log   struct {
		// Level is debug, info, warn or error (default info). Env WARD_LOG_LEVEL.
		Level string `yaml:"level"`
		// Format is json or text (default json). Env WARD_LOG_FORMAT.
		Format string `yaml:"format"`
	} `yaml:"log"`
}

// LoadConfig reads path (may be empty), applies environment overrides from
// getenv and fills in defaults.
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	var c Config
	if path != "" {
		data, err := readBounded(path, maxConfigSize)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := parseConfig(data, &c); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	for env, dst := range map[string]*string{
		"WARD_TRUST_DOMAIN":         &c.TrustDomain,
		"WARD_DATA_DIR":             &c.DataDir,
		"WARD_STORE_DSN":            &c.Store.DSN,
		"WARD_KEK_FILE":             &c.KMS.KEKFile,
		"WARD_KEK_PASSPHRASE_ENV":   &c.KMS.PassphraseEnv,
		"WARD_AUTHORITY_LISTEN":     &c.Authority.Listen,
		"WARD_AUTHORITY_PUBLIC_URL": &c.Authority.PublicURL,
		"WARD_BUS_URL":              &c.Bus.URL,
		"WARD_BUS_CA_FILE":          &c.Bus.CAFile,
		"WARD_LOG_LEVEL":            &c.Log.Level,
		"WARD_LOG_FORMAT":           &c.Log.Format,
		"WARD_GATEWAY_LISTEN":       &c.Gateway.Listen,
		"WARD_GATEWAY_TLS_CERT":     &c.Gateway.TLSCert,
		"WARD_GATEWAY_TLS_KEY":      &c.Gateway.TLSKey,
		"WARD_GATEWAY_PASSPORT_TTL": &c.Gateway.PassportTTL,
		"WARD_AUDIT_DIR":            &c.Audit.Dir,
		"WARD_AUDIT_DB":             &c.Audit.DB,
		"WARD_AUTHORITY":            &c.Gateway.AuthorityURL,
		"WARD_CA_BUNDLE":            &c.Gateway.CABundle,
	} {
		if v := getenv(env); v != "" {
			*dst = v
		}
	}
	c.defaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// parseConfig decodes YAML strictly: unknown fields are errors, so a typo
// does not silently fall back to a default.
func parseConfig(data []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // an empty file is a valid config
		return err
	}
	return nil
}

func (c *Config) defaults() {
	if c.TrustDomain == "" {
		c.TrustDomain = "ward.test"
	}
	if c.DataDir == "" {
		c.DataDir = "ward-data"
	}
	if c.Store.DSN == "" {
		c.Store.DSN = filepath.Join(c.DataDir, "ward.db")
	}
	if c.KMS.KEKFile == "" && c.KMS.PassphraseEnv == "" {
		c.KMS.KEKFile = filepath.Join(c.DataDir, "kek")
	}
	if c.Authority.Listen == "" {
		c.Authority.Listen = "127.0.0.1:8443"
	}
	if c.Authority.PublicURL == "" {
		c.Authority.PublicURL = "https://" + c.Authority.Listen
	}
	c.Gateway.defaults(c)
	c.Audit.defaults(c)
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
}

func (c *Config) validate() error {
	if !strings.HasPrefix(c.Authority.PublicURL, "https://") {
		return fmt.Errorf("config: authority.public_url %q must start with https://", c.Authority.PublicURL)
	}
	if c.KMS.KEKFile != "" && c.KMS.PassphraseEnv != "" {
		return errors.New("config: set kms.kek_file or kms.passphrase_env, not both")
	}
	if _, err := c.svidTTLs(); err != nil {
		return err
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		return fmt.Errorf("config: log.format %q must be json or text", c.Log.Format)
	}
	return nil
}

// svidTTLs parses the per-level lifetime overrides.
func (c *Config) svidTTLs() (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(c.Authority.SVIDTTL))
	for level, s := range c.Authority.SVIDTTL {
		switch level {
		case "L1", "L2", "L3":
		default:
			return nil, fmt.Errorf("config: authority.svid_ttl: unknown level %q (L1, L2 or L3)", level)
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > 24*time.Hour {
			return nil, fmt.Errorf("config: authority.svid_ttl.%s: %q must be a duration between 1s and 24h", level, s)
		}
		out[level] = d
	}
	return out, nil
}

// readBounded reads at most limit bytes of path, failing if it is larger.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}
