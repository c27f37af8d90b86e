package guard_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wardsec/ward/guard"
)

// unreachable is a Fetcher whose authority is down.
type unreachable struct{}

func (unreachable) FetchAccessList(context.Context) ([]byte, error) {
	return nil, errors.New("connection refused")
}
func (unreachable) FetchKeys(context.Context) ([]byte, error) {
	return nil, errors.New("connection refused")
}

// A guard fails closed: with no verified list (first start, authority
// down, no cache) every caller is refused. In a service, build the guard
// with NewForSource and run it; see the package documentation.
func ExampleGuard_Check() {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	g, err := guard.New(context.Background(), guard.Config{
		Provider:       spiffeid.RequireFromPath(td, "/svc/orders"),
		Fetcher:        unreachable{},
		Bundle:         x509bundle.New(td),
		RefreshTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	caller := spiffeid.RequireFromPath(td, "/svc/web")
	err = g.Check(context.Background(), caller, "orders", "read")
	fmt.Println(errors.Is(err, guard.ErrNoAccessList))
	// Output: true
}
