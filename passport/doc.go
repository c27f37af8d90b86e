// Package passport carries the end user inside the mesh. The edge gateway
// authenticates an external credential (API key, OAuth or OIDC token,
// partner certificate) and, for every request it forwards, mints a
// passport: a compact JWS (EdDSA, typ ward-passport+jwt) valid for at
// most 60 seconds, with the subject, the original issuer, tenant, scopes,
// roles, client, authentication method and time, a fresh jti, the
// correlation ID, the trust domain as audience and a fingerprint of the
// external credential. It travels in the Ward-Passport header; the
// external credential never does.
//
// A service verifies passports with the keys the gateways registered with
// the authority (GET /v1/passport/keys, pushed on the watch stream):
//
//	v, _ := passport.NewForSource(src, passport.Config{})   // src: *identity.Source
//	p, _ := pep.New(pep.Config{Guard: g, Routes: routes, Passports: v})
//	// in a handler behind p.Middleware:
//	claims, ok := passport.FromContext(r.Context())
//	// calling a downstream service with the same passport:
//	hc := passport.Client(mtlsClient)
//	req, _ := http.NewRequestWithContext(r.Context(), "GET", url, nil)
//
// Verification checks the signature against a registered key, aud, exp
// (5 s skew), iat and the 60 s bound; verified passports are cached by
// a keyed 64-bit hash of their bytes (compared in full on a hit) until
// they expire, so a repeated passport
// costs a map lookup. Only the gateway holds signing keys (Signer): a
// service that can verify can never mint.
package passport
