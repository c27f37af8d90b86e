// Package credential verifies the credentials ward's token service issues,
// for the gateway and for services: JWT access tokens offline (signature
// against the authority's JWKS, cached and refetched at a bounded rate on
// an unknown kid; issuer, audience, lifetime; the certificate binding of
// RFC 8705 against the caller's TLS certificate), API keys and anything
// else online through introspection (RFC 7662), and revocations pushed on
// the watch stream, which it remembers until the revoked tokens would
// have expired anyway.
//
//	v, err := credential.New(credential.Config{
//		Issuer:     "https://authority.example:8443",
//		HTTPClient: httpClientTrustingTheBundle,
//		Audience:   "orders",
//		Events:     src, // an *identity.Source: revocations within a second
//	})
//	claims, err := v.VerifyAccessToken(ctx, bearer, r.TLS)
package credential
