// Package identity gives a Go service its ward identity: a short-lived
// SPIFFE X.509 certificate (X509-SVID) obtained from the ward authority,
// renewed automatically, and TLS configs that use it for mutual TLS with
// other services.
//
// What a service writes:
//
//	src, err := identity.New(ctx, identity.Config{
//		AuthorityURL:   "https://authority.internal:8443",
//		BootstrapToken: os.Getenv("WARD_BOOTSTRAP_TOKEN"),
//		BundleFile:     "/etc/ward/bundle.pem",
//		Dir:            "/var/lib/ward/identity",
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer src.Close()
//	go src.Run(ctx)
//
//	orders := spiffeid.RequireFromString("spiffe://ward.test/svc/orders")
//	srv := &http.Server{Addr: ":8443", Handler: src.Middleware(mux),
//		TLSConfig: src.ServerTLSConfig(identity.AuthorizeID(orders))}
//	go srv.ListenAndServeTLS("", "")
//
//	client := &http.Client{Transport: &http.Transport{
//		TLSClientConfig: src.ClientTLSConfig(identity.AuthorizeMemberOf(orders.TrustDomain()))}}
//
// # How it works
//
// New authenticates the authority with BundleFile (PEM roots) or
// RootFingerprint (the SHA-256 of one root, printed by `ward authority
// init`), generates an ECDSA P-256 key locally and exchanges a CSR and
// the bootstrap token for an SVID (POST /v1/svid). The private key never
// leaves the process (or Dir, mode 0600).
//
// Run renews the SVID over mutual TLS at about half its lifetime and
// keeps the last good one while the authority is unreachable. It follows
// the authority's watch stream, whose events are signed with the
// authority's Ed25519 control-plane key and carry monotonic versions, so
// forged and replayed events are ignored. Trust bundle changes and
// revocations arrive within milliseconds; revocation checks during the
// handshake, in PeerID and in Middleware are lookups in memory, never
// network calls. Subscribe passes the verified stream on to other
// components, such as the guard package, which learns from it that its
// access list changed.
//
// Certificate rotation is zero-downtime: the TLS configs read the current
// certificate and bundle through atomic pointers on every handshake, so
// new connections use the new SVID while established ones keep theirs.
package identity
