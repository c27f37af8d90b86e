package guard

import (
	"context"
	"errors"

	"github.com/wardsec/ward/identity"
)

// NewForSource wires a Guard to an identity.Source: the list is src's
// service's own, key certificates verify against src's bundle, changes
// arrive on src's watch stream, and lists are fetched over mTLS with src's
// SVID from the authority at authorityURL. Fields of cfg other than
// Provider, Fetcher, Bundle and Events are used as given.
func NewForSource(ctx context.Context, src *identity.Source, authorityURL string, cfg Config) (*Guard, error) {
	if src == nil {
		return nil, errors.New("guard: NewForSource needs an identity.Source")
	}
	client, err := NewClient(authorityURL, src.ClientTLSConfig(identity.AuthorizeID(AuthorityID(src.ID().TrustDomain()))))
	if err != nil {
		return nil, err
	}
	cfg.Provider = src.ID()
	cfg.Fetcher = client
	cfg.Bundle = src
	cfg.Events = src
	return New(ctx, cfg)
}
