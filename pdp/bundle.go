package pdp

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
)

const (
	// JWSType is the "typ" header of every policy bundle JWS.
	JWSType = "ward-policy+jws"
	// MediaType is the Content-Type of GET /v1/policy/bundle.
	MediaType = "application/jose"
	// MaxBundleSize bounds a compact bundle JWS.
	MaxBundleSize = 8 << 20
	// MaxPolicyBytes bounds the Cedar text of one version (all files).
	MaxPolicyBytes = 2 << 20
	// MaxFiles bounds the policy files of one version.
	MaxFiles = 256
	// EdgeDomain is the gateway's policy domain; every other domain is a
	// service name.
	EdgeDomain = "edge"
)

// Errors callers branch on (errors.Is).
var (
	// ErrMalformed: a bundle or a policy file is not well formed.
	ErrMalformed = errors.New("pdp: malformed")
	// ErrForged: a bundle's signature, key or issuer is not the authority's.
	ErrForged = errors.New("pdp: bundle not signed by the authority")
	// ErrWrongDomain: a bundle of another domain.
	ErrWrongDomain = errors.New("pdp: bundle of another domain")
	// ErrStale: a bundle older than the one applied (a rollback attack).
	ErrStale = errors.New("pdp: bundle older than the applied one")
)

// domainRE is the shape of a policy domain: a service name or "edge".
var domainRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// fileRE is the shape of a policy file name.
var fileRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.cedar$`)

// ValidDomain reports whether d is a well-formed domain name.
func ValidDomain(d string) bool { return domainRE.MatchString(d) }

// File is one Cedar policy file of a version.
type File struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

// Content is one policy version: its policy files and optional schema.
type Content struct {
	Version  int64  `json:"version"`
	Policies []File `json:"policies"`
	Schema   string `json:"schema,omitempty"`
	// Digest is Digest(Policies, Schema): what `ward policy history` shows.
	Digest string `json:"digest"`
}

// Bundle is the signed payload of GET /v1/policy/bundle: a domain's
// active version and, when one is being tried, a shadow candidate that is
// evaluated beside it but never enforced.
type Bundle struct {
	Issuer string `json:"iss"`
	Domain string `json:"domain"`
	// Revision orders bundles of a domain: it grows with every push,
	// shadow pushes included. A PDP never applies a lower one.
	Revision int64    `json:"revision"`
	IssuedAt int64    `json:"iat"`
	Active   Content  `json:"active"`
	Shadow   *Content `json:"shadow,omitempty"`
}

// Digest is the SHA-256 (hex) of a version's files, sorted by name, and
// schema, each length-prefixed so that no two contents share a digest.
func Digest(files []File, schema string) string {
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	h := sha256.New()
	put := func(s string) { fmt.Fprintf(h, "%d:%s\n", len(s), s) }
	for _, f := range sorted {
		put(f.Name)
		put(f.Text)
	}
	put(schema)
	return hex.EncodeToString(h.Sum(nil))
}

// CheckFiles validates the shape of a version's files: count, names,
// sizes, no duplicates.
func CheckFiles(files []File) error {
	if len(files) > MaxFiles {
		return fmt.Errorf("%w: %d policy files, at most %d", ErrMalformed, len(files), MaxFiles)
	}
	total := 0
	seen := map[string]bool{}
	for _, f := range files {
		if !fileRE.MatchString(f.Name) {
			return fmt.Errorf("%w: policy file name %q: want letters, digits, . _ - ending in .cedar", ErrMalformed, clip(f.Name))
		}
		if seen[f.Name] {
			return fmt.Errorf("%w: policy file %s appears twice", ErrMalformed, f.Name)
		}
		seen[f.Name] = true
		total += len(f.Text)
		if total > MaxPolicyBytes {
			return fmt.Errorf("%w: policies are larger than %d bytes", ErrMalformed, MaxPolicyBytes)
		}
	}
	return nil
}

// Compile parses policy files into named policies. A policy's ID is its
// @id("...") annotation, else "<file>#<n>" (n counts from 0 in the file).
// A syntax error names the file, line and column.
func Compile(files []File) ([]Policy, error) {
	if err := CheckFiles(files); err != nil {
		return nil, err
	}
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var out []Policy
	ids := map[cedar.PolicyID]string{}
	for _, f := range sorted {
		list, err := cedar.NewPolicyListFromBytes(f.Name, []byte(f.Text))
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "parser error: ")
			return nil, fmt.Errorf("%w: %s", ErrMalformed, strings.Replace(msg, "<input>", f.Name, 1))
		}
		for n, p := range list {
			id := cedar.PolicyID(fmt.Sprintf("%s#%d", f.Name, n))
			if v, ok := p.Annotations()["id"]; ok {
				if v == "" {
					return nil, fmt.Errorf("%w: %s: policy %d has an empty @id", ErrMalformed, f.Name, n)
				}
				id = cedar.PolicyID(v)
			}
			if where, dup := ids[id]; dup {
				pos := p.Position()
				return nil, fmt.Errorf("%w: %s:%d:%d: policy ID %q is already used in %s", ErrMalformed, f.Name, pos.Line, pos.Column, clip(string(id)), where)
			}
			pos := p.Position()
			ids[id] = fmt.Sprintf("%s:%d", f.Name, pos.Line)
			out = append(out, Policy{ID: id, Policy: p})
		}
	}
	return out, nil
}

// ParseBundle verifies a compact bundle JWS with the authority's keys and
// decodes it for domain: signed by a trusted key with typ JWSType, issued
// by the authority of the keys' trust domain, for domain, with sound
// versions and files. It does not compile the policies (Set does).
func ParseBundle(jws []byte, keys *guard.KeySet, domain string) (*Bundle, error) {
	payload, err := keys.VerifyCompact(jws, JWSType, MaxBundleSize)
	if err != nil {
		if errors.Is(err, guard.ErrMalformed) {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrForged, err)
	}
	b, err := decodeBundle(payload)
	if err != nil {
		return nil, err
	}
	if want := guard.AuthorityID(keys.TrustDomain()); b.Issuer != want.String() {
		return nil, fmt.Errorf("%w: issuer %q, want %s", ErrForged, clip(b.Issuer), want)
	}
	if b.Domain != domain {
		return nil, fmt.Errorf("%w: bundle of %q, this is %q", ErrWrongDomain, clip(b.Domain), domain)
	}
	return b, nil
}

// decodeBundle decodes and checks a bundle payload strictly.
func decodeBundle(payload []byte) (*Bundle, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var b Bundle
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return nil, fmt.Errorf("%w: payload: trailing data", ErrMalformed)
	}
	if _, err := spiffeid.FromString(b.Issuer); err != nil {
		return nil, fmt.Errorf("%w: iss: %v", ErrMalformed, err)
	}
	if !ValidDomain(b.Domain) {
		return nil, fmt.Errorf("%w: domain %q", ErrMalformed, clip(b.Domain))
	}
	if b.Revision < 1 || b.IssuedAt <= 0 {
		return nil, fmt.Errorf("%w: revision %d, iat %d", ErrMalformed, b.Revision, b.IssuedAt)
	}
	for _, c := range []*Content{&b.Active, b.Shadow} {
		if c == nil {
			continue
		}
		if c.Version < 1 || c.Version > b.Revision {
			return nil, fmt.Errorf("%w: version %d of revision %d", ErrMalformed, c.Version, b.Revision)
		}
		if err := CheckFiles(c.Policies); err != nil {
			return nil, err
		}
		if d := Digest(c.Policies, c.Schema); d != c.Digest {
			return nil, fmt.Errorf("%w: version %d: digest does not match its content", ErrMalformed, c.Version)
		}
	}
	return &b, nil
}

// clip shortens untrusted text quoted in an error.
func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
