package identity

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"slices"
	"sync"
)

// subscriber is one registration of Subscribe. Its identity (the pointer)
// is what unsubscribe removes.
type subscriber struct {
	fn func(kind string, payload []byte)
}

// Subscribe registers fn to receive every verified watch-stream payload
// (snapshot, revocation, bundle, and kinds identity does not know, e.g.
// "accesslist"), in stream order, after identity applied it. It is how
// other parts of the SDK (the guard's access list) follow the same signed
// stream without a second connection to the authority.
//
// Only payloads whose Ed25519 signature verified with the authority's
// control-plane key reach fn. Events of the kinds identity knows are
// passed on only when they were applied (a rollback or a malformed event
// is dropped); the synonym "hello" is passed on as "snapshot". Events of
// other kinds are passed on as they are: identity does not check their
// versions, that is the subscriber's business. Heartbeats are not passed
// on.
//
// fn runs on the watch goroutine and must not block: hand slow work to
// another goroutine. payload is a copy that fn owns. unsubscribe is
// idempotent; after it returns fn is not called again, except for a call
// already in progress.
func (s *Source) Subscribe(fn func(kind string, payload []byte)) (unsubscribe func()) {
	if fn == nil {
		return func() {}
	}
	sub := &subscriber{fn: fn}
	s.subMu.Lock()
	subs := append(slices.Clone(s.loadSubs()), sub)
	s.subs.Store(&subs)
	s.subMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.subMu.Lock()
			defer s.subMu.Unlock()
			subs := slices.DeleteFunc(slices.Clone(s.loadSubs()), func(x *subscriber) bool { return x == sub })
			s.subs.Store(&subs)
		})
	}
}

// AuthorityURL returns the authority base URL the Source talks to:
// Config.AuthorityURL as validated by New, without a trailing slash.
func (s *Source) AuthorityURL() string { return s.cfg.AuthorityURL }

// loadSubs returns the current subscribers; the slice is never modified.
func (s *Source) loadSubs() []*subscriber {
	if p := s.subs.Load(); p != nil {
		return *p
	}
	return nil
}

// publish passes a verified, applied payload to the subscribers.
func (s *Source) publish(kind string, payload []byte) {
	for _, sub := range s.loadSubs() {
		sub.fn(kind, slices.Clone(payload))
	}
}

// FollowSigner renews the SVID at once (RenewSoon) when a "bundle" watch
// event shows the authority signing with a certificate from another
// intermediate than the one that issued this SVID: a CA rotation activated
// a new one, and the old hierarchy can retire only when nothing live
// chains to it. It is meant for ward's own components, whose SVIDs come
// from the authority's own intermediate; it reports whether it renewed.
func (s *Source) FollowSigner(kind string, payload []byte) bool {
	if kind != kindBundle || len(payload) > 1<<20 {
		return false
	}
	var p struct {
		SigningCertPEM string `json:"signing_cert_pem"`
	}
	if json.Unmarshal(payload, &p) != nil || p.SigningCertPEM == "" {
		return false
	}
	block, _ := pem.Decode([]byte(p.SigningCertPEM))
	if block == nil {
		return false
	}
	signing, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false
	}
	if own := s.SVID().Certificates[0]; !bytes.Equal(own.AuthorityKeyId, signing.AuthorityKeyId) {
		s.log.Info("identity: the authority moved to another intermediate; renewing the SVID")
		s.RenewSoon()
		return true
	}
	return false
}
