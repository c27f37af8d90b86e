package identity_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/identity"
	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

// exampleAuthority starts an in-process stand-in for `ward authority run`
// that knows bootstrap tokens for the services web and api, and returns
// its URL and root fingerprint.
func exampleAuthority() (url, fingerprint string, stop func()) {
	fa, err := fakeauthority.Start(fakeauthority.Options{})
	if err != nil {
		log.Fatal(err)
	}
	fa.AddToken("wardbt_example_web", spiffeid.RequireFromString("spiffe://ward.test/svc/web"))
	fa.AddToken("wardbt_example_api", spiffeid.RequireFromString("spiffe://ward.test/svc/api"))
	return fa.URL(), fa.RootFingerprint(), fa.Close
}

func ExampleNew() {
	authorityURL, rootFingerprint, stop := exampleAuthority()
	defer stop()
	ctx := context.Background()

	src, err := identity.New(ctx, identity.Config{
		AuthorityURL:    authorityURL,
		BootstrapToken:  "wardbt_example_web", // os.Getenv("WARD_BOOTSTRAP_TOKEN")
		RootFingerprint: rootFingerprint,      // printed by `ward authority init`
	})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	go src.Run(ctx) // renewals, trust bundle and revocations

	fmt.Println(src.ID())
	// Output: spiffe://ward.test/svc/web
}

// A server that accepts only the api service, and api calling it.
func ExampleSource_ServerTLSConfig() {
	authorityURL, rootFingerprint, stop := exampleAuthority()
	defer stop()
	ctx := context.Background()
	newSource := func(token string) *identity.Source {
		src, err := identity.New(ctx, identity.Config{AuthorityURL: authorityURL, BootstrapToken: token, RootFingerprint: rootFingerprint})
		if err != nil {
			log.Fatal(err)
		}
		go src.Run(ctx)
		return src
	}
	web := newSource("wardbt_example_web")
	defer web.Close()
	api := newSource("wardbt_example_api")
	defer api.Close()

	// Server side (service web).
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		peer, _ := identity.PeerIDFromContext(r.Context())
		fmt.Fprintf(w, "hello %s", peer)
	})
	srv := &http.Server{
		Handler:   web.Middleware(mux),
		TLSConfig: web.ServerTLSConfig(identity.AuthorizeID(api.ID())),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	// Client side (service api).
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: api.ClientTLSConfig(identity.AuthorizeID(web.ID())),
	}}
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: hello spiffe://ward.test/svc/api
}

func ExampleAuthorizeID() {
	orders := spiffeid.RequireFromString("spiffe://ward.test/svc/orders")
	authorize := identity.AuthorizeID(orders)

	fmt.Println(authorize(orders) == nil)
	err := authorize(spiffeid.RequireFromString("spiffe://ward.test/svc/intruder"))
	fmt.Println(errors.Is(err, identity.ErrNotAuthorized))
	// Output:
	// true
	// true
}

// What `ward svid fetch` does.
func ExampleFetch() {
	authorityURL, rootFingerprint, stop := exampleAuthority()
	defer stop()
	dir, err := os.MkdirTemp("", "ward-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	svid, bundle, err := identity.Fetch(context.Background(), identity.Config{
		AuthorityURL:    authorityURL,
		BootstrapToken:  "wardbt_example_api",
		RootFingerprint: rootFingerprint,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := identity.WriteDir(filepath.Join(dir, "id"), svid, bundle); err != nil {
		log.Fatal(err)
	}
	loaded, _, err := identity.LoadDir(filepath.Join(dir, "id"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(loaded.ID)
	// Output: spiffe://ward.test/svc/api
}

// Following the authority's signed watch stream, e.g. to learn that the
// service's access list changed (what guard.NewForSource does).
func ExampleSource_Subscribe() {
	authorityURL, rootFingerprint, stop := exampleAuthority()
	defer stop()
	ctx := context.Background()
	src, err := identity.New(ctx, identity.Config{AuthorityURL: authorityURL, BootstrapToken: "wardbt_example_web", RootFingerprint: rootFingerprint})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	kinds := make(chan string, 16)
	unsubscribe := src.Subscribe(func(kind string, payload []byte) {
		select { // never block the watch goroutine
		case kinds <- kind:
		default:
		}
	})
	defer unsubscribe()
	go src.Run(ctx)

	fmt.Println(<-kinds) // the first payload of every stream
	// Output: snapshot
}
