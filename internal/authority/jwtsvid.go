package authority

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/wardsec/ward/internal/store"
)

// JWT-SVIDs (SPIFFE JWT-SVID spec): ES256 tokens whose subject is a
// service's SPIFFE ID, for the audiences a workload asks for, signed with
// a key of their own (never the token service's, so that an access token
// can never pass as a JWT-SVID or the reverse).
const (
	metaJWTSVIDKey = "jwt-svid-key"
	jwtSVIDTTL     = 5 * time.Minute
	maxAudiences   = 16
)

var aadJWTSVIDKey = []byte("ward-jwt-svid-key")

type jwtSVIDSigner struct {
	mu   sync.Mutex // held while loading; the fields never change once set
	key  *ecdsa.PrivateKey
	kid  string
	jwks []byte
}

// jwtSVIDKey loads (creating it on first use) the JWT-SVID signing key; a
// failure is retried on the next call.
func (a *Authority) jwtSVIDKey(ctx context.Context) (*jwtSVIDSigner, error) {
	s := &a.jwtSigner
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key != nil {
		return s, nil
	}
	sealed, err := a.st.GetMeta(ctx, metaJWTSVIDKey)
	if errors.Is(err, store.ErrNotFound) {
		key, gerr := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if gerr != nil {
			return nil, gerr
		}
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		if sealed, err = a.kms.Encrypt(ctx, der, aadJWTSVIDKey); err != nil {
			return nil, fmt.Errorf("authority: seal JWT-SVID key: %w", err)
		}
		if err = a.st.PutMeta(ctx, metaJWTSVIDKey, sealed); err == nil {
			sealed, err = a.st.GetMeta(ctx, metaJWTSVIDKey) // another replica may have won
		}
	}
	if err != nil {
		return nil, fmt.Errorf("authority: JWT-SVID key: %w", err)
	}
	der, err := a.kms.Decrypt(ctx, sealed, aadJWTSVIDKey)
	if err != nil {
		return nil, fmt.Errorf("authority: unseal JWT-SVID key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	key, ok := k.(*ecdsa.PrivateKey)
	if err != nil || !ok {
		return nil, errors.New("authority: the JWT-SVID key is not an ECDSA key")
	}
	jwk := jose.JSONWebKey{Key: key.Public(), Algorithm: string(jose.ES256), Use: "jwt-svid"}
	tp, _ := jwk.Thumbprint(crypto.SHA256)
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
	if err != nil {
		return nil, err
	}
	s.key, s.kid, s.jwks = key, jwk.KeyID, jwks
	return s, nil
}

// GET /v1/jwt-svid/keys (public): the trust domain's JWT bundle (JWKS).
func (a *Authority) handleJWTSVIDKeys(w http.ResponseWriter, r *http.Request) error {
	s, err := a.jwtSVIDKey(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(s.jwks, '\n'))
	return nil
}

// POST /v1/agent/jwt-svid (mTLS, agents): {"service","audience":[…]} —
// a JWT-SVID of a service that has an entry for this agent's host.
func (a *Authority) handleAgentJWTSVID(w http.ResponseWriter, r *http.Request) error {
	host, err := a.agentPeer(r)
	if err != nil {
		return err
	}
	var req struct {
		Service  string   `json:"service"`
		Audience []string `json:"audience"`
	}
	if err := decodeJSON(r, &req, false); err != nil {
		return err
	}
	if len(req.Audience) == 0 || len(req.Audience) > maxAudiences {
		return errBadRequest(fmt.Sprintf("audience: 1 to %d values", maxAudiences))
	}
	for _, aud := range req.Audience {
		if aud == "" || len(aud) > 256 {
			return errBadRequest("audience values are 1 to 256 characters")
		}
	}
	es, err := a.st.ListAgentEntries(r.Context(), host)
	if err != nil {
		return err
	}
	entitled := false
	for _, e := range es {
		entitled = entitled || (e.Service == req.Service && (e.Host == "" || e.Host == host))
	}
	if !entitled {
		return errForbidden(fmt.Sprintf("no registration entry gives this agent the identity of %s", quote(req.Service)))
	}
	svc, err := a.service(r.Context(), req.Service)
	if err != nil {
		return err
	}
	if svc.RevokedAt != nil {
		return errRevoked("the service has been revoked")
	}
	s, err := a.jwtSVIDKey(r.Context())
	if err != nil {
		return err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.kid))
	if err != nil {
		return err
	}
	now := a.now()
	exp := now.Add(jwtSVIDTTL)
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{
		Subject: fmt.Sprintf("spiffe://%s/svc/%s", a.td.Name(), req.Service), Audience: jwt.Audience(req.Audience),
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(exp)}).Serialize()
	if err != nil {
		return fmt.Errorf("authority: sign JWT-SVID: %w", err)
	}
	return writeJSON(w, http.StatusCreated, map[string]any{"token": tok, "expires_at": exp.UTC()})
}
